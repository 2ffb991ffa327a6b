#!/usr/bin/env bash
# The full Swin-T (224, random weights) forward against transformers. Needs torch and
# transformers (tools/install_deps.sh torch); without them it says so and exits 77, which
# ctest reports as skipped.
#   tools/swin_t_check.sh <milmer_tests binary> [fixture dir]
# The fixture (110 MB) lives outside the repository, by default in $TMPDIR.
set -euo pipefail
tests=$1
dir=${2:-${TMPDIR:-/tmp}/milmer-swin-t-golden}
here=$(cd "$(dirname "$0")" && pwd)
if ! python3 -c "import torch, transformers, safetensors" >/dev/null 2>&1; then
  echo "SKIPPED: the full Swin-T check needs torch and transformers (make swin-t-check installs them)"
  exit 77
fi
if [ ! -f "$dir/expected.safetensors" ]; then
  python3 "$here/make_golden.py" --full-swin-t "$dir"
fi
MILMER_SWIN_T_GOLDEN="$dir" "$tests" -tc="full Swin-T*" --no-version
