#!/usr/bin/env bash
# Crafted checkpoints and shards against milmer-infer under a 2 GB address-space cap: each
# must end within seconds in an error that names the file (and the field or tensor), never
# in std::bad_alloc, a signal or a timeout. A normal run under the same cap must succeed
# first, so that the cap itself is not what fails.
#
#   tests/test_bad_files.sh MILMER_INFER MILMER_TRAIN MILMER_SYNTHETIC_SHARDS WORK_DIR [PYTHON]
set -euo pipefail
infer=$1
train=$2
make_shards=$3
work=$4
py=${5:-python3}
cap_kb=2000000  # ulimit -v: 2 GB of address space
max_seconds=20

rm -rf "$work"
mkdir -p "$work"
"$make_shards" --out "$work/shards" --participants 2 --trials 4 --windows 2 --frames 4 \
  --frame-size 32 --eeg-channels 8 --eeg-samples 64 --seed 1 >/dev/null
"$train" --preset tiny --data "$work/shards" --labels deap2-valence --protocol subject-dependent \
  --folds 2 --epochs 1 --batch 4 --seed 7 --threads 1 --out "$work/run" >"$work/train.out" 2>&1 ||
  { echo "training the checkpoint failed"; cat "$work/train.out"; exit 1; }
ck=$work/run/checkpoint.safetensors

# capped LOG COMMAND...: runs COMMAND under the cap and a timeout; sets rc and secs.
capped() {
  local log=$1
  shift
  local t0=$EPOCHREALTIME
  rc=0
  (ulimit -v "$cap_kb" && exec timeout 60 "$@") >"$log" 2>&1 || rc=$?
  secs=$(awk -v a="$t0" -v b="$EPOCHREALTIME" 'BEGIN { printf "%.1f", b - a }')
}

capped "$work/normal.out" "$infer" --checkpoint "$ck" --data "$work/shards" --threads 1
[ "$rc" -eq 0 ] || { echo "a normal milmer-infer run fails under the cap (rc $rc)"; cat "$work/normal.out"; exit 1; }
echo "normal run under a ${cap_kb} KB cap: rc 0 in ${secs} s"

# The crafted files (bad/*.safetensors, data-*/ directories of shards).
"$py" - "$ck" "$work/shards" "$work" <<'EOF'
import json, shutil, struct, sys, zlib
from pathlib import Path

ck, shards, work = Path(sys.argv[1]), Path(sys.argv[2]), Path(sys.argv[3])
bad = work / "bad"
bad.mkdir()

def read_st(path):
    raw = path.read_bytes()
    n = int.from_bytes(raw[:8], "little")
    return json.loads(raw[8:8 + n]), bytearray(raw[8 + n:])

def write_st(path, header, data):
    text = json.dumps(header).encode()
    text += b" " * (-len(text) % 8)
    path.write_bytes(len(text).to_bytes(8, "little") + text + bytes(data))

header, data = read_st(ck)

def with_config(name, **changes):
    h = json.loads(json.dumps(header))
    cfg = json.loads(h["__metadata__"]["config"])
    cfg.update(changes)
    h["__metadata__"]["config"] = json.dumps(cfg)
    write_st(bad / name, h, data)

with_config("fusion_2e8.safetensors", fusion_layers=200_000_000)  # 760 KB asking for 5 GB
with_config("ffn_1m.safetensors", ffn_dim=1 << 20)  # in range; 136 M parameters; tensors of 64

# A header length of 2^62 in an otherwise intact file.
raw = bytearray(ck.read_bytes())
raw[:8] = (1 << 62).to_bytes(8, "little")
(bad / "header_length.safetensors").write_bytes(raw)

# One flipped bit in head.weight's data.
d = bytearray(data)
d[header["head.weight"]["data_offsets"][0] + 5] ^= 0x08
write_st(bad / "flipped.safetensors", header, d)

# Two tensors of one shape with their offsets swapped.
h = json.loads(json.dumps(header))
a, b = "fusion.layers.0.norm1.bias", "fusion.layers.0.norm1.weight"
h[a]["data_offsets"], h[b]["data_offsets"] = h[b]["data_offsets"], h[a]["data_offsets"]
write_st(bad / "swapped.safetensors", h, data)

# Shards: each bad one next to copies of the good ones.
HEADER = struct.Struct("<8sIIIIIIIIIIQI")

def seal(b):
    b[56:60] = struct.pack("<I", zlib.crc32(bytes(b[64:])))
    b[60:64] = struct.pack("<I", zlib.crc32(bytes(b[:60])))
    return bytes(b)

def data_dir(name, shard_bytes, file_name="s99.shard"):
    d = work / f"data-{name}"
    shutil.copytree(shards, d)
    (d / file_name).write_bytes(shard_bytes)
    (work / f"{name}.file").write_text(str(d / file_name))

# 64 bytes claiming 4.28e9-byte records (1000 frames of 1194 x 1194) and no samples.
rb = 44 + 4 * 32 * 384 + 1000 * 1194 * 1194 * 3
data_dir("huge-record", seal(bytearray(
    HEADER.pack(b"MILMERSH", 1, 64, 0, 1000, 1194, 1194, 32, 384, 99, rb, 0, 0) + b"\0" * 4)))
# 64 bytes claiming 4e9 samples of the real size.
rb = 44 + 4 * 8 * 64 + 4 * 32 * 32 * 3
data_dir("huge-count", seal(bytearray(
    HEADER.pack(b"MILMERSH", 1, 64, 4_000_000_000, 4, 32, 32, 8, 64, 99, rb, 4_000_000_000 * rb,
                0) + b"\0" * 4)))
# A real shard with one infinite EEG value in record 2 (channel 3, sample 5), CRCs resealed as
# a writer without the finiteness check would have.
first = sorted(shards.glob("*.shard"))[0]
s = bytearray(first.read_bytes())
off = 64 + 2 * rb
participant, trial, _, window = struct.unpack_from("<4i", s, off + 20)
struct.pack_into("<f", s, off + 44 + 4 * (3 * 64 + 5), float("inf"))
data_dir("inf-eeg", seal(s), first.name)
(work / "inf-eeg.sample").write_text(f"participant {participant}, trial {trial}, window {window}")
EOF

failures=0
# refused NAME LOG PATTERN...: the last capped run must have failed cleanly, naming each pattern.
refused() {
  local name=$1 log=$2
  shift 2
  local why=""
  if [ "$rc" -eq 124 ] || [ "$rc" -eq 137 ]; then
    why="timed out"
  elif [ "$rc" -gt 128 ]; then
    why="killed by signal $((rc - 128))"
  elif [ "$rc" -ne 1 ]; then
    why="exit status $rc, expected 1"
  elif grep -q -e "bad_alloc" -e "terminate called" "$log"; then
    why="an out-of-memory error instead of a check"
  elif ! grep -q "milmer-infer: error: " "$log"; then
    why="no error message"
  elif awk -v s="$secs" -v m="$max_seconds" 'BEGIN { exit !(s > m) }'; then
    why="took ${secs} s (more than ${max_seconds} s)"
  fi
  for pattern in "$@"; do
    [ -n "$why" ] && break
    grep -qF -- "$pattern" "$log" || why="the message does not say: $pattern"
  done
  if [ -n "$why" ]; then
    echo "FAIL $name: $why"
    sed 's/^/    /' "$log" | tail -5
    failures=$((failures + 1))
  else
    echo "ok   $name: rc $rc in ${secs} s: $(grep -o 'error: .*' "$log" | cut -c8-200)"
  fi
}

for case in fusion_2e8:"argument 'fusion_layers': expected in [1, 1024], got 200000000" \
  ffn_1m:"fusion.layers.0.linear1.bias is F32 [64], expected F32 [1048576]" \
  header_length:"header length" \
  flipped:"argument 'head.weight': expected CRC-32" \
  swapped:"argument 'fusion.layers.0.norm1.bias': expected CRC-32"; do
  name=${case%%:*}
  file=$work/bad/$name.safetensors
  capped "$work/$name.out" "$infer" --checkpoint "$file" --data "$work/shards" --threads 1
  refused "$name" "$work/$name.out" "$file" "${case#*:}"
done

for case in huge-record:"argument 'record bytes': expected at most 1073741824" \
  huge-count:"(truncated)" \
  inf-eeg:"expected finite EEG values, got inf at channel 3, sample 5 of $(cat "$work/inf-eeg.sample")"; do
  name=${case%%:*}
  file=$(cat "$work/$name.file")
  capped "$work/$name.out" "$infer" --checkpoint "$ck" --data "$work/data-$name" --threads 1
  refused "$name" "$work/$name.out" "$file" "${case#*:}"
done

[ "$failures" -eq 0 ] || { echo "$failures crafted file(s) not refused cleanly"; exit 1; }
echo "every crafted file was refused under the ${cap_kb} KB cap, naming the file"
