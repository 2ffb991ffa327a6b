"""DEAP layout constants, label rules and the shard format, shared by the data tools.

The shard format and the label rules are also implemented in C++ by
include/milmer/data/shards.hpp; docs/data.md describes both. Keep the three in step.
"""

from __future__ import annotations

import csv
import os
import pickle
import struct
import zlib
from pathlib import Path

import numpy as np

# --- DEAP layout (docs/data.md §3, §5) --------------------------------------------------
SFREQ = 128
BASELINE_SAMPLES = 3 * SFREQ  # 384: the 3 s pre-trial baseline
WINDOW_SECONDS = 3
WINDOW_SAMPLES = WINDOW_SECONDS * SFREQ  # 384
MAX_WINDOWS = 20  # 60 s trials
FRAMES_PER_WINDOW = 10
EXCLUDED_PARTICIPANTS = {11: "excluded: missing face videos (as in the paper)"}

# Channels 1-32 in Geneva order, then the peripheral channels.
EEG_CHANNELS = [
    "Fp1", "AF3", "F3", "F7", "FC5", "FC1", "C3", "T7", "CP5", "CP1", "P3", "P7", "PO3",
    "O1", "Oz", "Pz", "Fp2", "AF4", "Fz", "F4", "F8", "FC6", "FC2", "Cz", "C4", "T8",
    "CP6", "CP2", "P4", "P8", "PO4", "O2",
]  # fmt: skip
PERIPHERAL_CHANNELS = ["hEOG", "vEOG", "zEMG", "tEMG", "GSR", "Respiration",
                       "Plethysmograph", "Temperature"]  # fmt: skip
ALL_CHANNELS = EEG_CHANNELS + PERIPHERAL_CHANNELS
N_CHANNELS = 40

RATINGS_COLUMNS = ["Participant_id", "Trial", "Experiment_id", "Start_time", "Valence",
                   "Arousal", "Dominance", "Liking", "Familiarity"]  # fmt: skip


def dat_path(deap: Path, participant: int) -> Path:
    return Path(deap) / "data_preprocessed_python" / f"s{participant:02d}.dat"


def mat_path(deap: Path, participant: int) -> Path:
    return Path(deap) / "data_preprocessed_matlab" / f"s{participant:02d}.mat"


def video_dir(deap: Path, participant: int) -> Path:
    return Path(deap) / "face_video" / f"s{participant:02d}"


def video_path(deap: Path, participant: int, presentation: int) -> Path:
    return video_dir(deap, participant) / f"s{participant:02d}_trial{presentation:02d}.avi"


def load_participant(deap: Path, participant: int) -> tuple[np.ndarray, np.ndarray, Path]:
    """(data (T, 40, N) float64, labels (T, 4) float64, the file read), from the Python
    pickle if present, else the MATLAB file."""
    p = dat_path(deap, participant)
    if p.exists():
        with open(p, "rb") as f:
            d = pickle.load(f, encoding="latin1")
    else:
        p = mat_path(deap, participant)
        if not p.exists():
            raise FileNotFoundError(f"neither {dat_path(deap, participant)} nor {p} exists")
        import scipy.io

        d = scipy.io.loadmat(p)
    data = np.asarray(d["data"], dtype=np.float64)
    labels = np.asarray(d["labels"], dtype=np.float64)
    if data.ndim != 3 or data.shape[1] != N_CHANNELS or labels.shape != (data.shape[0], 4):
        raise ValueError(f"{p}: expected data (T, 40, N) and labels (T, 4), got "
                         f"{data.shape} and {labels.shape}")
    if data.shape[2] < BASELINE_SAMPLES + WINDOW_SAMPLES:
        raise ValueError(f"{p}: trials of {data.shape[2]} samples are shorter than the "
                         f"baseline plus one window ({BASELINE_SAMPLES + WINDOW_SAMPLES})")
    return data, labels, p


def read_ratings(path: Path) -> dict[int, list[dict]]:
    """participant_ratings.csv as {participant: [row, ...]} sorted by presentation Trial."""
    out: dict[int, list[dict]] = {}
    with open(path, newline="") as f:
        reader = csv.DictReader(f)
        missing = [c for c in ("Participant_id", "Trial", "Experiment_id")
                   if c not in (reader.fieldnames or [])]
        if missing:
            raise ValueError(f"{path}: missing columns {missing}; got {reader.fieldnames}")
        for row in reader:
            r = {"participant": int(row["Participant_id"]), "trial": int(row["Trial"]),
                 "experiment_id": int(row["Experiment_id"])}
            for k in ("Valence", "Arousal"):
                if row.get(k) not in (None, ""):
                    r[k.lower()] = float(row[k])
            out.setdefault(r["participant"], []).append(r)
    for rows in out.values():
        rows.sort(key=lambda r: r["trial"])
    return out


# --- labels (the same rules as milmer::data in shards.hpp) --------------------------------
def deap2_label(rating: float) -> int:
    """low (0) < 5 <= high (1)"""
    return 1 if rating >= 5.0 else 0


def deap3_label(rating: float) -> int:
    """low (0) < 3.5 <= medium (1) < 6.5 <= high (2): the integer bands 1-3, 4-6, 7-9
    extended to real-valued ratings."""
    return 0 if rating < 3.5 else (1 if rating < 6.5 else 2)


def deap4_label(valence: float, arousal: float) -> int:
    """0 HAHV, 1 HALV, 2 LAHV, 3 LALV (threshold 5)."""
    if arousal >= 5.0:
        return 0 if valence >= 5.0 else 1
    return 2 if valence >= 5.0 else 3


LABEL_SCHEMES = ["deap2-valence", "deap2-arousal", "deap3-valence", "deap3-arousal", "deap4"]


def labels_for(valence: float, arousal: float) -> list[int]:
    """The five labels in shard order (LABEL_SCHEMES)."""
    return [deap2_label(valence), deap2_label(arousal), deap3_label(valence),
            deap3_label(arousal), deap4_label(valence, arousal)]


# --- shard format (docs/data.md) ----------------------------------------------------------
SHARD_MAGIC = b"MILMERSH"
SHARD_VERSION = 1
HEADER_BYTES = 64
META_BYTES = 44
_HEADER = struct.Struct("<8sIIIIIIIIIIQI")  # up to and including the payload CRC: 60 bytes
_META = struct.Struct("<5i4i2f")  # labels[5], participant, trial, presentation, window, v, a
assert _HEADER.size == 60 and _META.size == META_BYTES


class ShardError(Exception):
    """A shard that is missing, truncated, corrupt or of another version."""


def record_bytes(frames: int, height: int, width: int, channels: int, samples: int) -> int:
    return META_BYTES + 4 * channels * samples + frames * height * width * 3


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class ShardWriter:
    """Streams records into '<path>.tmp'; close() writes the header, fsyncs and renames it
    into place, so the final name only ever holds a complete shard."""

    def __init__(self, path: Path, participant: int, frames: int, height: int, width: int,
                 channels: int, samples: int):
        self.path = Path(path)
        self.tmp = self.path.with_name(self.path.name + ".tmp")
        self.dims = (frames, height, width, channels, samples)
        self.participant = participant
        self.count = 0
        self.crc = 0
        self.f = open(self.tmp, "wb")
        self.f.write(b"\0" * HEADER_BYTES)

    def add(self, labels: list[int], participant: int, trial: int, presentation: int,
            window: int, valence: float, arousal: float, eeg: np.ndarray,
            frames: np.ndarray) -> None:
        f_, h, w, c, s = self.dims
        if participant != self.participant:
            raise ValueError(f"{self.path}: record of participant {participant} in the shard "
                             f"of participant {self.participant}")
        eeg = np.ascontiguousarray(eeg, dtype="<f4")
        frames = np.ascontiguousarray(frames, dtype=np.uint8)
        if eeg.shape != (c, s) or frames.shape != (f_, h, w, 3):
            raise ValueError(f"{self.path}: expected eeg {(c, s)} and frames {(f_, h, w, 3)}, "
                             f"got {eeg.shape} and {frames.shape}")
        bad = np.flatnonzero(~np.isfinite(eeg))
        if bad.size:
            ch, t = divmod(int(bad[0]), s)
            raise ValueError(f"{self.path}: participant {participant}, trial {trial}, window "
                             f"{window}: expected finite EEG values, got {eeg.flat[bad[0]]} at "
                             f"channel {ch}, sample {t} ({bad.size} non-finite values)")
        meta = _META.pack(*labels, participant, trial, presentation, window, valence, arousal)
        for b in (meta, eeg.tobytes(), frames.tobytes()):
            self.f.write(b)
            self.crc = zlib.crc32(b, self.crc)
        self.count += 1

    def close(self) -> None:
        f_, h, w, c, s = self.dims
        rb = record_bytes(*self.dims)
        head = _HEADER.pack(SHARD_MAGIC, SHARD_VERSION, HEADER_BYTES, self.count, f_, h, w, c, s,
                            self.participant, rb, self.count * rb, self.crc)
        head += struct.pack("<I", zlib.crc32(head))
        self.f.seek(0)
        self.f.write(head)
        self.f.flush()
        os.fsync(self.f.fileno())
        self.f.close()
        os.replace(self.tmp, self.path)
        _fsync_dir(self.path.parent)

    def abort(self) -> None:
        if not self.f.closed:
            self.f.close()
        self.tmp.unlink(missing_ok=True)


def read_shard_header(path: Path) -> dict:
    """Validates the header (magic, version, header CRC, sizes, file size)."""
    path = Path(path)
    if not path.is_file():
        raise ShardError(f"{path}: no such file")
    size = path.stat().st_size
    with open(path, "rb") as f:
        b = f.read(HEADER_BYTES)
    if len(b) < 12:
        raise ShardError(f"{path}: truncated: {size} bytes, header needs {HEADER_BYTES}")
    if b[:8] != SHARD_MAGIC:
        raise ShardError(f"{path}: bad magic {b[:8]!r}, expected {SHARD_MAGIC!r}")
    version = struct.unpack_from("<I", b, 8)[0]
    if version != SHARD_VERSION:
        raise ShardError(f"{path}: version {version}, expected {SHARD_VERSION}")
    if len(b) < HEADER_BYTES:
        raise ShardError(f"{path}: truncated: {size} bytes, header needs {HEADER_BYTES}")
    if zlib.crc32(b[:60]) != struct.unpack_from("<I", b, 60)[0]:
        raise ShardError(f"{path}: header checksum mismatch (header corrupt)")
    (_, _, hb, n, frames, height, width, channels, samples, participant, rb, payload,
     crc) = _HEADER.unpack_from(b)
    if hb != HEADER_BYTES or rb != record_bytes(frames, height, width, channels, samples) \
            or payload != n * rb:
        raise ShardError(f"{path}: inconsistent sizes in header")
    if size != HEADER_BYTES + payload:
        kind = "truncated" if size < HEADER_BYTES + payload else "trailing data"
        raise ShardError(f"{path}: {kind}: {size} bytes, expected {HEADER_BYTES + payload}")
    return {"version": version, "samples": n, "frames": frames, "height": height,
            "width": width, "eeg_channels": channels, "eeg_samples": samples,
            "participant": participant, "record_bytes": rb, "payload_bytes": payload,
            "payload_crc": crc}


def verify_shard(path: Path) -> dict:
    """read_shard_header plus the payload CRC."""
    h = read_shard_header(path)
    crc = 0
    with open(path, "rb") as f:
        f.seek(HEADER_BYTES)
        while chunk := f.read(1 << 24):
            crc = zlib.crc32(chunk, crc)
    if crc != h["payload_crc"]:
        raise ShardError(f"{path}: payload checksum mismatch (payload corrupt)")
    return h


def read_shard(path: Path) -> dict:
    """A whole (verified) shard as numpy arrays: meta fields, eeg (N, C, S), frames
    (N, F, H, W, 3). For tests and inspection; the C++ reader streams instead."""
    h = verify_shard(path)
    n, rb = h["samples"], h["record_bytes"]
    c, s = h["eeg_channels"], h["eeg_samples"]
    fshape = (h["frames"], h["height"], h["width"], 3)
    raw = np.fromfile(path, dtype=np.uint8, offset=HEADER_BYTES).reshape(n, rb)
    meta = np.frombuffer(raw[:, :META_BYTES].tobytes(), dtype="<i4").reshape(n, 11)
    out = {"header": h,
           "labels": meta[:, :5].copy(),
           "participant": meta[:, 5].copy(), "trial": meta[:, 6].copy(),
           "presentation": meta[:, 7].copy(), "window": meta[:, 8].copy(),
           "valence": meta[:, 9].copy().view("<f4"), "arousal": meta[:, 10].copy().view("<f4"),
           "eeg": np.frombuffer(raw[:, META_BYTES:META_BYTES + 4 * c * s].tobytes(),
                                dtype="<f4").reshape(n, c, s),
           "frames": raw[:, META_BYTES + 4 * c * s:].reshape((n,) + fshape)}
    return out
