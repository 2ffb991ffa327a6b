#!/usr/bin/env python3
"""Theoretical occupancy of every kernel on sm_80 and sm_90, from ptxas's resource report.

  python3 bench/occupancy.py [build/cuda/build.log] [--markdown-out FILE]

Registers and static shared memory per kernel come from the cuda preset's build log (the
preset compiles with -Xptxas -v; `make report` / `make test-cuda` writes build/cuda/build.log,
the same data docs/resource-report.md is made from). Block size and dynamic shared memory are
the launch shapes the kernel headers document (table LAUNCH below, at the paper model's
shapes). Per-SM limits (CUDA C++ Programming Guide, compute capabilities 8.0 and 9.0):

  sm_80: 65536 registers, 2048 threads (64 warps), 164 KB shared memory, 32 blocks
  sm_90: 65536 registers, 2048 threads (64 warps), 228 KB shared memory, 32 blocks
  registers are allocated per warp in units of 256 (regs/thread x 32 rounded up to 256);
  each block also takes 1 KB of shared memory reserved by the system.

occupancy = resident warps / 64, resident blocks = the smallest of the four limits.
"""

from __future__ import annotations

import argparse
import math
import os
import re
import subprocess
import sys

LIMITS = {
    "sm_80": {"regs": 65536, "threads": 2048, "smem": 164 * 1024, "blocks": 32},
    "sm_90a": {"regs": 65536, "threads": 2048, "smem": 228 * 1024, "blocks": 32},
}
REG_UNIT = 256
SMEM_RESERVED_PER_BLOCK = 1024


def wa_smem(tiles: int, window: int = 7, head_dim: int = 32) -> int:
    n = window * window
    floats = tiles * n * (head_dim + 1) + n * n + (2 * window - 1) ** 2 + (n if tiles == 4 else 0)
    return floats * 4 + 2 * n * 4


def mha_fwd_smem(hd: int) -> int:
    return 4 * (16 * hd + 32 * (hd + 1) + 32 * hd + 16 * 32)


def mha_dq_smem(hd: int, chunks: int) -> int:
    rows = (2 if chunks == 4 else 4) * 4
    return 4 * (2 * rows * hd + 2 * 32 * (hd + 1) + rows * 32)


def mha_dkdv_smem(hd: int, chunks: int) -> int:
    q = 8 if chunks == 4 else 32
    return 4 * (64 * (hd + 1) + 2 * q * hd + 66 * q)


# kernel (demangled, argument list dropped) -> (threads per block, dynamic shared bytes, shape
# the numbers are for). Head dims of the MHA instantiations: 32 x chunks is each one's limit;
# chunks 2 is the paper model's 64.
LAUNCH = {
    "layernorm_forward_rows<float>": (256, 0, "one warp per row"),
    "layernorm_backward_rows<float>": (256, 2 * 768 * 4, "W = 768: 2W float partials"),
    "sum_partials<float>": (256, 0, ""),
    "residual_layernorm_forward_rows<float>": (256, 0, "one warp per row"),
    "residual_layernorm_backward_rows<float>": (256, 3 * 768 * 4, "W = 768: 3W float partials"),
    "window_attention_forward_kernel<float>": (128, wa_smem(3), "window 7, head_dim 32"),
    "window_attention_backward_kernel<float>": (128, wa_smem(4), "window 7, head_dim 32"),
    "window_attention_table_grad_reduce<float>": (128, 0, ""),
    "mha_attention_forward_kernel<float, 1>": (128, mha_fwd_smem(32), "head_dim 32"),
    "mha_attention_forward_kernel<float, 2>": (128, mha_fwd_smem(64), "head_dim 64 (paper)"),
    "mha_attention_forward_kernel<float, 4>": (128, mha_fwd_smem(128), "head_dim 128"),
    "mha_attention_backward_dq_kernel<float, 1>": (128, mha_dq_smem(32, 1), "head_dim 32"),
    "mha_attention_backward_dq_kernel<float, 2>": (128, mha_dq_smem(64, 2), "head_dim 64 (paper)"),
    "mha_attention_backward_dq_kernel<float, 4>": (128, mha_dq_smem(128, 4), "head_dim 128"),
    "mha_attention_backward_dkdv_kernel<float, 1>": (128, mha_dkdv_smem(32, 1), "head_dim 32"),
    "mha_attention_backward_dkdv_kernel<float, 2>": (128, mha_dkdv_smem(64, 2),
                                                     "head_dim 64 (paper)"),
    "mha_attention_backward_dkdv_kernel<float, 4>": (128, mha_dkdv_smem(128, 4), "head_dim 128"),
    "amil_pool_forward_kernel<float>": (256, 0, ""),
    "amil_score_kernel": (128, 0, "one warp per frame"),
    "amil_select_forward_kernel<float>": (256, 0, ""),
    "amil_select_backward_kernel<float>": (256, 0, ""),
    "amil_gate_backward_kernel": (32, 0, "one warp per sample"),
    "amil_scores_backward_kernel": (128, 0, ""),
    "amil_pool_backward_kernel<float>": (256, 0, ""),
    "bias_grad_kernel<float>": (1024, 0, "block (32, 32)"),
    "column_partial_sums<float>": (256, 0, "block (32, 8)"),
    "softmax_ce_rows_kernel<float, true>": (256, 0, ""),
    "softmax_ce_rows_kernel<float, false>": (256, 0, ""),
    "mean_loss_kernel<256>": (256, 0, ""),
    "adamw_kernel<float>": (256, 0, ""),
    "token_assembly_forward_elements<float>": (256, 0, ""),
    "token_assembly_backward_tokens<float>": (256, 0, ""),
    "token_assembly_backward_types<float>": (256, 0, ""),
}
DEFAULT_THREADS = 256  # every other kernel: the element-wise block of 256 threads


def short(name: str) -> str:
    depth = 0
    for i, ch in enumerate(name):
        depth += (ch == "<") - (ch == ">")
        if ch == "(" and depth == 0:
            name = name[:i]
            break
    name = name.removeprefix("void ").removeprefix("milmer::kernels::")
    return name


def parse_log(path: str) -> dict[tuple[str, str], tuple[int, int]]:
    """(mangled kernel, arch) -> (registers, static shared bytes)."""
    out, current = {}, None
    entry = re.compile(r"Compiling entry function '([^']+)' for '(sm_\w+)'")
    used = re.compile(r"Used (\d+) registers(?:.*?(\d+) bytes smem)?")
    with open(path, errors="replace") as f:
        for line in f:
            m = entry.search(line)
            if m:
                current = (m.group(1), m.group(2))
                continue
            m = used.search(line)
            if m and current:
                out[current] = (int(m.group(1)), int(m.group(2) or 0))
                current = None
    return out


def occupancy(arch: str, regs: int, threads: int, smem: int) -> tuple[float, str]:
    lim = LIMITS[arch]
    warps = math.ceil(threads / 32)
    regs_per_warp = math.ceil(max(regs, 1) * 32 / REG_UNIT) * REG_UNIT
    by_regs = (lim["regs"] // regs_per_warp) // warps
    by_threads = lim["threads"] // (warps * 32)
    by_smem = lim["smem"] // (smem + SMEM_RESERVED_PER_BLOCK)
    limits = {"registers": by_regs, "threads": by_threads, "shared memory": by_smem,
              "blocks": lim["blocks"]}
    blocks = min(limits.values())
    binding = [k for k, v in limits.items() if v == blocks]
    return blocks * warps / 64, f"{blocks} ({', '.join(binding)})"


def table(log: str) -> str:
    data = parse_log(log)
    names = sorted({m for m, _ in data})
    demangled = dict(zip(names, subprocess.run(["c++filt"], input="\n".join(names), text=True,
                                               capture_output=True).stdout.splitlines()))
    rows = {}
    for (mangled, arch), (regs, static) in data.items():
        name = short(demangled.get(mangled, mangled))
        if "::" in name.split("<")[0] or not mangled.startswith("_ZN6milmer"):
            continue  # kernels of the test programs, not the library's
        threads, dyn, note = LAUNCH.get(name, (DEFAULT_THREADS, 0, "element-wise block"))
        occ, blocks = occupancy(arch, regs, threads, static + dyn)
        rows.setdefault(name, {})[arch] = (regs, static + dyn, occ, blocks, threads, note)
    lines = [
        "| kernel | block | shared B (static + dynamic) | sm_80 regs | sm_80 blocks/SM (limit) "
        "| sm_80 occupancy | sm_90 regs | sm_90 blocks/SM (limit) | sm_90 occupancy | shape |",
        "|---|---:|---:|---:|---|---:|---:|---|---:|---|",
    ]
    for name in sorted(rows):
        r = rows[name]
        a, h = r.get("sm_80"), r.get("sm_90a")
        any_ = a or h
        cells = []
        for v in (a, h):
            cells += [f"{v[0]}", v[3], f"{v[2]:.0%}"] if v else ["-", "-", "-"]
        lines.append(f"| {name} | {any_[4]} | {any_[1]:,} | " + " | ".join(cells) +
                     f" | {any_[5]} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("log", nargs="?", default="build/cuda/build.log")
    ap.add_argument("--markdown-out", help="also write the table to this file")
    args = ap.parse_args()
    if not os.path.exists(args.log):
        sys.exit(f"occupancy: {args.log} not found; run `make report` (cuda preset build with "
                 "ptxas -v) first")
    text = table(args.log)
    print(text)
    if args.markdown_out:
        with open(args.markdown_out, "w") as f:
            f.write(text)


if __name__ == "__main__":
    main()
