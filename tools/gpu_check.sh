#!/usr/bin/env bash
# `make test-gpu`: the whole check of the cuda target on a machine with a GPU, in one command.
#
#   bash tools/gpu_check.sh          run every step; writes gpu-check/summary.md
#   bash tools/gpu_check.sh --plan   print the steps and their time budgets, run nothing
#
# Without a usable GPU (nvidia-smi lists none, or nvcc is missing) it says so and exits 1.
# It builds the cuda preset for the local GPU's architecture only (build/gpu-check), then runs:
# the unit suite on the device; compute-sanitizer's memcheck, racecheck, initcheck and
# synccheck over the kernel test suites; each kernel lab's check at its default (paper-size)
# shapes; a tiny training run on C++-written synthetic shards plus milmer-infer; milmer-parity
# on the golden fixtures; the GPU benchmark suites. Each step has its own time budget (the
# whole is meant to finish in under 8 minutes on one H100-class GPU with 16 cores, build
# included); a step over its budget is stopped and the summary says so. Exit status 0 when
# every step passed. docs/gpu.md explains how to read the summary.
set -uo pipefail
cd "$(dirname "$0")/.."

OUT_DIR=${GPU_CHECK_OUT:-gpu-check}
BUILD=${GPU_CHECK_BUILD:-build/gpu-check}
JOBS=${JOBS:-$(nproc)}

# Kernel suites the sanitizers run over (the model suites are too slow under instrumentation).
KERNEL_SUITES="activation,adamw,amil,dropout,elementwise,frames,gemm,layernorm,mha_attention,residual_layernorm,softmax_ce,swin_layout,tokens,window_attention"
LABS="layernorm_lab residual_layernorm_lab softmax_ce_lab gemm_lab mha_attention_lab window_attention_lab amil_topk_lab"

# name|budget in seconds|what it does
STEPS=(
  "build|210|configure the cuda preset for this GPU's architecture and build milmer_tests, the labs, the programs and milmer_bench"
  "unit|60|the doctest unit suite on the device (emulator-only cases are not compiled in)"
  "memcheck|30|compute-sanitizer --tool memcheck over the kernel suites"
  "racecheck|30|compute-sanitizer --tool racecheck over the kernel suites"
  "initcheck|30|compute-sanitizer --tool initcheck over the kernel suites"
  "synccheck|30|compute-sanitizer --tool synccheck over the kernel suites"
  "labs|25|every kernel lab's check against the fp64 reference at its default shapes"
  "train|25|milmer-synthetic-shards, milmer-train --preset tiny (3 epochs) and milmer-infer on the GPU"
  "parity|10|milmer-parity on the golden fixtures (the unit suite compares them with the reference)"
  "bench|30|milmer_bench's GPU suites (short --benchmark_min_time)"
)

plan() {
  local total=0
  printf '%-10s %8s  %s\n' step budget what
  for s in "${STEPS[@]}"; do
    IFS='|' read -r name budget what <<<"$s"
    printf '%-10s %7ss  %s\n' "$name" "$budget" "$what"
    total=$((total + budget))
  done
  printf '%-10s %7ss  (the whole check, build included)\n' total "$total"
}

if [ "${1:-}" = "--plan" ]; then
  plan
  exit 0
elif [ -n "${1:-}" ]; then
  echo "usage: tools/gpu_check.sh [--plan]" >&2
  exit 2
fi

nvcc_bin=$(command -v nvcc || { [ -x /usr/local/cuda/bin/nvcc ] && echo /usr/local/cuda/bin/nvcc; } || true)
if ! command -v nvidia-smi >/dev/null 2>&1 || ! nvidia-smi -L 2>/dev/null | grep -q GPU; then
  echo "gpu_check: no GPU here (nvidia-smi lists none); this check needs a machine with one" >&2
  exit 1
fi
if [ -z "$nvcc_bin" ]; then
  echo "gpu_check: nvcc not found (PATH or /usr/local/cuda/bin); the CUDA toolkit is needed" >&2
  exit 1
fi
export PATH="$(dirname "$nvcc_bin"):$PATH"
sanitizer=$(command -v compute-sanitizer || echo "$(dirname "$nvcc_bin")/compute-sanitizer")

# The local GPU's architecture: compute capability 9.0 builds sm_90a like the cuda preset.
cc=$(nvidia-smi --query-gpu=compute_cap --format=csv,noheader | head -1 | tr -d ' .')
arch=$cc
[ "$cc" = 90 ] && arch=90a

rm -rf "$OUT_DIR"
mkdir -p "$OUT_DIR"
declare -A result seconds
failed=0

# run_step NAME BUDGET COMMAND...: runs the command under its budget, its output in
# $OUT_DIR/NAME.log; records pass, FAIL (exit status) or TIMEOUT.
run_step() {
  local name=$1 budget=$2
  shift 2
  local t0 rc
  t0=$(date +%s%N)
  printf '==== %-10s (budget %ss) ... ' "$name" "$budget"
  timeout --signal=TERM --kill-after=5 "$budget" bash -c "$*" >"$OUT_DIR/$name.log" 2>&1
  rc=$?
  seconds[$name]=$(awk -v a="$t0" -v b="$(date +%s%N)" 'BEGIN { printf "%.1f", (b - a) / 1e9 }')
  if [ $rc -eq 0 ]; then
    result[$name]=pass
  elif [ $rc -eq 124 ] || [ $rc -eq 137 ]; then
    result[$name]="TIMEOUT (ran out of its ${budget} s budget)"
    failed=1
  else
    result[$name]="FAIL (exit status $rc)"
    failed=1
  fi
  echo "${result[$name]} in ${seconds[$name]} s"
  [ "${result[$name]}" = pass ] || tail -15 "$OUT_DIR/$name.log" | sed 's/^/    /'
}

budget_of() {
  local s
  for s in "${STEPS[@]}"; do
    IFS='|' read -r name budget _ <<<"$s"
    [ "$name" = "$1" ] && echo "$budget" && return
  done
}

tests=$BUILD/tests/milmer_tests
run_step build "$(budget_of build)" "
  cmake --preset cuda -B '$BUILD' -DCMAKE_CUDA_ARCHITECTURES='$arch' -DMILMER_BUILD_BENCH=ON >/dev/null &&
  cmake --build '$BUILD' -j $JOBS --target milmer_tests $LABS milmer-train milmer-infer \
    milmer-synthetic-shards milmer-parity milmer_bench"

if [ "${result[build]}" = pass ]; then
  run_step unit "$(budget_of unit)" "'$tests' --no-version"
  for tool in memcheck racecheck initcheck synccheck; do
    extra=""
    [ "$tool" = memcheck ] && extra="--leak-check full"
    run_step "$tool" "$(budget_of "$tool")" \
      "'$sanitizer' --tool $tool $extra --error-exitcode 1 '$tests' --no-version -ts='$KERNEL_SUITES'"
  done
  run_step labs "$(budget_of labs)" "
    for lab in $LABS; do echo \"== \$lab\"; '$BUILD/kernels/'\$lab --iters 3 || exit 1; done"
  run_step train "$(budget_of train)" "
    set -e; rm -rf '$OUT_DIR/train'
    '$BUILD/examples/milmer-synthetic-shards' --out '$OUT_DIR/train/shards' --participants 2 --trials 6 --windows 4
    '$BUILD/examples/milmer-train' --preset tiny --labels deap2-valence --folds 2 --epochs 3 --batch 8 \
      --lr 2e-3 --data '$OUT_DIR/train/shards' --out '$OUT_DIR/train/run'
    '$BUILD/examples/milmer-infer' --checkpoint '$OUT_DIR/train/run/checkpoint.safetensors' \
      --data '$OUT_DIR/train/shards' --split test"
  run_step parity "$(budget_of parity)" "
    set -e
    for f in swin_tiny swin_pad swin_odd_window; do
      '$BUILD/tools/parity/milmer-parity' --model swin --config tests/golden/\$f/config.json \
        --params tests/golden/\$f/params.safetensors --inputs tests/golden/\$f/inputs.safetensors \
        --out '$OUT_DIR/parity_'\$f.safetensors
    done
    for f in milmer_tiny milmer_alt; do
      '$BUILD/tools/parity/milmer-parity' --model milmer --config tests/golden/\$f/config.json \
        --params tests/golden/\$f/params.safetensors --inputs tests/golden/\$f/inputs.safetensors \
        --steps 5 --lr 1e-3 --out '$OUT_DIR/parity_'\$f.safetensors
    done"
  run_step bench "$(budget_of bench)" \
    "'$BUILD/bench/milmer_bench' --benchmark_min_time=0.05 --benchmark_out='$OUT_DIR/bench.json' --benchmark_out_format=json"
else
  for s in "${STEPS[@]}"; do
    IFS='|' read -r name _ _ <<<"$s"
    [ "$name" = build ] || result[$name]="not run (the build failed)"
  done
fi

# ---- the summary --------------------------------------------------------------------------
{
  echo "# gpu-check summary"
  echo
  echo "- date: $(date -u '+%Y-%m-%d %H:%M UTC')"
  echo "- commit: $(git rev-parse --short HEAD 2>/dev/null || echo unknown)$(git diff --quiet 2>/dev/null || echo ' (with uncommitted changes)')"
  echo "- device: $(nvidia-smi --query-gpu=name,memory.total,compute_cap --format=csv,noheader | head -1); built for sm_$arch"
  echo "- driver: $(nvidia-smi --query-gpu=driver_version --format=csv,noheader | head -1)"
  echo "- toolkit: $("$nvcc_bin" --version | grep -o 'release [0-9.]*, V[0-9.]*' | head -1)"
  echo "- host: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //')"
  echo
  echo "| step | budget (s) | took (s) | result |"
  echo "|---|---:|---:|---|"
  for s in "${STEPS[@]}"; do
    IFS='|' read -r name budget _ <<<"$s"
    echo "| $name | $budget | ${seconds[$name]:--} | ${result[$name]} |"
  done
  echo
  echo "Each step's output is in \`$OUT_DIR/<step>.log\`."
  if [ -f "$OUT_DIR/unit.log" ]; then
    echo
    echo "unit suite: $(grep -E '^\[doctest\] (test cases|assertions)' "$OUT_DIR/unit.log" | tr '\n' ' ')"
  fi
  for tool in memcheck racecheck initcheck synccheck; do
    [ -f "$OUT_DIR/$tool.log" ] && echo "$tool: $(grep -E 'ERROR SUMMARY|RACECHECK SUMMARY' "$OUT_DIR/$tool.log" | tail -1)"
  done
  if [ -f "$OUT_DIR/labs.log" ]; then
    echo
    echo "## kernel labs"
    echo
    echo '```'
    grep -E '^(==|.*(check|ms ))' "$OUT_DIR/labs.log"
    echo '```'
  fi
  if [ -f "$OUT_DIR/train.log" ]; then
    echo
    echo "## tiny training run"
    echo
    echo '```'
    grep -iE 'epoch|held-out|accuracy|macro' "$OUT_DIR/train.log" | tail -12
    echo '```'
  fi
  if [ -f "$OUT_DIR/bench.log" ]; then
    echo
    echo "## benchmarks"
    echo
    echo '```'
    grep -E '^[A-Za-z_].*(ns|us|ms) ' "$OUT_DIR/bench.log"
    echo '```'
  fi
} >"$OUT_DIR/summary.md"

echo
echo "gpu_check: summary in $OUT_DIR/summary.md"
exit $failed
