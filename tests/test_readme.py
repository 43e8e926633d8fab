"""The README as a new user reads it: every Python block runs as pasted in a fresh interpreter from
the repository root and prints what its ``# ...`` comments say, and the create_model signature it
shows is the code's."""
import inspect
import os
import re
import subprocess
import sys

import pytest

from bl_net_tf import create_model

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
README = open(os.path.join(REPO, "README.md"), encoding="utf-8").read()
BLOCKS = re.findall(r"```python\n(.*?)```", README, flags=re.S)


def expected_output(code: str) -> list:
    """The ``# ...`` comment lines right after a ``print(...)`` line: what the block prints."""
    expected, after_print = [], False
    for line in code.splitlines():
        if after_print and line.startswith("# "):
            expected.append(line[2:])
            continue
        after_print = line.startswith("print(")
    return expected


def test_the_readme_has_its_python_blocks():
    assert len(BLOCKS) >= 3 and all(expected_output(code) for code in BLOCKS)


@pytest.mark.parametrize("code", BLOCKS, ids=[f"block{i + 1}" for i in range(len(BLOCKS))])
def test_python_block_runs_as_pasted(code):
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO, env=env, capture_output=True, text=True,
                            timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    printed = result.stdout.splitlines()
    for line in expected_output(code):
        assert line in printed, (line, printed)


def test_the_signature_shown_is_create_models():
    shown, = re.findall(r"`(create_model\(arch, \*.*?\))`:", README, flags=re.S)
    signature = inspect.signature(create_model)
    bare = signature.replace(parameters=[p.replace(annotation=p.empty) for p in signature.parameters.values()],
                             return_annotation=signature.empty)
    assert " ".join(shown.split()).replace('"', "'") == f"create_model{bare}"
