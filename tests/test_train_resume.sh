#!/usr/bin/env bash
# A training run stopped twice (as if killed) and resumed each time must end exactly where an
# uninterrupted run ends: same per-step losses, same per-epoch metrics, same parameters and
# AdamW moments in the final checkpoint, bit for bit. Also: --resume refuses a changed
# setting, and a run directory with a checkpoint is not overwritten without --resume.
#
#   tests/test_train_resume.sh MILMER_TRAIN MILMER_SYNTHETIC_SHARDS WORK_DIR [PYTHON]
# A third run is killed for real (SIGKILL, once its first checkpoint exists) and resumed.
# The ctest runs with MILMER_EMU_THREADS=1, the setting the determinism promise is made for
# (the kernels use no float atomics, so other thread counts give the same bits too).
set -euo pipefail
train=$1
make_shards=$2
work=$3
py=${4:-python3}

rm -rf "$work"
mkdir -p "$work"
"$make_shards" --out "$work/shards" --participants 2 --trials 4 --windows 3 --frames 4 \
  --frame-size 32 --eeg-channels 8 --eeg-samples 64 --seed 1 >/dev/null

# 2 participants x 2 training trials x 3 windows = 12 samples, batch 4: 3 steps per epoch.
common=(--preset tiny --data "$work/shards" --labels deap2-valence --protocol subject-dependent
  --folds 2 --epochs 3 --batch 4 --lr 2e-3 --warmup-steps 2 --seed 7 --threads 1)

"$train" "${common[@]}" --out "$work/straight" >"$work/straight.out" 2>&1

status=0
"$train" "${common[@]}" --out "$work/stopped" --stop-after-steps 4 >"$work/stop1.out" 2>&1 || status=$?
[ "$status" -eq 3 ] || { echo "first stop: expected exit status 3, got $status"; cat "$work/stop1.out"; exit 1; }
status=0
"$train" "${common[@]}" --out "$work/stopped" --resume --stop-after-steps 4 >"$work/stop2.out" 2>&1 || status=$?
[ "$status" -eq 3 ] || { echo "second stop: expected exit status 3, got $status"; cat "$work/stop2.out"; exit 1; }
grep -q "resumed from .* after epoch 1 (step 3)" "$work/stop2.out" ||
  { echo "second run did not resume after epoch 1"; cat "$work/stop2.out"; exit 1; }
"$train" "${common[@]}" --out "$work/stopped" --resume >"$work/resume.out" 2>&1
grep -q "resumed from .* after epoch 2 (step 6)" "$work/resume.out" ||
  { echo "third run did not resume after epoch 2"; cat "$work/resume.out"; exit 1; }

# Killed for real: SIGKILL as soon as the first checkpoint is there (mid-epoch 2 or while the
# epoch-2 checkpoint is written, which is atomic), then resumed to the end.
"$train" "${common[@]}" --out "$work/killed" >"$work/killed1.out" 2>&1 &
pid=$!
for _ in $(seq 1 600); do
  [ -f "$work/killed/checkpoint.safetensors" ] && break
  kill -0 "$pid" 2>/dev/null || break
  sleep 0.1
done
kill -9 "$pid" 2>/dev/null || true
wait "$pid" 2>/dev/null || true
[ -f "$work/killed/checkpoint.safetensors" ] ||
  { echo "the run to be killed wrote no checkpoint"; cat "$work/killed1.out"; exit 1; }
"$train" "${common[@]}" --out "$work/killed" --resume >"$work/killed2.out" 2>&1 ||
  { echo "resuming the killed run failed"; cat "$work/killed2.out"; exit 1; }
grep -q "resumed from .* after epoch [12] (step [36])" "$work/killed2.out" ||
  { echo "the killed run was not resumed from a mid-run checkpoint"; cat "$work/killed2.out"; exit 1; }

# A changed setting is refused, naming it; so is reusing a run directory without --resume.
status=0
"$train" "${common[@]/2e-3/1e-3}" --out "$work/stopped" --resume >"$work/changed.out" 2>&1 || status=$?
[ "$status" -eq 1 ] && grep -q "argument 'lr': expected 0.002 as in the checkpoint" "$work/changed.out" ||
  { echo "a changed --lr was not refused"; cat "$work/changed.out"; exit 1; }
status=0
"$train" "${common[@]}" --out "$work/straight" >"$work/overwrite.out" 2>&1 || status=$?
[ "$status" -eq 1 ] && grep -q "argument '--out'" "$work/overwrite.out" ||
  { echo "an existing run was overwritten without --resume"; cat "$work/overwrite.out"; exit 1; }

"$py" - "$work/straight" "$work/stopped" "$work/killed" <<'EOF'
import json, sys
from pathlib import Path

a, b, k = (Path(p) for p in sys.argv[1:4])
ma = json.loads((a / "metrics.json").read_text())
mb = json.loads((b / "metrics.json").read_text())
mk = json.loads((k / "metrics.json").read_text())
assert ma["complete"] and mb["complete"] and mk["complete"], "every run must be complete"
assert mb["timing"]["runs"] == 3, f"expected 3 runs of the resumed training, got {mb['timing']['runs']}"
assert mk["timing"]["runs"] >= 2, f"the killed run was not resumed: {mk['timing']['runs']} run(s)"
for key in ("history", "final"):
    if ma[key] != mk[key]:
        sys.exit(f"metrics.json '{key}' differs between the uninterrupted and the killed + resumed run")
for key in ("history", "final", "config", "protocol", "parameter_count", "total_steps"):
    if ma[key] != mb[key]:
        if key == "history":
            for ea, eb in zip(ma[key], mb[key]):
                if ea != eb:
                    print(f"epoch {ea['epoch']} differs:\n  straight {ea['step_losses']}\n  resumed  {eb['step_losses']}")
        sys.exit(f"metrics.json '{key}' differs between the uninterrupted and the resumed run")
steps = [l for e in ma["history"] for l in e["step_losses"]]
assert len(steps) == 9, f"expected 9 step losses, got {len(steps)}"

def tensor_bytes(path):
    raw = path.read_bytes()
    n = int.from_bytes(raw[:8], "little")
    header = json.loads(raw[8:8 + n])
    header.pop("__metadata__", None)
    return header, raw[8 + n:]

ha, da = tensor_bytes(a / "checkpoint.safetensors")
hb, db = tensor_bytes(b / "checkpoint.safetensors")
assert ha == hb and da == db, "final checkpoints differ (parameters or AdamW moments)"
hk, dk = tensor_bytes(k / "checkpoint.safetensors")
assert ha == hk and da == dk, "the killed + resumed run's final checkpoint differs"
print(f"resume: 9 step losses, per-epoch metrics and the final checkpoint's {len(ha)} tensors "
      f"are bit-identical after two stops and after a SIGKILL; "
      f"final eval accuracy {ma['final']['eval']['accuracy']:.3f}")
EOF
