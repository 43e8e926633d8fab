"""What the ``python -m bl_net_tf.export`` and ``python -m bl_net_tf.convert_pytorch`` commands
share: errors are one line on stderr and a non-zero exit status, never a traceback."""
from __future__ import annotations

import argparse
import sys


class ArgumentParser(argparse.ArgumentParser):
    """argparse with a one-line usage error (exit status 2)."""

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message}\n")


def run(prog: str, main, argv) -> int:
    """Runs ``main(argv)``; an expected failure (bad input, missing file, missing optional
    dependency) becomes ``prog: error: <first line>`` on stderr and exit status 1."""
    try:
        main(argv)
    except (ValueError, OSError, ImportError) as error:
        lines = str(error).strip().splitlines() or [type(error).__name__]
        print(f"{prog}: error: {lines[0]}", file=sys.stderr)
        return 1
    return 0
