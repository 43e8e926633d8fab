#!/usr/bin/env bash
# Installs bl_net_tf with its Tensorpack extra, plus the cuDNN that TF 2.21's XLA needs, into the
# python first on PATH. The one install recipe of the image: docker/Dockerfile RUNs it as root in
# tensorflow/tensorflow:2.21.0-gpu, and .ci/docker_check.sh runs it in a fresh venv, so CI
# exercises the same steps without a Docker engine. Safe to run again (pip leaves what is
# satisfied alone). Versions live in docker/constraints.txt.
#
# Usage: docker/install.sh PROJECT_DIR
#   BL_NET_TF_CPU_ONLY=1  skip installing the GPU-only cuDNN wheel (~800 MB); its pin is still
#                         looked up on the index and checked against tensorflow[and-cuda].
#   PYTHON=/path/python   use this interpreter instead of the first python3 on PATH.
set -euo pipefail

if [[ $# -ne 1 ]]; then
  echo "usage: $0 PROJECT_DIR" >&2
  exit 2
fi
project_dir="$(cd "$1" && pwd)"
constraints="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/constraints.txt"
python_bin="${PYTHON:-$(command -v python3 || command -v python)}"
cpu_only="${BL_NET_TF_CPU_ONLY:-0}"

cudnn_pin="$(sed -n 's/^nvidia-cudnn-cu12==//p' "${constraints}")"
if [[ -z "${cudnn_pin}" ]]; then
  echo "install.sh: no nvidia-cudnn-cu12==VERSION line in ${constraints}" >&2
  exit 1
fi

pip_args=(--no-cache-dir --constraint "${constraints}")
# The image installs into the base image's system python. Should that python be marked
# externally managed (PEP 668), pip refuses; inside a container that is the only python, so
# allow it there. Never in a venv.
if "${python_bin}" - <<'EOF'
import os, sys, sysconfig
in_venv = sys.prefix != sys.base_prefix
marker = os.path.join(sysconfig.get_path("stdlib"), "EXTERNALLY-MANAGED")
sys.exit(0 if not in_venv and os.path.exists(marker) else 1)
EOF
then
  pip_args+=(--break-system-packages)
fi

# setuptools builds inside the project dir (build/, *.egg-info/). Remove what this run creates
# there, so that a shared checkout is left as it was found and the image keeps no build copies.
build_outputs() {
  compgen -G "${project_dir}/build" || true
  compgen -G "${project_dir}/*.egg-info" || true
}
mapfile -t outputs_before < <(build_outputs)
remove_new_build_outputs() {
  local path
  while IFS= read -r path; do
    [[ " ${outputs_before[*]} " == *" ${path} "* ]] || rm -rf "${path}"
  done < <(build_outputs)
}
trap remove_new_build_outputs EXIT

echo "install.sh: python ${python_bin} ($("${python_bin}" -c 'import sys; print(sys.version.split()[0], sys.prefix)'))"
echo "install.sh: installing ${project_dir}[tensorpack] with ${constraints}"
"${python_bin}" -m pip install "${pip_args[@]}" "${project_dir}[tensorpack]"

if [[ "${cpu_only}" == "1" ]]; then
  # pip install --dry-run would still download the wheel; the index listing only names the
  # versions that have a wheel for this platform and python.
  echo "install.sh: BL_NET_TF_CPU_ONLY=1, checking that the index has nvidia-cudnn-cu12==${cudnn_pin}, not installing it"
  available="$("${python_bin}" -m pip index versions nvidia-cudnn-cu12 \
    | sed -n 's/^Available versions: //p' | tr -d ' ' | tr ',' '\n')"
  if ! grep -qxF "${cudnn_pin}" <<<"${available}"; then
    echo "install.sh: nvidia-cudnn-cu12==${cudnn_pin} is not on the index for this platform" >&2
    exit 1
  fi
else
  echo "install.sh: installing nvidia-cudnn-cu12==${cudnn_pin}"
  "${python_bin}" -m pip install "${pip_args[@]}" "nvidia-cudnn-cu12==${cudnn_pin}"
fi

echo "install.sh: checking the cuDNN pin against tensorflow[and-cuda] and importing from /"
(cd / && "${python_bin}" - "${cudnn_pin}" <<'EOF'
import sys
from importlib.metadata import requires, version

from packaging.requirements import Requirement

pin = sys.argv[1]
ranges = [
    req.specifier
    for req in map(Requirement, requires("tensorflow") or [])
    if req.name == "nvidia-cudnn-cu12" and req.marker and req.marker.evaluate({"extra": "and-cuda"})
]
if not ranges:
    sys.exit("install.sh: tensorflow declares no nvidia-cudnn-cu12 in its and-cuda extra")
if not all(pin in spec for spec in ranges):
    sys.exit(f"install.sh: nvidia-cudnn-cu12=={pin} is outside tensorflow[and-cuda]'s {ranges[0]}")

import bl_net_tf  # noqa: E402  (imported from /, so the installed copy, not the source tree)
import tensorpack  # noqa: E402

print(f"install.sh: ok: tensorflow {version('tensorflow')}, cuDNN pin {pin} within {ranges[0]}, "
      f"bl_net_tf {version('bl-net-tf')}, tensorpack {version('tensorpack')}")
EOF
)
