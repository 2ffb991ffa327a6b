#!/usr/bin/env bash
# Installs what the build needs on a Debian machine, and only what is missing.
#   tools/install_deps.sh build    C++ build and tests (Debian packages, cuobjdump from PyPI)
#   tools/install_deps.sh demo     + the Python packages of the DEAP tools, in their own
#                                  virtual environment ($MILMER_DATA_VENV, default
#                                  build/venv-data: mediapipe 0.10.21 needs numpy < 2)
#   tools/install_deps.sh torch    + torch and transformers (PyTorch checks and baselines)
set -euo pipefail
what=${1:-build}
here=$(cd "$(dirname "$0")" && pwd)

apt_packages=(cmake g++ make pkg-config python3 python3-pip python3-venv libboost-context-dev libopenblas-dev
  doctest-dev nlohmann-json3-dev libcli11-dev libbenchmark-dev clang libclang-rt-dev)
missing=()
for p in "${apt_packages[@]}"; do
  dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "install_deps: installing Debian packages: ${missing[*]}"
  sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends \
    "${missing[@]}" >/dev/null
fi

# The CUDA toolkit provides the headers of both targets (__half, the runtime and cuBLAS API)
# and nvcc for the cuda preset. It is not a Debian package of the version we need.
if ! command -v nvcc >/dev/null 2>&1 && [ ! -x /usr/local/cuda/bin/nvcc ]; then
  echo "install_deps: the CUDA toolkit (nvcc, headers) is required: install CUDA 12.4+ into" \
    "/usr/local/cuda (https://developer.nvidia.com/cuda-downloads)" >&2
  exit 1
fi

py=python3
# On a Debian python3 (PEP 668, "externally managed") pip refuses to install outside a venv;
# the packages installed here (cuobjdump's wheel, torch for the optional checks) do not
# conflict with Debian's, so that refusal is overridden.
pip_install() {
  local log rc=0
  log=$(PIP_BREAK_SYSTEM_PACKAGES=1 $py -m pip install -q --disable-pip-version-check "$@" 2>&1) ||
    rc=$?
  printf '%s\n' "$log" | grep -v -e "Running pip as the 'root'" -e '^$' || true
  if [ $rc -ne 0 ]; then
    echo "install_deps: pip install $* failed (exit $rc)" >&2
    exit $rc
  fi
}
# cuobjdump reads registers and shared memory from the built cubins for the resource report.
if ! $py -m pip show -q nvidia-cuda-cuobjdump >/dev/null 2>&1; then
  pip_install "nvidia-cuda-cuobjdump==13.*"
fi

case "$what" in
  build) ;;
  demo)
    venv=${MILMER_DATA_VENV:-$here/../build/venv-data}
    if [ ! -x "$venv/bin/python" ]; then
      echo "install_deps: creating the data tools' virtual environment in $venv"
      $py -m venv "$venv"
    fi
    stamp="$venv/.requirements-data.sha"
    want=$(sha256sum "$here/requirements-data.txt" | cut -d' ' -f1)
    if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
      echo "install_deps: installing tools/requirements-data.txt into $venv"
      "$venv/bin/python" -m pip install -q --disable-pip-version-check -r "$here/requirements-data.txt" matplotlib==3.11.2
      echo "$want" > "$stamp"
    fi
    ;;
  torch)
    pip_install -r "$here/requirements-torch.txt"
    ;;
  *)
    echo "install_deps: unknown set '$what' (expected build, demo or torch)" >&2
    exit 2
    ;;
esac
