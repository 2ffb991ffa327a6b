#!/usr/bin/env bash
# The `make demo` job: synthetic DEAP -> shards -> train the tiny Milmer -> evaluate -> plot.
#
#   bash tools/demo.sh            (after `cmake --preset host && cmake --build --preset host`)
#
# 1. a Python venv for the data tools at build/venv-data (MediaPipe 0.10.21 needs numpy < 2),
#    created and kept current by tools/install_deps.sh demo;
# 2. synthetic DEAP in DEAP's formats (4 participants x 8 trials x 12 s, tools/make_synthetic_deap.py);
# 3. shards at the tiny model's frame size 32 (tools/prepare_deap.py: band-pass, FastICA,
#    BlazeFace crops);
# 4. milmer-train --preset tiny, subject-dependent protocol (2-fold over trials, fold 0,
#    participants pooled): trained on half of each participant's trials, evaluated on the
#    other half;
# 5. milmer-infer on the held-out split (must reproduce the trainer's final metrics from the
#    checkpoint) and on one sample; tools/plot_run.py.
# On a machine with a working GPU (nvidia-smi and nvcc) the cuda preset's programs are built
# and used; otherwise the host build runs the same kernels on the CPU emulator.
#
# Settings (environment): DEMO_OUT (demo-out), DEMO_LABELS (deap2-valence), DEMO_EPOCHS (6),
# DEMO_BATCH (8), DEMO_LR (2e-3), DEMO_PARTICIPANTS (4), DEMO_TRIALS (8), DEMO_SECONDS (12),
# DEMO_BIN (a directory holding milmer-train and milmer-infer, instead of building them).
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
out=${DEMO_OUT:-demo-out}
labels=${DEMO_LABELS:-deap2-valence}
epochs=${DEMO_EPOCHS:-6}
batch=${DEMO_BATCH:-8}
lr=${DEMO_LR:-2e-3}
participants=${DEMO_PARTICIPANTS:-4}
trials=${DEMO_TRIALS:-8}
seconds=${DEMO_SECONDS:-12}
venv=$root/build/venv-data
t_demo=$(date +%s)

phase() { printf '\n==== %s\n' "$*"; }
elapsed() { echo $(( $(date +%s) - $1 ))s; }
declare -A took

# ---- programs: cuda when a GPU is usable, else the host build --------------------------
t0=$(date +%s)
if [ -n "${DEMO_BIN:-}" ]; then
  bin=$DEMO_BIN
  target="programs in $bin"
elif command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1 &&
   { command -v nvcc >/dev/null 2>&1 || [ -x /usr/local/cuda/bin/nvcc ]; }; then
  phase "GPU found ($(nvidia-smi -L | head -1)): building the cuda preset's programs"
  cmake --preset cuda >/dev/null
  cmake --build build/cuda --target milmer-train milmer-infer -j "$(nproc)"
  bin=build/cuda/examples
  target="cuda ($(nvidia-smi --query-gpu=name --format=csv,noheader | head -1))"
else
  bin=build/host/examples
  target="host emulator on $(nproc) cores (no usable GPU)"
  if [ ! -x "$bin/milmer-train" ] || [ ! -x "$bin/milmer-infer" ]; then
    phase "building milmer-train and milmer-infer (host preset)"
    cmake --preset host >/dev/null
    cmake --build build/host --target milmer-train milmer-infer -j "$(nproc)"
  fi
fi
took[build]=$(elapsed "$t0")

# ---- the data tools' venv (tools/install_deps.sh creates it once and keeps it current) ----
t0=$(date +%s)
MILMER_DATA_VENV="$venv" bash tools/install_deps.sh demo
py="$venv/bin/python"
took[venv]=$(elapsed "$t0")

rm -rf "$out/synthetic-deap" "$out/shards" "$out/run"
mkdir -p "$out"

phase "synthetic DEAP: $participants participants x $trials trials x $seconds s"
t0=$(date +%s)
"$py" tools/make_synthetic_deap.py --out "$out/synthetic-deap" --participants "$participants" \
  --trials "$trials" --seconds "$seconds" --seed 0
took[synthetic]=$(elapsed "$t0")

phase "preparing shards at frame size 32 (band-pass, FastICA, face crops)"
t0=$(date +%s)
"$py" tools/prepare_deap.py --deap "$out/synthetic-deap" --out "$out/shards" --frame-size 32 \
  --workers 2 2> >(grep -v -e '%|' -e 'absl::InitializeLog' -e 'inference_feedback_manager' >&2)
took[prepare]=$(elapsed "$t0")

phase "training the tiny Milmer: $labels, $epochs epochs, batch $batch, lr $lr"
t0=$(date +%s)
"$bin/milmer-train" --preset tiny --data "$out/shards" --out "$out/run" --labels "$labels" \
  --protocol subject-dependent --folds 2 --fold 0 --epochs "$epochs" --batch "$batch" \
  --lr "$lr" --warmup-steps 5 --seed 0
took[train]=$(elapsed "$t0")

phase "milmer-infer: the held-out split from the checkpoint, and one sample"
t0=$(date +%s)
"$bin/milmer-infer" --checkpoint "$out/run/checkpoint.safetensors" --data "$out/shards" \
  --split test
"$bin/milmer-infer" --checkpoint "$out/run/checkpoint.safetensors" --data "$out/shards" \
  --split test --json >"$out/run/infer_test.json"
"$bin/milmer-infer" --checkpoint "$out/run/checkpoint.safetensors" --data "$out/shards" \
  --sample 0
took[infer]=$(elapsed "$t0")

phase "plots"
"$py" tools/plot_run.py "$out/run"

"$py" - "$out" "$target" "$(elapsed "$t_demo")" "${took[build]}" "${took[venv]}" \
  "${took[synthetic]}" "${took[prepare]}" "${took[train]}" "${took[infer]}" <<'EOF'
import json, sys
from pathlib import Path

out, target, total, build, venv, synthetic, prepare, train, infer = sys.argv[1:]
run = Path(out) / "run"
m = json.loads((run / "metrics.json").read_text())
inf = json.loads((run / "infer_test.json").read_text())
ev = m["final"]["eval"]
names = m["class_names"]
same = abs(inf["eval"]["accuracy"] - ev["accuracy"]) < 1e-12 and \
    inf["eval"]["confusion_matrix"] == ev["confusion_matrix"]
p = m["protocol"]
print()
print("=" * 78)
print("milmer demo: tiny Milmer on synthetic DEAP-format data")
print("=" * 78)
print(f"target            {target}")
print(f"labels            {m['labels']} ({', '.join(names)})")
print(f"protocol          {p['description']}")
print(f"                  train {p['train_samples']} samples, held-out {p['test_samples']} samples")
print(f"model             tiny preset, {m['parameter_count']:,} parameters; "
      f"{m['epochs']} epochs x {m['steps_per_epoch']} steps")
print(f"held-out result   accuracy {100 * ev['accuracy']:.1f}%, macro F1 {ev['macro_f1']:.3f}, "
      f"loss {ev['loss']:.4f}")
print("                  per-class F1: " +
      ", ".join(f"{n} {f:.2f}" for n, f in zip(names, ev["per_class_f1"])))
print(f"chance            uniform {100 * m['chance']['uniform']:.1f}%, "
      f"majority class of the held-out set {100 * ev['majority_class_rate']:.1f}%")
print(f"milmer-infer      reproduces the held-out metrics from the checkpoint: "
      f"{'yes' if same else 'NO'}")
print(f"wall time         {total} in all: build {build}, venv {venv}, synthetic data {synthetic}, "
      f"shards {prepare}, training {train}, inference {infer}")
print("outputs")
for what, path in [("synthetic DEAP", Path(out) / "synthetic-deap"),
                   ("shards + manifest", Path(out) / "shards"),
                   ("checkpoint", run / "checkpoint.safetensors"),
                   ("metrics", run / "metrics.json"),
                   ("training log", run / "train.log"),
                   ("inference (JSON)", run / "infer_test.json"),
                   ("loss curves", run / "loss_curves.png"),
                   ("accuracy", run / "accuracy.png"),
                   ("confusion matrix", run / "confusion_matrix.png")]:
    print(f"  {what:<18}{path}")
print("=" * 78)
if not same:
    sys.exit("demo: milmer-infer disagrees with the trainer's final evaluation")
EOF
