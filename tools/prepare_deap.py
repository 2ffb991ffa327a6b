#!/usr/bin/env python3
"""Prepares DEAP (or synthetic DEAP-format data) into milmer shards, one per participant.

  python tools/prepare_deap.py --deap DEAP_DIR --out SHARD_DIR [--workers N]
      [--frame-size 224] [--participants 1 2 3] [--no-ica]

DEAP_DIR holds data_preprocessed_python/ (or data_preprocessed_matlab/), face_video/ and
participant_ratings.csv. Per participant (docs/data.md has the details):
  EEG   1-50 Hz zero-phase FIR band-pass (MNE, per trial), then FastICA over all its trials
        with the components that correlate with hEOG / vEOG (channels 33-34) removed;
        channels 1-32, 3 s windows after the 3 s baseline.
  faces MediaPipe BlazeFace on 10 evenly spaced frames per window: first detection, box
        +10 % per side, clamped, padded square (black, centred), resized to frame-size.
  labels DEAP-2 / DEAP-3 for valence and arousal, DEAP-4 (tools/deap_common.py).
Writes SHARD_DIR/sXX.shard (atomically), sXX.json (what was kept and skipped, and why) and
manifest.json. Participant 11 is excluded. A re-run skips participants whose shard exists
and verifies; a shard that fails verification is prepared again.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import deap_common as dc  # noqa: E402

FORMAT_NOTE = "milmer shard v1"


# --- EEG ----------------------------------------------------------------------------------
def preprocess_eeg(data, use_ica: bool) -> tuple:
    """data (T, 40, N) -> cleaned EEG (T, 32, N) float64 and a note on what ICA did."""
    import warnings

    import mne
    import numpy as np

    mne.set_log_level("ERROR")
    t, _, n = data.shape
    info = mne.create_info(dc.EEG_CHANNELS + ["hEOG", "vEOG"], dc.SFREQ,
                           ["eeg"] * 32 + ["eog"] * 2)
    # One Raw per trial, concatenated: the "edge" boundaries make raw.filter band-pass each
    # continuous trial on its own (63 s in DEAP; the 423-tap filter is longer than a 3 s
    # window, so filtering windows would be wrong), and ICA then sees all trials.
    # Volts for MNE (DEAP stores microvolts). EOG channels are filtered too, for scoring.
    raw = mne.concatenate_raws([mne.io.RawArray(data[i, :34] * 1e-6, info, verbose=False)
                                for i in range(t)])
    raw.filter(1.0, 50.0, picks=["eeg", "eog"], method="fir", phase="zero",
               fir_window="hamming", fir_design="firwin", skip_by_annotation="edge",
               verbose=False)
    note = {"ica": "off (--no-ica)"}
    if use_ica:
        ica = mne.preprocessing.ICA(method="fastica", random_state=0, max_iter="auto")
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            ica.fit(raw, picks="eeg", verbose=False)
        converged = not any("did not converge" in str(w.message) for w in caught)
        bads, _ = ica.find_bads_eog(raw, ch_name=["hEOG", "vEOG"], verbose=False)
        ica.exclude = sorted(int(b) for b in bads)
        ica.apply(raw, verbose=False)
        note = {"ica": "fastica", "components": int(ica.n_components_),
                "converged": converged, "excluded": ica.exclude}
    cleaned = raw.get_data(picks="eeg").reshape(32, t, n).transpose(1, 0, 2) * 1e6
    return cleaned, note


# --- faces --------------------------------------------------------------------------------
def crop_face(rgb, detection, size: int):
    """The first detection's box, +10 % per side, clamped, padded to a centred square with
    black, resized to size x size. None when the box is empty after clamping."""
    import cv2
    import numpy as np

    h, w = rgb.shape[:2]
    bb = detection.location_data.relative_bounding_box
    bw, bh = bb.width * w, bb.height * h
    x0 = int(np.floor(max(0.0, bb.xmin * w - 0.1 * bw)))
    y0 = int(np.floor(max(0.0, bb.ymin * h - 0.1 * bh)))
    x1 = int(np.ceil(min(float(w), bb.xmin * w + 1.1 * bw)))
    y1 = int(np.ceil(min(float(h), bb.ymin * h + 1.1 * bh)))
    if x1 <= x0 or y1 <= y0:
        return None
    crop = rgb[y0:y1, x0:x1]
    side = max(crop.shape[0], crop.shape[1])
    square = np.zeros((side, side, 3), dtype=np.uint8)
    oy, ox = (side - crop.shape[0]) // 2, (side - crop.shape[1]) // 2
    square[oy:oy + crop.shape[0], ox:ox + crop.shape[1]] = crop
    interp = cv2.INTER_AREA if side > size else cv2.INTER_LINEAR
    return cv2.resize(square, (size, size), interpolation=interp)


def frame_times(n_windows: int) -> list[list[float]]:
    """Times (s from the video start = music onset) of the frames of each window: the
    centres of F equal slices of [3k, 3k + 3)."""
    f = dc.FRAMES_PER_WINDOW
    return [[dc.WINDOW_SECONDS * (k + (j + 0.5) / f) for j in range(f)]
            for k in range(n_windows)]


def read_frames(path: Path, wanted: set[int]):
    """Decodes the video sequentially and returns ({frame index: RGB}, fps, frames decoded)
    for the wanted indices. fps is read from the file (DEAP's sources disagree)."""
    import cv2

    cap = cv2.VideoCapture(str(path))
    if not cap.isOpened():
        return None, 0.0, 0
    fps = cap.get(cv2.CAP_PROP_FPS)
    got = {}
    i = 0
    last = max(wanted) if wanted else -1
    try:
        while i <= last:
            if i in wanted:
                ok, bgr = cap.read()
                if not ok:
                    break
                got[i] = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
            elif not cap.grab():
                break
            i += 1
    finally:
        cap.release()
    return got, fps, i


def video_fps(path: Path) -> float:
    import cv2

    cap = cv2.VideoCapture(str(path))
    try:
        return cap.get(cv2.CAP_PROP_FPS) if cap.isOpened() else 0.0
    finally:
        cap.release()


# --- one participant ----------------------------------------------------------------------
def prepare_participant(job: dict) -> dict:
    """Writes one shard; returns what was kept and skipped, with reasons naming files."""
    import cv2
    import mediapipe as mpipe
    import numpy as np
    from tqdm import tqdm

    cv2.setNumThreads(1)
    p, deap, out = job["participant"], Path(job["deap"]), Path(job["out"])
    size, rows = job["frame_size"], job["rows"]
    t0 = time.time()
    res = {"participant": p, "samples": 0, "skipped_trials": [], "skipped_windows": [],
           "frames_sampled": 0, "frames_with_face": 0, "frames_substituted": 0}

    data, labels, src = dc.load_participant(deap, p)
    res["eeg_file"] = str(src)
    n_trials, _, n_samples = data.shape
    eeg_windows = min(dc.MAX_WINDOWS, (n_samples - dc.BASELINE_SAMPLES) // dc.WINDOW_SAMPLES)
    eeg, res["eeg"] = preprocess_eeg(data, job["ica"])
    eeg = eeg.astype(np.float32)

    shard = out / f"s{p:02d}.shard"
    writer = dc.ShardWriter(shard, p, dc.FRAMES_PER_WINDOW, size, size, 32, dc.WINDOW_SAMPLES)
    bar = tqdm(rows, desc=f"s{p:02d}", position=job["slot"], leave=True, unit="trial",
               dynamic_ncols=True)
    trials_kept = set()
    try:
        detector = mpipe.solutions.face_detection.FaceDetection(model_selection=0,
                                                                min_detection_confidence=0.5)
        # Records stream into the shard in presentation order, so memory holds one trial.
        for row in bar:  # counts a trial once its body is done
            trial, exp = row["trial"], row["experiment_id"]
            video = dc.video_path(deap, p, trial)

            def skip_trial(reason: str, video=video, trial=trial, exp=exp):
                res["skipped_trials"].append({"trial": trial, "experiment_id": exp,
                                              "file": str(video), "reason": reason})

            if not 1 <= exp <= n_trials:
                skip_trial(f"Experiment_id {exp} has no row in {src}")
                continue
            if not video.exists():
                skip_trial("missing video")
                continue
            fps = video_fps(video)
            if not fps or fps != fps or fps <= 0:
                skip_trial("unreadable video (no frame rate; truncated or not a video?)")
                continue
            times = frame_times(eeg_windows)
            index = [[int(t * fps) for t in w] for w in times]
            frames, _, decoded = read_frames(video, {i for w in index for i in w})
            if not frames:
                skip_trial(f"unreadable video (no frame decodes; {video.stat().st_size} "
                           f"bytes, truncated?)")
                continue
            v, a = float(labels[exp - 1, 0]), float(labels[exp - 1, 1])
            lab = dc.labels_for(v, a)
            for k, idxs in enumerate(index):
                crops = []
                for i in idxs:
                    img = frames.get(i)
                    crop = None
                    if img is not None:
                        r = detector.process(img)
                        if r.detections:
                            crop = crop_face(img, r.detections[0], size)
                    crops.append(crop)
                res["frames_sampled"] += len(crops)
                have = [j for j, c in enumerate(crops) if c is not None]
                res["frames_with_face"] += len(have)
                if not have:
                    past_end = all(i not in frames for i in idxs)
                    reason = (f"video ends after {decoded / fps:.1f} s" if past_end
                              else "no face detected in any of its frames")
                    res["skipped_windows"].append({
                        "trial": trial, "experiment_id": exp, "window": k,
                        "seconds": [dc.WINDOW_SECONDS * k, dc.WINDOW_SECONDS * (k + 1)],
                        "file": str(video), "reason": reason})
                    continue
                for j in range(len(crops)):
                    if crops[j] is None:  # nearest frame with a face, earlier on ties
                        crops[j] = crops[min(have, key=lambda h, j=j: (abs(h - j), h))]
                        res["frames_substituted"] += 1
                s0 = dc.BASELINE_SAMPLES + dc.WINDOW_SAMPLES * k
                writer.add(lab, p, exp, trial, k, v, a, eeg[exp - 1, :, s0:s0 + dc.WINDOW_SAMPLES],
                           np.stack(crops))
                trials_kept.add(exp)
            del frames
        detector.close()
        writer.close()
    except BaseException:
        writer.abort()
        raise
    finally:
        bar.close()
    res["samples"] = writer.count
    res["trials_kept"] = len(trials_kept)
    res["shard"] = str(shard)
    res["seconds"] = round(time.time() - t0, 2)
    return res


# --- driver -------------------------------------------------------------------------------
def write_json_atomic(path: Path, obj) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w") as f:
        json.dump(obj, f, indent=1)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def existing_ok(shard: Path, sidecar: Path, frame_size: int, ica: bool):
    """The sidecar of a shard that verifies and matches the requested options, else None
    and the reason."""
    if not shard.exists():
        return None, None
    try:
        h = dc.verify_shard(shard)
    except dc.ShardError as e:
        return None, str(e)
    if (h["height"], h["width"]) != (frame_size, frame_size):
        return None, f"{shard} has {h['height']}x{h['width']} frames, {frame_size} requested"
    try:
        side = json.loads(sidecar.read_text())
    except (OSError, ValueError):
        return None, f"{sidecar} missing or unreadable"
    if side.get("options", {}).get("ica") != ica:
        return None, f"{shard} was prepared with ica={side.get('options', {}).get('ica')}"
    return side, None


def _init_worker(lock, threads: int) -> None:
    from tqdm import tqdm

    tqdm.set_lock(lock)
    try:
        from threadpoolctl import threadpool_limits

        threadpool_limits(threads)
    except ImportError:
        pass


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--deap", required=True, type=Path)
    ap.add_argument("--out", required=True, type=Path)
    ap.add_argument("--workers", type=int, default=min(2, os.cpu_count() or 1),
                    help="participants prepared in parallel")
    ap.add_argument("--frame-size", type=int, default=224, help="face crop side in pixels")
    ap.add_argument("--participants", type=int, nargs="*", default=None,
                    help="ids to prepare (default: all with an EEG file)")
    ap.add_argument("--no-ica", action="store_true",
                    help="skip FastICA (departs from the paper; faster)")
    args = ap.parse_args(argv)
    if args.frame_size < 8:
        ap.error("--frame-size must be >= 8")
    t0 = time.time()
    deap, out = args.deap, args.out
    ratings_file = deap / "participant_ratings.csv"
    if not ratings_file.exists():
        ap.error(f"{ratings_file} not found")
    ratings = dc.read_ratings(ratings_file)
    found = set()
    for sub in ("data_preprocessed_python", "data_preprocessed_matlab"):
        for f in (deap / sub).glob("s[0-9][0-9].*"):
            if f.suffix in (".dat", ".mat"):
                found.add(int(f.stem[1:]))
    wanted = sorted(found) if args.participants is None else sorted(set(args.participants))
    out.mkdir(parents=True, exist_ok=True)
    skipped_participants = []
    jobs, reused = [], []
    workers = max(1, args.workers)
    for p in wanted:
        if p in dc.EXCLUDED_PARTICIPANTS:
            skipped_participants.append((p, dc.EXCLUDED_PARTICIPANTS[p]))
        elif p not in found:
            skipped_participants.append(
                (p, f"no EEG file ({dc.dat_path(deap, p)} or {dc.mat_path(deap, p)})"))
        elif not dc.video_dir(deap, p).is_dir():
            skipped_participants.append((p, f"no face videos ({dc.video_dir(deap, p)} missing)"))
        elif p not in ratings:
            skipped_participants.append((p, f"no rows in {ratings_file}"))
        else:
            shard, sidecar = out / f"s{p:02d}.shard", out / f"s{p:02d}.json"
            side, why = existing_ok(shard, sidecar, args.frame_size, not args.no_ica)
            if side is not None:
                reused.append(side)
                continue
            if why:
                print(f"s{p:02d}: preparing again: {why}", file=sys.stderr)
            jobs.append({"participant": p, "deap": str(deap), "out": str(out),
                         "frame_size": args.frame_size, "ica": not args.no_ica,
                         "rows": ratings[p], "slot": len(jobs) % workers})

    options = {"frame_size": args.frame_size, "ica": not args.no_ica,
               "frames_per_window": dc.FRAMES_PER_WINDOW, "format": FORMAT_NOTE}
    results = []
    failures = []
    if jobs:
        workers = min(workers, len(jobs))
        from tqdm import tqdm

        if workers == 1:
            pending = map(_safe_prepare, jobs)
            pool = None
        else:
            threads = max(1, (os.cpu_count() or 1) // workers)
            ctx = mp.get_context("spawn")  # MediaPipe and BLAS threads do not survive fork
            pool = ctx.Pool(workers, initializer=_init_worker, initargs=(ctx.RLock(), threads),
                            maxtasksperchild=1)
            pending = pool.imap_unordered(_safe_prepare, jobs)
        try:
            for res in pending:
                if "error" in res:
                    failures.append(res)
                    continue
                res["options"] = options
                write_json_atomic(out / f"s{res['participant']:02d}.json", res)
                results.append(res)
        finally:
            if pool is not None:
                pool.close()
                pool.join()
        tqdm.write("")

    everything = sorted(results + reused, key=lambda r: r["participant"])
    manifest = {"format": FORMAT_NOTE, "deap": str(deap.resolve()), "options": options,
                "participants": everything,
                "skipped_participants": [{"participant": p, "reason": r}
                                         for p, r in skipped_participants],
                "failed_participants": failures}
    write_json_atomic(out / "manifest.json", manifest)
    print_summary(everything, reused, skipped_participants, failures, out, time.time() - t0)
    return 1 if failures else 0


def _safe_prepare(job: dict) -> dict:
    try:
        return prepare_participant(job)
    except Exception as e:  # reported with the participant, the others go on
        return {"participant": job["participant"], "error": f"{type(e).__name__}: {e}"}


def print_summary(results, reused, skipped_participants, failures, out: Path,
                  seconds: float) -> None:
    samples = sum(r["samples"] for r in results)
    print(f"\n{len(results)} participant shards in {out} ({samples} samples; "
          f"{len(reused)} already prepared and verified) in {seconds:.1f} s")
    for p, reason in skipped_participants:
        print(f"  skipped participant s{p:02d}: {reason}")
    for f in failures:
        print(f"  FAILED participant s{f['participant']:02d}: {f['error']}")
    trials = [(r["participant"], t) for r in results for t in r["skipped_trials"]]
    windows = [(r["participant"], w) for r in results for w in r["skipped_windows"]]
    print(f"skipped trials: {len(trials)}")
    for p, t in trials:
        print(f"  s{p:02d} trial {t['trial']:02d} (Experiment_id {t['experiment_id']}): "
              f"{t['reason']}: {t['file']}")
    print(f"skipped windows: {len(windows)}")
    for p, w in windows:
        print(f"  s{p:02d} trial {w['trial']:02d} window {w['window']} "
              f"({w['seconds'][0]}-{w['seconds'][1]} s): {w['reason']}: {w['file']}")
    sampled = sum(r["frames_sampled"] for r in results)
    faces = sum(r["frames_with_face"] for r in results)
    subst = sum(r["frames_substituted"] for r in results)
    if sampled:
        print(f"faces: found in {faces}/{sampled} sampled frames ({100.0 * faces / sampled:.1f} %),"
              f" {subst} frames substituted by the nearest frame with a face")
    for r in results:
        e = r.get("eeg", {})
        ica = (f"FastICA excluded components {e.get('excluded')} of {e.get('components')}"
               + ("" if e.get("converged", True) else " (did not converge)")
               if e.get("ica") == "fastica" else "no ICA")
        print(f"  s{r['participant']:02d}: {r['samples']} samples from {r['trials_kept']} trials,"
              f" {ica}, {r['seconds']} s")


if __name__ == "__main__":
    os.environ.setdefault("OPENCV_LOG_LEVEL", "ERROR")
    os.environ.setdefault("GLOG_minloglevel", "2")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    sys.exit(main())
