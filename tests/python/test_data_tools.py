"""Tests of the DEAP data tools (tools/deap_common.py, make_synthetic_deap.py,
prepare_deap.py). Run with the data environment (tools/requirements-data.txt):

    python -m pytest tests/python/test_data_tools.py

tests/data/labels_fixture.shard is written by write_fixture() below and read by the C++
test (tests/test_shards.cpp), so the Python writer and the C++ reader are checked against
each other; regenerate it with `python tests/python/test_data_tools.py --write-fixture`.
"""

from __future__ import annotations

import pickle
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tools"))
import deap_common as dc  # noqa: E402

FIXTURE = ROOT / "tests" / "data" / "labels_fixture.shard"
# (valence, arousal) on and around every threshold.
FIXTURE_RATINGS = [(4.99, 5.0), (5.0, 4.99), (3.49, 3.5), (3.5, 3.49), (6.49, 6.5),
                   (6.5, 6.49), (1.0, 9.0), (9.0, 1.0)]


def write_fixture(path: Path) -> None:
    """8 records, participant 3, F=2, 3x4 frames, 2 EEG channels x 5 samples; the values
    follow fixture_eeg / fixture_frames so the C++ test can recompute them."""
    w = dc.ShardWriter(path, 3, 2, 3, 4, 2, 5)
    for i, (v, a) in enumerate(FIXTURE_RATINGS):
        w.add(dc.labels_for(v, a), 3, 10 + i, 20 + i, i % 3, v, a, fixture_eeg(i),
              fixture_frames(i))
    w.close()


def fixture_eeg(i: int) -> np.ndarray:
    return (np.arange(10, dtype=np.float32).reshape(2, 5) * 0.25 - i).astype(np.float32)


def fixture_frames(i: int) -> np.ndarray:
    return ((np.arange(2 * 3 * 4 * 3) * 5 + i) % 256).astype(np.uint8).reshape(2, 3, 4, 3)


@pytest.mark.parametrize("rating,d2,d3", [
    (1.0, 0, 0), (3.0, 0, 0), (3.49, 0, 0), (3.5, 0, 1), (4.99, 0, 1), (5.0, 1, 1),
    (6.49, 1, 1), (6.5, 1, 2), (9.0, 1, 2)])
def test_labels_on_boundaries(rating, d2, d3):
    # The same table as "label schemes on boundary ratings" in tests/test_shards.cpp.
    assert dc.deap2_label(rating) == d2
    assert dc.deap3_label(rating) == d3


def test_deap4_quadrants():
    assert dc.deap4_label(5.0, 5.0) == 0  # HAHV
    assert dc.deap4_label(4.99, 5.0) == 1  # HALV
    assert dc.deap4_label(5.0, 4.99) == 2  # LAHV
    assert dc.deap4_label(4.99, 4.99) == 3  # LALV
    assert dc.labels_for(3.49, 6.5) == [0, 1, 0, 2, 1]


def test_fixture_is_what_the_writer_writes(tmp_path):
    fresh = tmp_path / "f.shard"
    write_fixture(fresh)
    assert FIXTURE.read_bytes() == fresh.read_bytes(), \
        "regenerate: python tests/python/test_data_tools.py --write-fixture"


def test_shard_round_trip(tmp_path):
    path = tmp_path / "s03.shard"
    write_fixture(path)
    assert not (tmp_path / "s03.shard.tmp").exists()
    s = dc.read_shard(path)
    assert s["header"]["samples"] == len(FIXTURE_RATINGS)
    for i, (v, a) in enumerate(FIXTURE_RATINGS):
        assert list(s["labels"][i]) == dc.labels_for(v, a)
        assert s["valence"][i] == np.float32(v) and s["arousal"][i] == np.float32(a)
        assert (s["trial"][i], s["presentation"][i], s["window"][i]) == (10 + i, 20 + i, i % 3)
        np.testing.assert_array_equal(s["eeg"][i], fixture_eeg(i))
        np.testing.assert_array_equal(s["frames"][i], fixture_frames(i))


@pytest.mark.parametrize("bad_value", [np.nan, np.inf, -np.inf])
def test_writer_refuses_non_finite_eeg(tmp_path, bad_value):
    path = tmp_path / "s03.shard"
    w = dc.ShardWriter(path, 3, 2, 3, 4, 2, 5)
    w.add(dc.labels_for(5.0, 5.0), 3, 10, 20, 0, 5.0, 5.0, fixture_eeg(0), fixture_frames(0))
    eeg = fixture_eeg(1)
    eeg[1, 3] = bad_value
    with pytest.raises(ValueError) as e:
        w.add(dc.labels_for(5.0, 5.0), 3, 11, 21, 2, 5.0, 5.0, eeg, fixture_frames(1))
    w.abort()
    message = str(e.value)
    for part in (str(path), "participant 3", "trial 11", "window 2", "channel 1, sample 3"):
        assert part in message, message
    assert not path.exists()


@pytest.mark.parametrize("damage,message", [
    (lambda b: b[:-1], "truncated"),
    (lambda b: b[:30], "truncated"),
    (lambda b: b"X" + b[1:], "bad magic"),
    (lambda b: b[:8] + b"\x02" + b[9:], "version 2"),
    (lambda b: b[:20] + b"\x07" + b[21:], "header checksum"),
    (lambda b: b[:-2] + bytes([b[-2] ^ 1]) + b[-1:], "payload checksum"),
    (lambda b: b + b"\0", "trailing"),
])
def test_corrupt_shards_are_named(tmp_path, damage, message):
    good = tmp_path / "good.shard"
    write_fixture(good)
    bad = tmp_path / "bad.shard"
    bad.write_bytes(damage(good.read_bytes()))
    with pytest.raises(dc.ShardError) as e:
        dc.verify_shard(bad)
    assert str(bad) in str(e.value) and message in str(e.value)
    with pytest.raises(dc.ShardError, match="no such file"):
        dc.verify_shard(tmp_path / "missing.shard")


def test_synthetic_then_prepare_end_to_end(tmp_path, capsys):
    import make_synthetic_deap
    import prepare_deap

    deap, out = tmp_path / "deap", tmp_path / "shards"
    assert make_synthetic_deap.main(["--out", str(deap), "--participant-ids", "1,2,11",
                                     "--trials", "3", "--seconds", "6", "--matlab"]) == 0
    # DEAP's raw formats.
    raw = (deap / "data_preprocessed_python" / "s01.dat").read_bytes()
    assert raw[:2] == b"\x80\x02"  # pickle protocol 2
    d = pickle.loads(raw, encoding="latin1")
    assert d["data"].dtype == np.float64 and d["data"].shape == (3, 40, 384 + 6 * 128)
    assert d["labels"].dtype == np.float64 and d["labels"].shape == (3, 4)
    header = (deap / "participant_ratings.csv").read_text().splitlines()[0]
    assert header.split(",") == dc.RATINGS_COLUMNS
    # The matlab copy is the same data; prepare the first participant from it alone.
    (deap / "data_preprocessed_python" / "s01.dat").rename(tmp_path / "s01.dat")
    capsys.readouterr()

    assert prepare_deap.main(["--deap", str(deap), "--out", str(out), "--frame-size", "16",
                              "--workers", "1"]) == 0
    text = capsys.readouterr().out
    assert "skipped participant s11" in text
    assert "missing video" in text and "s01_trial03.avi" in text
    assert "unreadable video" in text and "s02_trial02.avi" in text
    assert "no face detected" in text and "s01_trial01.avi" in text
    assert sorted(p.name for p in out.glob("*.shard")) == ["s01.shard", "s02.shard"]
    s1 = dc.read_shard(out / "s01.shard")
    # 3 trials, one without video; trial 1 loses window 1 (no face): 2 + 1 windows.
    assert s1["header"]["samples"] == 3
    assert s1["frames"].shape == (3, 10, 16, 16, 3)
    assert s1["eeg"].shape == (3, 32, 384)
    rows = dc.read_ratings(deap / "participant_ratings.csv")[1]
    for i in range(3):
        e = s1["trial"][i]
        v = d["labels"][e - 1, 0]
        assert s1["valence"][i] == np.float32(v)
        assert list(s1["labels"][i]) == dc.labels_for(v, d["labels"][e - 1, 1])
        assert any(r["experiment_id"] == e and r["trial"] == s1["presentation"][i]
                   for r in rows)

    # A re-run verifies and keeps both; a corrupt shard is prepared again.
    blob = bytearray((out / "s02.shard").read_bytes())
    blob[-1] ^= 0xFF
    (out / "s02.shard").write_bytes(bytes(blob))
    assert prepare_deap.main(["--deap", str(deap), "--out", str(out), "--frame-size", "16",
                              "--workers", "1"]) == 0
    assert "1 already prepared and verified" in capsys.readouterr().out
    dc.verify_shard(out / "s02.shard")


if __name__ == "__main__":
    if sys.argv[1:] == ["--write-fixture"]:
        FIXTURE.parent.mkdir(parents=True, exist_ok=True)
        write_fixture(FIXTURE)
        print(f"wrote {FIXTURE}")
    else:
        sys.exit(pytest.main([__file__, "-q"]))
