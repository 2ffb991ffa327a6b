#!/usr/bin/env python3
"""Writes a small synthetic dataset in DEAP's exact on-disk formats.

DEAP itself is under an academic EULA and may never be committed; tests and the CPU demo
run on this instead. What it writes (see docs/data.md):

  OUT/data_preprocessed_python/sXX.dat   pickle protocol 2 of {"data": (T, 40, N) float64,
                                          "labels": (T, 4) float64}, rows in Experiment_id
                                          order, N = 384 baseline samples + seconds * 128
                                          (real DEAP: 60 s, N = 8064)
  OUT/data_preprocessed_matlab/sXX.mat   the same arrays, with --matlab
  OUT/face_video/sXX/sXX_trialYY.avi     MJPEG video, YY = presentation order
  OUT/participant_ratings.csv            DEAP's columns

Both modalities carry the labels: valence raises occipito-parietal alpha (10 Hz) power and
the face's brightness; arousal raises fronto-central beta (20 Hz) power, warms the face's
colour (red up, blue down) and enlarges and speeds up the face in the frame. The face is a
real photograph shipped with scikit-image (skimage.data.astronaut), so a face detector
finds it. EEG is common-average referenced
and carries blinks and saccades that leak from the EOG channels into frontal channels, so
ICA has something to remove.

Deliberate defects (unless --no-defects), so the preparation tool's skip paths run:
  - the first participant's last presented trial has no video;
  - the second participant's trial 2 video is truncated to 2 KB (unreadable);
  - in the first participant's trial 1 the face is gone for seconds 3-6 (window 1 has no
    face to detect), and every trial has a short look-away (frames without a face).
"""

from __future__ import annotations

import argparse
import csv
import os
import pickle
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import deap_common as dc  # noqa: E402

VIDEO_W, VIDEO_H = 320, 240
QUADRANTS = [(1, 1), (0, 1), (1, 0), (0, 0)]  # (high valence, high arousal): HAHV HALV LAHV LALV


def face_template() -> np.ndarray:
    """Head and shoulders of the astronaut photograph (RGB uint8)."""
    from skimage import data

    img = data.astronaut()
    return np.ascontiguousarray(img[10:290, 110:350])


def draw_ratings(rng: np.random.Generator, trials: int) -> np.ndarray:
    """(trials, 4): valence, arousal, dominance, liking on 1..9 with two decimals; the four
    quadrants take turns so every class appears."""
    order = rng.permutation(trials) % 4
    out = np.empty((trials, 4))
    for t, q in enumerate(order):
        hv, ha = QUADRANTS[q]
        out[t, 0] = rng.uniform(5.0, 9.0) if hv else rng.uniform(1.0, 4.99)
        out[t, 1] = rng.uniform(5.0, 9.0) if ha else rng.uniform(1.0, 4.99)
        out[t, 2:] = rng.uniform(1.0, 9.0, size=2)
    return np.round(out, 2)


def make_eeg(rng: np.random.Generator, valence: float, arousal: float,
             n: int) -> np.ndarray:
    """(40, n) float64 in microvolts for one trial."""
    from scipy.signal import lfilter

    t = np.arange(n) / dc.SFREQ
    x = np.zeros((dc.N_CHANNELS, n))
    # Background: coloured noise per channel.
    x[:32] = lfilter([1.0], [1.0, -0.9], rng.normal(0.0, 3.0, (32, n)), axis=1)
    idx = {name: i for i, name in enumerate(dc.EEG_CHANNELS)}
    alpha_amp = 2.0 + 10.0 * (valence - 1.0) / 8.0
    beta_amp = 1.0 + 8.0 * (arousal - 1.0) / 8.0
    for name in ("P3", "P7", "PO3", "O1", "Oz", "Pz", "P4", "P8", "PO4", "O2"):
        ph = rng.uniform(0, 2 * np.pi)
        f = 10.0 + rng.normal(0, 0.3)
        x[idx[name]] += alpha_amp * np.sin(2 * np.pi * f * t + ph)
    for name in ("F3", "F4", "Fz", "FC1", "FC2", "FC5", "FC6", "C3", "C4", "Cz"):
        ph = rng.uniform(0, 2 * np.pi)
        f = 20.0 + rng.normal(0, 0.5)
        x[idx[name]] += beta_amp * np.sin(2 * np.pi * f * t + ph)
    # EOG: blinks (vertical) and saccades (horizontal), leaking into frontal channels.
    veog = np.zeros(n)
    for onset in np.cumsum(rng.exponential(2.5, size=int(n / dc.SFREQ) + 2)):
        veog += 120.0 * np.exp(-0.5 * ((t - onset) / 0.08) ** 2)
    # Saccades: sparse steps that decay slowly (the amplifier's high-pass).
    heog = lfilter([1.0], [1.0, -0.995], rng.normal(0, 40.0, n) * (rng.random(n) < 0.01))
    for name, w in (("Fp1", 0.6), ("Fp2", 0.6), ("AF3", 0.4), ("AF4", 0.4), ("F7", 0.25),
                    ("F8", 0.25), ("F3", 0.15), ("F4", 0.15), ("Fz", 0.2)):
        x[idx[name]] += w * veog
    x[idx["F7"]] += 0.3 * heog
    x[idx["F8"]] -= 0.3 * heog
    # DEAP's EEG is common-average referenced (rank 31).
    x[:32] -= x[:32].mean(axis=0, keepdims=True)
    x[32] = heog + rng.normal(0, 2.0, n)
    x[33] = veog + rng.normal(0, 2.0, n)
    x[34:36] = rng.normal(0, 5.0, (2, n))  # EMG
    x[36] = 5000 + np.cumsum(rng.normal(0, 1.0, n)) + 200 * (arousal - 5)  # GSR
    x[37] = 100 * np.sin(2 * np.pi * 0.25 * t)  # respiration
    x[38] = 50 * np.sin(2 * np.pi * 1.2 * t)  # plethysmograph
    x[39] = 31.0 + 0.01 * rng.normal(0, 1, n)  # temperature
    return x


def write_video(path: Path, rng: np.random.Generator, template: np.ndarray, valence: float,
                arousal: float, seconds: int, fps: int, no_face: tuple[float, float] | None):
    """One face video: the photograph moved, scaled and relit per frame. Brightness follows
    valence; colour warmth, size and motion follow arousal. Frames inside the no_face
    interval (seconds) and during a short random look-away show only the background."""
    import cv2

    brightness = 0.55 + 0.7 * (valence - 1.0) / 8.0
    size = 0.75 + 0.4 * (arousal - 1.0) / 8.0
    motion = 4.0 + 14.0 * (arousal - 1.0) / 8.0
    warmth = 0.3 * (arousal - 5.0) / 4.0
    tint = np.array([1.0 + warmth, 1.0, 1.0 - warmth], dtype=np.float32)
    yy, xx = np.mgrid[0:VIDEO_H, 0:VIDEO_W]
    background = (60 + 40 * xx / VIDEO_W + 20 * yy / VIDEO_H).astype(np.float32)
    background = np.repeat(background[..., None], 3, axis=2)
    away_start = rng.uniform(0.5, max(0.6, seconds - 1.0))
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), fps,
                             (VIDEO_W, VIDEO_H))
    if not writer.isOpened():
        raise RuntimeError(f"cannot write {path}: OpenCV has no MJPG writer")
    phase = rng.uniform(0, 2 * np.pi, size=3)
    # Sensor noise: a few fields drawn once and picked at random per frame (drawing a
    # fresh field for every frame would dominate the run time).
    noise = rng.normal(0, 3.0, (6,) + background.shape).astype(np.float32)
    picks = rng.integers(0, len(noise), size=seconds * fps)
    for i in range(seconds * fps):
        t = i / fps
        frame = background + noise[picks[i]]
        hidden = (no_face is not None and no_face[0] <= t < no_face[1]) or \
            (away_start <= t < away_start + 0.3)
        if not hidden:
            s = size * (1.0 + 0.04 * np.sin(2 * np.pi * 0.3 * t + phase[0]))
            h = int(template.shape[0] * s * 0.8)
            w = int(template.shape[1] * s * 0.8)
            face = cv2.resize(template, (w, h), interpolation=cv2.INTER_AREA).astype(np.float32)
            face *= brightness * (1.0 + 0.05 * np.sin(2 * np.pi * 0.5 * t + phase[1]))
            face *= tint  # survives the face crop, unlike size and position
            cx = VIDEO_W / 2 + motion * np.sin(2 * np.pi * 0.4 * t + phase[2])
            cy = VIDEO_H / 2 + 0.5 * motion * np.cos(2 * np.pi * 0.3 * t + phase[2])
            x0, y0 = int(cx - w / 2), int(cy - h / 2)
            # Paste with clipping at the frame border.
            fx0, fy0 = max(0, -x0), max(0, -y0)
            x0c, y0c = max(0, x0), max(0, y0)
            x1c, y1c = min(VIDEO_W, x0 + w), min(VIDEO_H, y0 + h)
            frame[y0c:y1c, x0c:x1c] = face[fy0:fy0 + y1c - y0c, fx0:fx0 + x1c - x0c]
        rgb = np.clip(frame, 0, 255).astype(np.uint8)
        writer.write(cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    writer.release()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", required=True, type=Path, help="directory to create")
    ap.add_argument("--participants", type=int, default=3)
    ap.add_argument("--participant-ids", type=str, default=None,
                    help="comma-separated ids instead of 1..N (e.g. 1,2,11)")
    ap.add_argument("--trials", type=int, default=4, help="trials per participant (DEAP: 40)")
    ap.add_argument("--seconds", type=int, default=12,
                    help="trial length after the 3 s baseline (DEAP: 60); a multiple of 3")
    ap.add_argument("--fps", type=int, default=25)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--matlab", action="store_true", help="also write data_preprocessed_matlab")
    ap.add_argument("--no-defects", action="store_true",
                    help="no missing or broken videos, no faceless window")
    args = ap.parse_args(argv)
    if args.seconds < 3 or args.seconds > 60:
        ap.error("--seconds must be in 3..60")
    if args.trials < 1:
        ap.error("--trials must be >= 1")
    ids = ([int(s) for s in args.participant_ids.split(",")] if args.participant_ids
           else list(range(1, args.participants + 1)))

    t0 = time.time()
    out: Path = args.out
    (out / "data_preprocessed_python").mkdir(parents=True, exist_ok=True)
    if args.matlab:
        (out / "data_preprocessed_matlab").mkdir(parents=True, exist_ok=True)
    template = face_template()
    n = dc.BASELINE_SAMPLES + args.seconds * dc.SFREQ
    rows = []
    defects = []
    for pi, p in enumerate(ids):
        rng = np.random.default_rng([args.seed, p])
        ratings = draw_ratings(rng, args.trials)  # row e-1 = Experiment_id e
        data = np.stack([make_eeg(rng, ratings[e, 0], ratings[e, 1], n)
                         for e in range(args.trials)])
        labels = ratings.copy()
        with open(dc.dat_path(out, p), "wb") as f:
            pickle.dump({"data": data, "labels": labels}, f, protocol=2)
        if args.matlab:
            import scipy.io

            scipy.io.savemat(dc.mat_path(out, p), {"data": data, "labels": labels})
        # Presentation order: a permutation of the videos, as in DEAP.
        experiment_of = rng.permutation(args.trials) + 1  # experiment_of[presentation-1]
        vdir = dc.video_dir(out, p)
        vdir.mkdir(parents=True, exist_ok=True)
        for trial in range(1, args.trials + 1):
            e = int(experiment_of[trial - 1])
            v, a = ratings[e - 1, 0], ratings[e - 1, 1]
            rows.append({"Participant_id": p, "Trial": trial, "Experiment_id": e,
                         "Start_time": 2000000 + 90000000 * trial, "Valence": v,
                         "Arousal": a, "Dominance": ratings[e - 1, 2],
                         "Liking": ratings[e - 1, 3],
                         "Familiarity": int(rng.integers(1, 6))})
            path = dc.video_path(out, p, trial)
            defect_free = args.no_defects
            if not defect_free and pi == 0 and trial == args.trials and args.trials > 1:
                defects.append(f"missing video {path}")
                continue
            no_face = (3.0, 6.0) if (not defect_free and pi == 0 and trial == 1
                                     and args.seconds >= 6) else None
            if no_face:
                defects.append(f"no face in seconds 3-6 of {path}")
            write_video(path, rng, template, v, a, args.seconds, args.fps, no_face)
            if not defect_free and pi == min(1, len(ids) - 1) and trial == 2:
                with open(path, "r+b") as f:
                    f.truncate(2048)
                defects.append(f"truncated video {path}")
    with open(out / "participant_ratings.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=dc.RATINGS_COLUMNS)
        w.writeheader()
        w.writerows(rows)
    print(f"wrote {len(ids)} participants x {args.trials} trials x {args.seconds} s "
          f"({n} EEG samples per trial, {args.fps} fps video) to {out} "
          f"in {time.time() - t0:.1f} s")
    for d in defects:
        print(f"  deliberate defect: {d}")
    return 0


if __name__ == "__main__":
    os.environ.setdefault("OPENCV_LOG_LEVEL", "ERROR")
    sys.exit(main())
