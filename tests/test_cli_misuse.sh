#!/usr/bin/env bash
# milmer-train, milmer-infer and milmer-parity under misuse and divergence: each case must end
# in an error that names what was wrong (exit status 1, or CLI11's for a value out of range),
# never a crash, a silent fresh start or a result computed from non-numbers; and whatever was
# already written (a checkpoint) must stay as it was.
#
#   tests/test_cli_misuse.sh MILMER_TRAIN MILMER_INFER MILMER_SYNTHETIC_SHARDS MILMER_PARITY
#                            GOLDEN_DIR WORK_DIR [PYTHON]
# GOLDEN_DIR: tests/golden (the parity case uses milmer_tiny's fixture).
set -euo pipefail
train=$(realpath "$1")
infer=$(realpath "$2")
make_shards=$(realpath "$3")
parity=$(realpath "$4")
golden=$(realpath "$5")
work=$6
py=${7:-python3}

rm -rf "$work"
mkdir -p "$work"
cd "$work"
failures=0
fail() {
  echo "FAILED: $*"
  failures=$((failures + 1))
}

# expect NAME STATUS PATTERN -- COMMAND...: the command's exit status must be STATUS and its
# output (stdout and stderr) must match the extended regex PATTERN.
expect() {
  local name=$1 want=$2 pattern=$3
  shift 4
  local status=0
  "$@" >"$name.out" 2>&1 || status=$?
  if [ "$status" -ne "$want" ]; then
    fail "$name: exit status $status, expected $want"
    sed 's/^/    /' "$name.out" | tail -5
  elif ! grep -Eq -- "$pattern" "$name.out"; then
    fail "$name: output does not match /$pattern/"
    sed 's/^/    /' "$name.out" | tail -5
  else
    echo "ok: $name"
  fi
}

# tensors.py FILE NAME VALUE [COUNT]: sets the first COUNT elements (default: all) of float32
# tensor NAME in a safetensors FILE to VALUE (and its CRC-32 in the metadata, when the file
# has them).
# meta.py FILE KEY VALUE: sets metadata entry KEY to the string VALUE.
cat >tensors.py <<'EOF'
import json, struct, sys, zlib
from pathlib import Path

def load(path):
    raw = Path(path).read_bytes()
    n = int.from_bytes(raw[:8], "little")
    return json.loads(raw[8:8 + n]), bytearray(raw[8 + n:])

def save(path, header, data):
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * ((8 - len(text) % 8) % 8)
    Path(path).write_bytes(len(text).to_bytes(8, "little") + text + bytes(data))

if __name__ == "__main__":
    path, name, value = sys.argv[1], sys.argv[2], float(sys.argv[3])
    header, data = load(path)
    begin, end = header[name]["data_offsets"]
    count = int(sys.argv[4]) if len(sys.argv) > 4 else (end - begin) // 4
    data[begin:begin + 4 * count] = struct.pack(f"<{count}f", *[value] * count)
    meta = header.get("__metadata__", {})
    for key, text in meta.items():  # per-tensor CRC-32s, if the writer stores them
        if key.endswith("crc32"):
            crcs = json.loads(text)
            crcs[name] = "%08x" % zlib.crc32(bytes(data[begin:end]))
            meta[key] = json.dumps(crcs)
    save(path, header, data)
EOF
cat >meta.py <<'EOF'
import sys
sys.path.insert(0, ".")
from tensors import load, save
path, key, value = sys.argv[1:4]
header, data = load(path)
header["__metadata__"][key] = value
save(path, header, data)
EOF

"$make_shards" --out shards --participants 2 --trials 4 --windows 3 --frames 4 --frame-size 32 \
  --eeg-channels 8 --eeg-samples 64 --seed 1 >/dev/null
"$make_shards" --out shards3 --participants 3 --trials 4 --windows 3 --frames 4 --frame-size 32 \
  --eeg-channels 8 --eeg-samples 64 --seed 1 >/dev/null
# 2 participants x 2 training trials x 3 windows = 12 samples, batch 4: 3 steps per epoch.
common=(--data shards --labels deap2-valence --protocol subject-dependent --folds 2 --batch 4
  --seed 7 --threads 1)
ckpt_sum() { sha256sum "$1/checkpoint.safetensors" | cut -d' ' -f1; }

# A run stopped after 4 steps: the checkpoint of epoch 1 (a test aid that exits as a kill
# would, so its lock file still names it).
expect good 3 "stopping after 4 steps" -- "$train" --preset tiny "${common[@]}" --epochs 2 \
  --lr 2e-3 --out good --stop-after-steps 4
[ -f good/checkpoint.safetensors ] || { echo "the first run wrote no checkpoint"; exit 1; }

# ---- 4: divergence. A fresh run at lr 1e30: stopped at the step whose loss is NaN, no
# checkpoint, metrics.json complete: false with the reason.
expect diverge_fresh 1 "epoch 1/1, step [0-9]/3 \(step [0-9] of the run\): argument '(loss|gradient norm)': expected a finite value, got .*no checkpoint was written" -- \
  "$train" --preset tiny "${common[@]}" --epochs 1 --lr 1e30 --out diverged
[ ! -e diverged/checkpoint.safetensors ] || fail "diverge_fresh: a checkpoint was written"
"$py" - diverged/metrics.json <<'EOF' || fail "diverge_fresh: metrics.json"
import json, sys
m = json.load(open(sys.argv[1]))
assert m["complete"] is False and m["epochs_done"] == 0, m
assert "training diverged" in m["stopped"]["reason"], m["stopped"]
EOF

# A resumed run whose weights make the gradients overflow (finite loss, infinite gradient
# norm: the head's row of class 0 at 1e20): stopped at epoch 2, step 1, before the update;
# the checkpoint of epoch 1 stays byte for byte. The same run takes over the lock the stopped run left and removes the temp
# file of an interrupted checkpoint write.
cp -r good huge
"$py" tensors.py huge/checkpoint.safetensors head.weight 1e20 32
before=$(ckpt_sum huge)
stale_pid=$(cat huge/.lock 2>/dev/null || true)
echo "partial" >huge/.checkpoint.safetensors.tmp.Ab12Cd
expect diverge_resumed 1 "epoch 2/2, step 1/3 \(step 4 of the run\): argument 'gradient norm': expected a finite value, got inf.*the checkpoint of epoch 1 stays" -- \
  "$train" --preset tiny "${common[@]}" --epochs 2 --lr 2e-3 --out huge --resume
[ "$(ckpt_sum huge)" = "$before" ] || fail "diverge_resumed: the checkpoint changed"
"$py" - huge/metrics.json <<'EOF' || fail "diverge_resumed: metrics.json"
import json, sys
m = json.load(open(sys.argv[1]))
assert m["complete"] is False and m["epochs_done"] == 1 and len(m["history"]) == 1, m
assert "gradient norm" in m["stopped"]["reason"] and m["stopped"]["step"] == 3, m["stopped"]
EOF
# ---- 6: a stale lock is taken over, a killed write's temp file removed.
grep -q "took over .*huge/.lock from process $stale_pid, which ended without releasing it" huge/train.log ||
  fail "stale_lock: no takeover of the lock left by process $stale_pid in huge/train.log"
[ ! -e huge/.checkpoint.safetensors.tmp.Ab12Cd ] || fail "temp_file: not removed"
grep -q "removed .*\.checkpoint\.safetensors\.tmp\.Ab12Cd (left by an interrupted write" huge/train.log ||
  fail "temp_file: its removal is not in huge/train.log"
[ ! -s huge/.lock ] || fail "lock: huge/.lock still names a process after the run ended"

# milmer-infer: NaN weights give an error, not "loss nan".
cp good/checkpoint.safetensors nan.safetensors
"$py" tensors.py nan.safetensors head.bias nan
expect infer_nan 1 "milmer-infer: error: .*argument 'logits': expected finite values, got -?nan for sample 0 \(participant 1, trial 1, window 0\)" -- \
  "$infer" --checkpoint nan.safetensors --data shards --threads 1

# ---- 6: --resume without a checkpoint.
expect resume_nothing 1 "argument '--resume': expected a checkpoint to continue from, fresh/checkpoint.safetensors, got none in fresh" -- \
  "$train" --preset tiny "${common[@]}" --epochs 1 --out fresh --resume
[ ! -e fresh/checkpoint.safetensors ] || fail "resume_nothing: a run was started"

# ---- 6: two runs into one --out: the second is refused while the first holds the lock.
flock good/.lock sleep 60 &
holder=$!
for _ in $(seq 1 100); do flock -n good/.lock true 2>/dev/null || break; sleep 0.05; done
echo "$holder" >good/.lock
expect locked 1 "argument '--out': expected a run directory that no other run is using, got good, in use by process $holder" -- \
  "$train" --preset tiny "${common[@]}" --epochs 2 --lr 2e-3 --out good --resume
kill "$holder" 2>/dev/null || true
wait "$holder" 2>/dev/null || true

# ---- 6: milmer-infer --split test on shards other than the run's.
expect split_other 1 "argument '--data': expected the shards the checkpoint was trained on \(split fingerprint [0-9a-f]{16}\).*got shards3, whose split has fingerprint [0-9a-f]{16}" -- \
  "$infer" --checkpoint good/checkpoint.safetensors --data shards3 --split test --threads 1
expect split_same 0 "12 samples \(the test side of subject-dependent" -- \
  "$infer" --checkpoint good/checkpoint.safetensors --data shards --split test --threads 1

# ---- 6: --sample out of range, --batch out of range.
expect sample_negative 1 "argument '--sample': expected 0 \.\. 23 \(samples in shards\), got -5" -- \
  "$infer" --checkpoint good/checkpoint.safetensors --data shards --sample -5
expect sample_past_end 1 "argument '--sample': expected 0 \.\. 23 \(samples in shards\), got 24" -- \
  "$infer" --checkpoint good/checkpoint.safetensors --data shards --sample 24
expect batch_train 105 "--batch: Value 2147483647 not in range 1 to 4096" -- \
  "$train" --preset tiny --data shards --out big --batch 2147483647
expect batch_infer 105 "--batch: Value 2147483647 not in range 1 to 4096" -- \
  "$infer" --checkpoint good/checkpoint.safetensors --data shards --batch 2147483647

# ---- 6: two shard files of one participant.
mkdir dup
cp shards/s01.shard shards/s02.shard dup/
cp shards/s01.shard dup/s03.shard
expect duplicate_participant 1 "dup/s03.shard: argument 'participant': expected a participant of no other shard, got 1, the participant of dup/s01.shard too" -- \
  "$train" --preset tiny "${common[@]/shards/dup}" --epochs 1 --out dup_run

# ---- 6: parity labels are checked before they are narrowed: 2^32 is not class 0.
cp "$golden/milmer_tiny/inputs.safetensors" labels.safetensors
"$py" - labels.safetensors <<'EOF'
import struct, sys
from tensors import load, save
header, data = load(sys.argv[1])
begin, _ = header["labels"]["data_offsets"]
struct.pack_into("<q", data, begin, 2**32)
save(sys.argv[1], header, data)
EOF
expect parity_label 1 "argument 'labels\[0\]': expected a class in \[0, 4\), got 4294967296" -- \
  "$parity" --model milmer --config "$golden/milmer_tiny/config.json" \
  --params "$golden/milmer_tiny/params.safetensors" --inputs labels.safetensors --out parity.safetensors

# ---- 6: corrupt checkpoint metadata: the entry and the file are named.
corrupt() {  # corrupt NAME KEY VALUE: a copy of the run "good" with one metadata entry changed
  rm -rf "$1"
  cp -r good "$1"
  "$py" meta.py "$1/checkpoint.safetensors" "$2" "$3"
}
resume=(--preset tiny "${common[@]}" --epochs 2 --lr 2e-3 --resume)
corrupt meta_epoch epoch x1
expect meta_epoch 1 "checkpoint meta_epoch/checkpoint.safetensors: argument 'metadata 'epoch'': expected an integer in \[0, 2\], got 'x1'" -- \
  "$train" "${resume[@]}" --out meta_epoch
corrupt meta_step step 12abc
expect meta_step 1 "checkpoint meta_step/checkpoint.safetensors: argument 'metadata 'step'': expected an integer in \[0, [0-9]+\], got '12abc'" -- \
  "$train" "${resume[@]}" --out meta_step
corrupt meta_history history '[{"record": 1}'
expect meta_history 1 "checkpoint meta_history/checkpoint.safetensors: argument 'metadata 'history'': expected JSON \(as milmer-train writes it\), got '\[\{\"record\": 1\}', which is not JSON" -- \
  "$train" "${resume[@]}" --out meta_history
corrupt meta_wall wall_seconds fast
expect meta_wall 1 "argument 'metadata 'wall_seconds'': expected a finite number, got 'fast'" -- \
  "$train" "${resume[@]}" --out meta_wall
corrupt meta_protocol protocol '{"name": "loso"}'
expect meta_protocol 1 "checkpoint meta_protocol/checkpoint.safetensors: metadata 'protocol': argument 'fold': expected present, got missing" -- \
  "$infer" --checkpoint meta_protocol/checkpoint.safetensors --data shards --split test
corrupt meta_config config '{"swin": '
expect meta_config 1 "checkpoint meta_config/checkpoint.safetensors: argument 'metadata 'config'': expected JSON" -- \
  "$infer" --checkpoint meta_config/checkpoint.safetensors --data shards

# ---- 5: a config that does not fit the shards names the field, the shards' value and its own.
"$py" - good/config.json <<'EOF'
import json, sys
c = json.load(open(sys.argv[1]))
for name, change in (("channels1", ("swin", "num_channels", 1)), ("channels5", ("swin", "num_channels", 5)),
                     ("size", ("swin", "image_size", 64)), ("frames", (None, "frames", 6)),
                     ("eeg", (None, "eeg_channels", 16)), ("classes", (None, "classes", 4))):
    d = json.loads(json.dumps(c))
    section, key, value = change
    (d[section] if section else d)[key] = value
    json.dump(d, open(f"config_{name}.json", "w"))
EOF
cfg=(--data shards --labels deap2-valence --folds 2 --batch 4 --epochs 1 --threads 1)
config_case() {  # config_case NAME PATTERN: training with config_NAME.json ends in PATTERN
  expect "config_$1" 1 "$2" -- "$train" "${cfg[@]}" --config "config_$1.json" --out "run_$1"
}
config_case channels1 "config config_channels1.json: argument 'swin.num_channels': expected 3 \(channels of the shards' RGB frames in shards/s01.shard\), got 1"
config_case channels5 "argument 'swin.num_channels': expected 3 .*, got 5"
config_case size "argument 'swin.image_size': expected 32 \(the shards' frame size, 32x32 in shards/s01.shard.*\), got 64"
config_case frames "argument 'frames': expected at most 4 \(the frames per sample in shards/s01.shard\), got 6"
config_case eeg "argument 'eeg_channels': expected 8 \(the EEG channels per sample in shards/s01.shard\), got 16"
config_case classes "config config_classes.json: argument 'classes': expected 2 \(the classes of --labels deap2-valence\), got 4"
# ... and shards that do not fit a checkpoint's config, before milmer-infer builds the model.
"$make_shards" --out shards_eeg16 --participants 2 --trials 4 --windows 3 --frames 4 \
  --frame-size 32 --eeg-channels 16 --eeg-samples 64 --seed 1 >/dev/null
expect infer_eeg 1 "checkpoint good/checkpoint.safetensors: metadata 'config': argument 'eeg_channels': expected 16 \(the EEG channels per sample in shards_eeg16/s01.shard\), got 8" -- \
  "$infer" --checkpoint good/checkpoint.safetensors --data shards_eeg16

if [ "$failures" -ne 0 ]; then
  echo "$failures case(s) failed"
  exit 1
fi
echo "every misuse case ended in its error"
