#!/usr/bin/env python3
"""One training step, milmer (host emulator) next to PyTorch eager (CPU), in one table.

  python3 bench/compare_step.py [--binary build/host/bench/milmer_step_profile]
                                [--runs tiny:14 paper:2] [--steps 1] [--markdown out.md]

For each preset:batch it runs bench/step_profile.cpp's program and
bench/pytorch_step_profile.py (each in its own process, one after the other, so they do not
compete for the cores) and prints, with ratios milmer / PyTorch:
  - dispatches per step: milmer's kernel launches (emulator counters) and cuBLAS GEMM calls,
    PyTorch's aten operator calls (top-level, and all including nested ones);
  - bytes: activations (milmer: the activation arenas, activation_bytes(); PyTorch: the
    storages autograd saves, counted with saved_tensors_hooks), parameters, gradients, AdamW
    state, and the peak (milmer: the emulator's device-memory peak during the steps;
    PyTorch: the resident-size peak of the warm-up step above the resident size before the
    model was built);
  - seconds per step: wall and process CPU time.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)


def run_json(cmd: list[str]) -> dict:
    print("+ " + " ".join(cmd), file=sys.stderr, flush=True)
    out = subprocess.run(cmd, check=True, stdout=subprocess.PIPE, text=True).stdout
    return json.loads(out)


def mib(n: float) -> str:
    return f"{n / 2**20:,.1f} MiB"


def ratio(a: float, b: float) -> str:
    return f"{a / b:.2f}" if b else "n/a"


def rows_for(m: dict, p: dict) -> list[tuple[str, str, str, str]]:
    mt, pb, mb = m["per_step"]["total"], p["bytes"], m["bytes"]
    po = p["ops"]["total"]
    rows = [
        ("kernel launches (milmer) / aten ops, top-level (PyTorch)", f"{mt['launches']:,}",
         f"{po['aten_top']:,}", ratio(mt["launches"], po["aten_top"])),
        ("  + cuBLAS GEMM calls (milmer) / aten ops incl. nested (PyTorch)",
         f"{mt['launches'] + mt['gemm_calls']:,}", f"{po['aten_all']:,}",
         ratio(mt["launches"] + mt["gemm_calls"], po["aten_all"])),
    ]
    for phase in ("forward", "backward", "optimizer"):
        mp, pp = m["per_step"][phase], p["ops"].get(phase, {"aten_top": 0})
        rows.append((f"  {phase}: launches + GEMMs / top-level aten ops",
                     f"{mp['launches'] + mp['gemm_calls']:,}", f"{pp['aten_top']:,}",
                     ratio(mp["launches"] + mp["gemm_calls"], pp["aten_top"])))
    rows += [
        ("activations", mib(mb["activations"]), mib(pb["activations"]),
         ratio(mb["activations"], pb["activations"])),
        ("  of which Swin encoder", mib(mb["swin_activations"]),
         mib(pb["activations_by_module"].get("swin", 0)),
         ratio(mb["swin_activations"], pb["activations_by_module"].get("swin", 0))),
        ("  of which the rest (inputs, AMIL, CA, EEG, fusion, head, backward scratch)",
         mib(mb["other_activations"]),
         mib(pb["activations"] - pb["activations_by_module"].get("swin", 0)),
         ratio(mb["other_activations"],
               pb["activations"] - pb["activations_by_module"].get("swin", 0))),
        ("parameters", mib(mb["parameters"]), mib(pb["parameters"]),
         ratio(mb["parameters"], pb["parameters"])),
        ("gradients", mib(mb["gradients"]), mib(pb["gradients"]),
         ratio(mb["gradients"], pb["gradients"])),
        ("AdamW state (m, v)", mib(mb["adamw_state"]), mib(pb["adamw_state"]),
         ratio(mb["adamw_state"], pb["adamw_state"])),
    ]
    if "device_peak_during_steps" in mb:
        rows.append(("peak (milmer: device peak; PyTorch: RSS peak - RSS before the model)",
                     mib(mb["device_peak_during_steps"]), mib(pb["rss_peak_delta"]),
                     ratio(mb["device_peak_during_steps"], pb["rss_peak_delta"])))
    rows += [
        ("wall seconds per step", f"{mt['wall_seconds']:.3f}", f"{p['seconds']['wall']:.3f}",
         ratio(mt["wall_seconds"], p["seconds"]["wall"])),
        ("CPU seconds per step", f"{mt['cpu_seconds']:.3f}", f"{p['seconds']['cpu']:.3f}",
         ratio(mt["cpu_seconds"], p["seconds"]["cpu"])),
    ]
    return rows


def table(title: str, rows) -> str:
    head = f"**{title}**\n\n| quantity | milmer | PyTorch | milmer / PyTorch |\n|---|---:|---:|---:|\n"
    return head + "".join(f"| {a} | {b} | {c} | {d} |\n" for a, b, c, d in rows)


def breakdown(p: dict) -> str:
    items = sorted(p["bytes"]["activations_by_module"].items(), key=lambda kv: -kv[1])
    return "PyTorch saved activations by module: " + ", ".join(
        f"{k} {mib(v)}" for k, v in items if v) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--binary", default=os.path.join(ROOT, "build/host/bench/milmer_step_profile"))
    ap.add_argument("--runs", nargs="+", default=["tiny:14", "paper:2"],
                    help="preset:batch pairs")
    ap.add_argument("--steps", type=int, default=1, help="measured steps after one warm-up")
    ap.add_argument("--markdown", help="also write the tables to this file")
    args = ap.parse_args()

    out = []
    for run in args.runs:
        preset, batch = run.split(":")
        m = run_json([args.binary, "--preset", preset, "--batch", batch, "--steps",
                      str(args.steps)])
        p = run_json([sys.executable, os.path.join(HERE, "pytorch_step_profile.py"), "--preset",
                      preset, "--batch", batch, "--steps", str(args.steps)])
        title = (f"{preset} preset, batch {batch}, one training step "
                 f"({m['parameters']:,} parameters; milmer {m['target']} target, "
                 f"PyTorch {p['torch']} CPU with {p['threads']} threads)")
        text = table(title, rows_for(m, p)) + "\n" + breakdown(p)
        if m["parameters"] != p["parameters"]:
            text += (f"\nWARNING: parameter counts differ (milmer {m['parameters']:,}, "
                     f"PyTorch {p['parameters']:,})\n")
        print(text, flush=True)
        out.append(text)
    if args.markdown:
        with open(args.markdown, "w") as f:
            f.write("\n".join(out))


if __name__ == "__main__":
    main()
