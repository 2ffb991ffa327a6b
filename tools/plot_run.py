#!/usr/bin/env python3
"""Plots a milmer-train run from its metrics.json.

    python tools/plot_run.py RUN_DIR [--out DIR]

Writes into RUN_DIR (or --out):
  loss_curves.png       training loss per step, its epoch means, and the held-out loss
  accuracy.png          held-out accuracy and macro F1 per epoch, running training accuracy,
                        and the chance levels (uniform and majority class)
  confusion_matrix.png  the final held-out confusion matrix, each row normalised to the true
                        class's samples and annotated with the percentage and the count (as
                        the paper's Fig. 3)
Needs matplotlib (and numpy); nothing else of the project.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def load_metrics(run: Path) -> dict:
    path = run / "metrics.json" if run.is_dir() else run
    if not path.exists():
        sys.exit(f"plot_run: {path} not found (expected a milmer-train run directory)")
    try:
        m = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        sys.exit(f"plot_run: {path} is not valid JSON: {e}")
    if not m.get("history"):
        sys.exit(f"plot_run: {path} has no finished epoch yet")
    return m


def finish_axes(ax, title: str, xlabel: str, ylabel: str, **legend) -> None:
    """Labels, title, grid and legend of a line plot."""
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(**legend)


def save_figure(fig, plt, path: Path) -> Path:
    """Lays out, writes and closes a figure; returns its path."""
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def plot_losses(m: dict, plt, out: Path) -> Path:
    hist = m["history"]
    fig, ax = plt.subplots(figsize=(7, 4.2))
    steps, losses = [], []
    for e in hist:
        first = e["step"] - len(e["step_losses"]) + 1
        steps += list(range(first, e["step"] + 1))
        losses += e["step_losses"]
    ax.plot(steps, losses, color="tab:blue", alpha=0.35, lw=1, label="train loss (per step)")
    ends = [e["step"] for e in hist]
    ax.plot(ends, [e["train_loss"] for e in hist], "o-", color="tab:blue",
            label="train loss (epoch mean)")
    ax.plot(ends, [e["eval"]["loss"] for e in hist], "s-", color="tab:orange",
            label="held-out loss")
    finish_axes(ax, f"{m['labels']}: loss ({m['protocol'].get('description', m['protocol']['name'])})",
                "step", "cross-entropy")
    return save_figure(fig, plt, out / "loss_curves.png")


def plot_accuracy(m: dict, plt, out: Path) -> Path:
    hist = m["history"]
    epochs = [e["epoch"] for e in hist]
    fig, ax = plt.subplots(figsize=(7, 4.2))
    ax.plot(epochs, [e["eval"]["accuracy"] for e in hist], "s-", color="tab:orange",
            label="held-out accuracy")
    ax.plot(epochs, [e["eval"]["macro_f1"] for e in hist], "^-", color="tab:green",
            label="held-out macro F1")
    ax.plot(epochs, [e["train_accuracy"] for e in hist], "o--", color="tab:blue", alpha=0.6,
            label="train accuracy (running, dropout on)")
    chance = m.get("chance", {})
    if "uniform" in chance:
        ax.axhline(chance["uniform"], color="gray", ls=":", label=f"chance, uniform ({chance['uniform']:.2f})")
    majority = hist[-1]["eval"].get("majority_class_rate")
    if majority is not None:
        ax.axhline(majority, color="black", ls=":", alpha=0.6,
                   label=f"majority class of the held-out set ({majority:.2f})")
    ax.set_ylim(0, 1.02)
    finish_axes(ax, f"{m['labels']}: accuracy and macro F1", "epoch", "fraction", fontsize=8,
                loc="lower right")
    return save_figure(fig, plt, out / "accuracy.png")


def plot_confusion(m: dict, plt, out: Path) -> Path:
    import numpy as np

    ev = m["final"]["eval"] if "final" in m else m["history"][-1]["eval"]
    counts = np.asarray(ev["confusion_matrix"], dtype=float)
    names = ev.get("class_names") or m.get("class_names") or [str(i) for i in range(len(counts))]
    rows = counts.sum(axis=1, keepdims=True)
    norm = np.divide(counts, rows, out=np.zeros_like(counts), where=rows > 0)
    n = len(names)
    fig, ax = plt.subplots(figsize=(1.2 * n + 2.4, 1.1 * n + 1.8))
    im = ax.imshow(norm, cmap="Blues", vmin=0, vmax=1)
    for t in range(n):
        for p in range(n):
            colour = "white" if norm[t, p] > 0.5 else "black"
            ax.text(p, t, f"{100 * norm[t, p]:.1f}%\n({int(counts[t, p])})", ha="center",
                    va="center", color=colour, fontsize=10)
    ax.set_xticks(range(n), names)
    ax.set_yticks(range(n), names)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(f"{m['labels']}: accuracy {100 * ev['accuracy']:.1f}%, macro F1 {ev['macro_f1']:.3f}",
                 fontsize=9)
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04)
    return save_figure(fig, plt, out / "confusion_matrix.png")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("run", type=Path, help="milmer-train --out directory (or its metrics.json)")
    ap.add_argument("--out", type=Path, default=None, help="where to write the PNGs (default: RUN)")
    args = ap.parse_args(argv)
    m = load_metrics(args.run)
    out = args.out or (args.run if args.run.is_dir() else args.run.parent)
    out.mkdir(parents=True, exist_ok=True)
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    for path in (plot_losses(m, plt, out), plot_accuracy(m, plt, out), plot_confusion(m, plt, out)):
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
