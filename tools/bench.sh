#!/usr/bin/env bash
# `make bench`: every benchmark this machine can run; the rest is skipped with a message.
#
#   host (always): milmer_bench's kernel suites, Swin-T and the tiny training step on the
#                  emulator (short --benchmark_min_time); the step profile of milmer against
#                  PyTorch (bench/compare_step.py, tiny batch 14 and paper batch 2); the
#                  op / model difference check against PyTorch (bench/compare_pytorch.py);
#                  the minimum-vs-issued bytes table (bench/traffic.py); the occupancy table
#                  (bench/occupancy.py) when the cuda build log exists.
#   GPU (when nvidia-smi lists one and the cuda build sees it): the cuda preset with the
#                  benchmarks on, in build/cuda-bench; every suite at full size, then
#                  bench/compare_pytorch.py's timing table against PyTorch eager,
#                  torch.compile and SDPA.
# Results are also written to build/bench/. The host part takes about 10 minutes on 2 cores.
set -euo pipefail
cd "$(dirname "$0")/.."

PY=${PY:-python3}
HOST=build/host
OUT=build/bench
mkdir -p "$OUT"

section() { printf '\n==== %s\n' "$*"; }
skipped() { printf '\n==== skipped: %s\n' "$*"; }

section "machine"
lscpu | grep -E '^(Model name|CPU\(s\)|Thread|Core|Socket)' || true
free -h | head -2 || true
uptime || true

have_torch=0
if "$PY" -c 'import torch, transformers, safetensors' 2>/dev/null; then have_torch=1; fi

# ---- GPU -----------------------------------------------------------------------------------
have_gpu=0
if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L 2>/dev/null | grep -q GPU; then
  have_gpu=1
fi
if [ "$have_gpu" = 1 ]; then
  section "GPU build (cuda preset with the benchmarks, build/cuda-bench)"
  cmake --preset cuda -B build/cuda-bench -DMILMER_BUILD_BENCH=ON >/dev/null
  cmake --build build/cuda-bench -j "$(nproc)" --target milmer_bench milmer_op_check \
    milmer_step_profile milmer-parity
  # milmer_bench itself refuses to run when the CUDA runtime sees no device.
  section "GPU suites (milmer_bench, full size)"
  build/cuda-bench/bench/milmer_bench --benchmark_min_time=0.5 \
    --benchmark_out="$OUT/gpu.json" --benchmark_out_format=json | tee "$OUT/gpu.txt"
  if [ "$have_torch" = 1 ]; then
    section "milmer vs PyTorch on the GPU (bench/compare_pytorch.py)"
    "$PY" bench/compare_pytorch.py --build build/cuda-bench | tee "$OUT/compare_pytorch_gpu.md"
  else
    skipped "PyTorch comparison on the GPU: torch not installed (make golden installs it)"
  fi
else
  skipped "GPU suites: no GPU here (nvidia-smi lists none); GPU numbers come from \`make bench\` on a machine with one"
fi

# ---- host ----------------------------------------------------------------------------------
section "host suites (milmer_bench on the emulator, --benchmark_min_time=0.05)"
"$HOST/bench/milmer_bench" --benchmark_min_time=0.05 \
  --benchmark_out="$OUT/host.json" --benchmark_out_format=json 2>&1 | tee "$OUT/host.txt"

if [ "$have_torch" = 1 ]; then
  section "one training step: milmer (emulator) vs PyTorch eager (CPU) (bench/compare_step.py)"
  "$PY" bench/compare_step.py --binary "$HOST/bench/milmer_step_profile" \
    --runs tiny:14 paper:2 --markdown "$OUT/compare_step.md" 2>/dev/null
  section "milmer vs PyTorch on identical inputs (bench/compare_pytorch.py, CPU part)"
  "$PY" bench/compare_pytorch.py --host-build "$HOST" 2>/dev/null | tee "$OUT/compare_pytorch_cpu.md"
else
  skipped "PyTorch comparisons: torch not installed (make golden installs it); milmer's side alone:"
  "$HOST/bench/milmer_step_profile" --preset tiny --batch 14 --steps 1 | tee "$OUT/step_tiny.json"
  "$HOST/bench/milmer_step_profile" --preset paper --batch 2 --steps 1 | tee "$OUT/step_paper.json"
fi

section "minimum vs issued bytes per kernel (bench/traffic.py)"
"$PY" bench/traffic.py | tee "$OUT/traffic.md"

if [ -f build/cuda/build.log ]; then
  section "theoretical occupancy on sm_80 / sm_90 (bench/occupancy.py)"
  "$PY" bench/occupancy.py build/cuda/build.log | tee "$OUT/occupancy.md"
else
  skipped "occupancy table: build/cuda/build.log missing (run \`make report\` first)"
fi

section "done; results in $OUT/"
