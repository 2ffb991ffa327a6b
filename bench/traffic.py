#!/usr/bin/env python3
"""Minimum bytes vs the bytes each kernel's loads and stores request, per kernel, at paper shapes.

  python3 bench/traffic.py [--images 42]        # prints a markdown table

"minimum" is the header's "Minimum bytes moved" formula (include/milmer/kernels/*.hpp): every
input read once, every output written once. "issued" counts the global-memory loads and stores
the kernel's loop structure performs, as the header documents it (which tensor each block or
warp reads, how many passes over a row, what scratch is written and read back, what is
re-read per block): the bytes the kernel asks the memory system for. Re-reads of a row inside
one warp or block (LayerNorm's second and third passes) are mostly served by L1/L2, so issued
is an upper bound on DRAM traffic and minimum a lower bound; the ratio says how much a kernel
relies on caches or pays in extra traffic. Float storage (4 bytes) throughout. GEMM entries
count the operands once per GEMM (cuBLAS's internal tiling is not the project's code).
"""

from __future__ import annotations

import argparse

S = 4  # sizeof(float)


def ln_parts(rows, width):
    target = min(max((1 << 20) // width, 64), 1024)
    wanted = min(max(rows, 1), target)
    rpp = -(-rows // wanted)
    return -(-rows // rpp)


def rln_parts(rows, width):
    max_parts = min(max((1 << 20) // width, 64), 1024)
    wanted = min(max(rows // 8, 1), max_parts)
    rpp = -(-rows // wanted)
    return -(-rows // rpp)


def rows(images: int):
    R, W = 14 * 97, 768  # fusion rows of a batch-14 step, model width
    F2 = 2048
    swin = images * 56 * 56
    out = []

    def add(kernel, shape, minimum, issued, how):
        out.append((kernel, shape, minimum, issued, how))

    # LayerNorm
    add("layernorm fwd", f"{R}x{W}", (2 * R * W + 2 * W) * S + 8 * R,
        (3 * R * W + 2 * R * W + R * W) * S + 8 * R,
        "one warp per row: x read in 3 passes (mean, variance, output), weight and bias read "
        "per row, out written once")
    P = ln_parts(R, W)
    add("layernorm bwd", f"{R}x{W}", (3 * R * W + 5 * W) * S + 8 * R,
        (7 * R * W) * S + 8 * R + 2 * (2 * P * W) * 4 + 4 * W * S,
        f"per row: pass 1 reads dout, x, weight; pass 2 reads them again and writes dinp; "
        f"dweight/dbias partials in shared memory, P = {P} parts x 2W floats written to "
        f"scratch and read back by sum_partials, which reads + writes dweight, dbias")
    # element-wise families
    n = swin * 384
    add("gelu fwd / bwd", f"{n}", 2 * n * S, 2 * n * S,
        "one element (or 16-byte pack) per thread: each element read once, written once; "
        "bwd 3n s both ways")
    add("relu, dropout fwd / bwd", f"{R * F2}", 2 * R * F2 * S, 2 * R * F2 * S,
        "element-wise, mask from Philox (no mask traffic)")
    add("bias_add fwd", f"{R}x{W}", (2 * R * W + W) * S, (2 * R * W + R * W) * S,
        "read-modify-write of out; bias[col] loaded by every element (cached)")
    parts = min(max(R // 32, 1), 128)
    add("bias_add bwd", f"{R}x{W}", (R * W + 2 * W) * S,
        R * W * S + 2 * parts * W * 4 + 2 * W * S,
        f"column_partial_sums reads dout once and writes {parts} partial rows; sum_partials "
        f"reads them back and read-modify-writes dbias")
    add("add_forward / add_inplace", f"{R}x{W}", 3 * R * W * S, 3 * R * W * S, "one pass")
    add("softmax_ce fwd", "14x4", 8 * 14 * 4 + 8 * 14 + 4, (3 * 14 * 4 + 14 * 4) * S + 8 * 14 + 4,
        "one warp per row: logits read in 3 passes (max, sum, write); loss mean: one block "
        "re-reads the B losses")
    add("adamw", "41,432,959", 28 * 41432959, 28 * 41432959,
        "grid-stride: p, g, m, v read once, p, m, v written once")
    # GEMM / Linear
    M, K, N = R, W, F2
    add("linear fwd, bias+relu (cuda: cuBLASLt epilogue)", f"{M}x{K}->{N}",
        (M * K + N * K + M * N + N) * S, (M * K + N * K + M * N + N) * S,
        "one cuBLASLt call with the bias/ReLU epilogue fused")
    add("linear fwd, bias+relu (host path, and GELU on both)", f"{M}x{K}->{N}",
        (M * K + N * K + M * N + N) * S, (M * K + N * K + M * N + 2 * M * N + N * M) * S,
        "cublasSgemm writes M N, bias_activation_forward_kernel reads it and the bias (per "
        "element) and writes M N again (GELU: also the stored pre-activation)")
    add("linear bwd, relu", f"{M}x{K}->{N}",
        (M * N + M * K + N * K + 2 * N * K + 2 * N + M * K + M * N) * S,
        (6 * M * N + 2 * M * K + 3 * N * K + 2 * N) * S,
        "activation_backward reads dout and the saved output, writes dpre; bias_grad reads "
        "dpre; dweight GEMM reads dpre and inp, read-modify-writes dweight; dinp GEMM reads "
        "dpre and weight, writes dinp")
    # window attention
    for res, heads in ((56, 3), (14, 12)):
        C, Wn, Nt, R_ = heads * 32, 7, 49, 169
        wins = (res // Wn) ** 2
        tp = t0 = images * res * res
        lse = images * heads * wins * Nt * 4
        add(f"window_attention fwd (res {res})", f"{images} x {res}^2 x {C}",
            (3 * tp * C + R_ * heads + t0 * C) * S + lse,
            (3 * tp * C + R_ * images * wins * heads + t0 * C) * S + lse,
            "block (window, head, image): q, k, v tiles of its window read once (so qkv once "
            "in all), the head's table column (169) per block, out and lse written once")
        slots = images * wins
        add(f"window_attention bwd (res {res})", f"{images} x {res}^2 x {C}",
            (3 * tp * C + t0 * C + 3 * tp * C + 3 * R_ * heads) * S + lse,
            (3 * tp * C + t0 * C + 3 * tp * C + R_ * heads * slots + 2 * R_ * heads) * S
            + lse + 2 * R_ * heads * slots * 4,
            "block reads q, k, v, dO tiles and lse once, the table column per block, writes "
            "dqkv; one table-gradient partial per (window, head, image) written to the "
            "workspace and read back by the reduce kernel, which read-modify-writes d_table")
    # MHA attention core
    for name, B, lq, lk in (("self", 14, 97, 97), ("cross", 14, 64, 147)):
        D, H = 768, 12
        qb = -(-lq // 16)
        add(f"mha_attention fwd ({name})", f"B{B} {lq}x{lk} D{D} h{H}",
            4 * (B * lq * D * 2 + B * lk * D * 2 + B * H * lq),
            4 * (B * lq * D * 2 + 2 * B * lk * D * qb + B * H * lq),
            f"block of 16 query rows per (head, sample) streams every key: k and v read "
            f"ceil(Lq/16) = {qb} times")
        kb = -(-lk // 32)
        add(f"mha_attention bwd ({name})", f"B{B} {lq}x{lk} D{D} h{H}",
            4 * (B * lq * D * 4 + B * lk * D * 4 + B * H * lq),
            4 * (3 * B * lq * D + B * H * lq + 2 * B * lk * D * qb + B * lq * D)
            + 4 * (2 * B * lk * D + (3 * B * lq * D + B * H * lq) * kb + 2 * B * lk * D),
            f"dq kernel: q, dO, out, lse of 16 rows, k and v streamed ({qb} x); dk/dv kernel: "
            f"32 keys per block, q, dO, out, lse streamed ceil(Lk/32) = {kb} times")
    # AMIL
    B, Fr, Mt, D, L, Kk = 14, 10, 49, 768, 128, 3
    add("amil fwd", f"B{B} F{Fr} M{Mt} D{D}",
        (B * Fr * Mt * D + B * Kk * Mt * D + L * D + B * Fr * (D + 2 * L)) * S,
        (B * Fr * Mt * D + B * Fr * D + (B * Fr * D + L * D + B * Fr * L)
         + 2 * B * Fr * L + B * Kk * Mt * D * 2) * S,
        "pool reads X once, writes e; scoring GEMM reads e and V, writes pre; score kernel "
        "reads/writes h; select gathers the K frames (read + write)")
    add("amil bwd (select_backward, all F frames)", f"B{B} F{Fr} M{Mt} D{D}",
        (2 * B * Kk * Mt * D + B * Fr * Mt * D) * S,
        (2 * B * Kk * Mt * D + B * Fr * Mt * D) * S,
        "frame block writes its dX (zeros when not selected), reads dZ_k and X when selected")
    # residual LayerNorm
    add("residual_layernorm fwd", f"{R}x{W}", (4 * R * W + 3 * W) * S + 8 * R,
        (2 * R * W + 3 * R * W + 2 * R * W + 2 * R * W + 2 * R * W) * S + 8 * R,
        "pass 1 reads x, branch, branch_bias (per row) and writes s; passes 2 and 3 re-read s "
        "(own stores, L1/L2); pass 3 reads weight and bias per row and writes y")
    P = rln_parts(R, W)
    add("residual_layernorm bwd", f"{R}x{W}", (4 * R * W + 7 * W) * S + 8 * R,
        (6 * R * W + 2 * R * W) * S + 8 * R + 2 * (3 * P * W) * 4 + 6 * W * S,
        f"per row: pass 1 reads dy, s, weight; pass 2 reads them again, writes dx and dbranch; "
        f"P = {P} parts x 3W partials written and read back; 3 gradients read + written")
    # tokens
    N, C = 64, 32
    Sq, Pp = 1 + N + C, (3 + N + C) * D
    add("tokens fwd", f"B{B} N{N} C{C} D{D}", (B * (N + C) * D + Pp + B * Sq * D) * S,
        (B * (N + C) * D + 2 * B * (N + C) * D + B * D + B * Sq * D) * S,
        "one output element per thread: type and position rows re-read per sample (cached)")
    add("tokens bwd", f"B{B} N{N} C{C} D{D}", (B * Sq * D + B * (N + C) * D + 2 * Pp) * S,
        (B * Sq * D + B * (N + C) * D + 2 * (1 + N + C) * D + 2 * (N + C) * D + 4 * D) * S,
        "kernel 1 reads dX once, writes dV/dE, read-modify-writes dcls/dpos, writes the "
        "(N+C) x D token sums; kernel 2 reads them back, read-modify-writes dtype_embed")
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--images", type=int, default=42,
                    help="images of the Swin-shaped kernels (42: a batch-14 step)")
    args = ap.parse_args()
    print("| kernel | shape | minimum MB | issued MB | issued / minimum | how issued is counted |")
    print("|---|---|---:|---:|---:|---|")
    for kernel, shape, mn, iss, how in rows(args.images):
        print(f"| {kernel} | {shape} | {mn / 1e6:,.2f} | {iss / 1e6:,.2f} | "
              f"{iss / mn:.2f} | {how} |")


if __name__ == "__main__":
    main()
