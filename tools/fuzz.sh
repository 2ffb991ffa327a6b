#!/usr/bin/env bash
# Runs the libFuzzer harnesses of fuzz/ (built by the `fuzz` preset) under ASan/UBSan with a
# memory limit: first every input of the committed corpus once, then each harness for
# SECONDS seconds from that corpus, the harnesses side by side. New interesting inputs go to
# build/fuzz/work/<harness>, a failing input to build/fuzz/artifacts/ (add it to
# fuzz/corpus/<harness> with its fix).
#
#   tools/fuzz.sh SECONDS [HARNESS...]     (default: every harness)
set -euo pipefail
seconds=${1:?usage: tools/fuzz.sh SECONDS [HARNESS...]}
shift
here=$(cd "$(dirname "$0")/.." && pwd)
bin=$here/build/fuzz/fuzz
harnesses=("$@")
[ ${#harnesses[@]} -gt 0 ] || harnesses=(safetensors shard config)
# 2 GB of resident memory and 2 GB in one allocation: a reader that trusts a size read from a
# file is caught by the limit, not by the machine running out.
limits=(-rss_limit_mb=2048 -malloc_limit_mb=2048 -timeout=10)
export ASAN_OPTIONS=${ASAN_OPTIONS:-allocator_may_return_null=0:detect_leaks=1}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}
mkdir -p "$here/build/fuzz/artifacts"
for h in "${harnesses[@]}"; do
  [ -x "$bin/fuzz_$h" ] || { echo "fuzz.sh: $bin/fuzz_$h is not built (cmake --preset fuzz; cmake --build --preset fuzz)" >&2; exit 2; }
  [ -d "$here/fuzz/corpus/$h" ] || { echo "fuzz.sh: no corpus $here/fuzz/corpus/$h" >&2; exit 2; }
done

# One harness: the corpus replayed, then fuzzing; its log in build/fuzz/<harness>.log.
fuzz_one() {
  local h=$1 exe=$bin/fuzz_$1 corpus=$here/fuzz/corpus/$1 log=$here/build/fuzz/$1.log
  local work=$here/build/fuzz/work/$1
  echo "fuzz: $h: replaying $(find "$corpus" -type f | wc -l) corpus inputs, then fuzzing for ${seconds} s"
  if ! "$exe" "${limits[@]}" -artifact_prefix="$here/build/fuzz/artifacts/$h-" \
      "$corpus"/* >"$log" 2>&1; then
    tail -40 "$log"
    echo "fuzz: $h: a corpus input failed (log: $log)" >&2
    return 1
  fi
  mkdir -p "$work"
  if ! "$exe" "${limits[@]}" -max_total_time="$seconds" -print_final_stats=1 \
      -artifact_prefix="$here/build/fuzz/artifacts/$h-" "$work" "$corpus" >"$log" 2>&1; then
    tail -40 "$log"
    echo "fuzz: $h: failed; the input is in build/fuzz/artifacts (log: $log)" >&2
    return 1
  fi
  grep -E "^stat::number_of_executed_units|^stat::peak_rss_mb" "$log" | tr '\n' ' ' |
    sed "s/^/fuzz: $h: /; s/\$/\n/"
}

# The harnesses run side by side (each is one process); the script fails if any failed.
pids=()
for h in "${harnesses[@]}"; do
  fuzz_one "$h" &
  pids+=($!)
done
failed=0
for pid in "${pids[@]}"; do wait "$pid" || failed=1; done
[ "$failed" = 0 ] || exit 1
echo "fuzz: no crash, leak, timeout or out-of-memory in ${harnesses[*]}"
