#!/usr/bin/env python3
"""milmer next to PyTorch on the same shapes and the same numbers.

  python3 bench/compare_pytorch.py [--build build/cuda-bench] [--host-build build/host]

Per op (the shapes of the milmer_bench suites): milmer time (milmer_bench's JSON, CUDA-event
manual time with a cold L2), PyTorch eager, torch.compile and, for attention, SDPA times
(CUDA events after warm-up, L2 flushed the same way), the ratio milmer / best PyTorch, and the
maximum absolute difference between milmer's output and PyTorch's on identical inputs:
milmer_op_check writes fixed-seed inputs and milmer's outputs to safetensors, this script
loads them and runs PyTorch on the same tensors (fp32, TF32 off). The model-level difference
comes from milmer-parity (tools/parity): the reference model's weights and a random batch go
in as safetensors, logits / loss / every parameter gradient come out and are compared with
PyTorch autograd's. The whole training step: milmer_bench's milmer_step/paper/b14 against the
reference implementation (tools/milmer_reference.py) timed the same way.

Without a GPU (no `nvidia-smi` device or torch.cuda unavailable) the timing table is not
produced: GPU numbers must come from `make bench` on a GPU. The CPU comparisons still run:
the max-abs-difference column (host build of milmer_op_check, the emulator, against PyTorch
on the CPU) and the model-level parity at the `tiny` preset.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile

import torch
import torch.nn.functional as F

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, os.path.join(ROOT, "tools"))

torch.backends.cuda.matmul.allow_tf32 = False
torch.backends.cudnn.allow_tf32 = False


def load(path: str) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(path)


# ---- PyTorch versions of each op (inputs: the tensors milmer_op_check wrote) -------------


def window_attention_torch(qkv, table, heads=3, window=7, shift=3, sdpa=False):
    """transformers' SwinAttention between the qkv projection and the output projection."""
    from milmer_reference import relative_position_index

    B, H, W, C3 = qkv.shape
    C, N, hd = C3 // 3, window * window, C3 // 3 // heads
    x = torch.roll(qkv, shifts=(-shift, -shift), dims=(1, 2)) if shift else qkv
    x = x.view(B, H // window, window, W // window, window, C3).permute(0, 1, 3, 2, 4, 5)
    x = x.reshape(-1, N, 3, heads, hd).permute(2, 0, 3, 1, 4)  # (3, B*nW, heads, N, hd)
    q, k, v = x[0], x[1], x[2]
    idx = relative_position_index(window).to(qkv.device)
    bias = table[idx.view(-1)].view(N, N, heads).permute(2, 0, 1)  # (heads, N, N)
    nw = (H // window) * (W // window)
    mask = torch.zeros(nw, N, N, device=qkv.device, dtype=qkv.dtype)
    if shift:
        img = torch.zeros(H, W, device=qkv.device)
        cnt = 0
        for hs in (slice(0, -window), slice(-window, -shift), slice(-shift, None)):
            for ws in (slice(0, -window), slice(-window, -shift), slice(-shift, None)):
                img[hs, ws] = cnt
                cnt += 1
        wins = img.view(H // window, window, W // window, window).permute(0, 2, 1, 3).reshape(nw, N)
        mask = (wins[:, None, :] != wins[:, :, None]).to(qkv.dtype) * -100.0
    full = (bias[None, None] + mask[None, :, None]).expand(B, nw, heads, N, N).reshape(-1, heads, N, N)
    if sdpa:
        o = F.scaled_dot_product_attention(q, k, v, attn_mask=full)
    else:
        s = (q @ k.transpose(-1, -2)) * hd**-0.5 + full
        o = torch.softmax(s, dim=-1) @ v
    o = o.transpose(1, 2).reshape(B, H // window, W // window, window, window, C)
    o = o.permute(0, 1, 3, 2, 4, 5).reshape(B, H, W, C)
    return torch.roll(o, shifts=(shift, shift), dims=(1, 2)) if shift else o


def mha_torch(q, k, v, heads=12, sdpa=False):
    B, L, D = q.shape
    split = lambda t: t.view(B, -1, heads, D // heads).transpose(1, 2)  # noqa: E731
    qh, kh, vh = split(q), split(k), split(v)
    if sdpa:
        o = F.scaled_dot_product_attention(qh, kh, vh)
    else:
        p = torch.softmax(qh @ kh.transpose(-1, -2) * (D // heads) ** -0.5, dim=-1)
        o = p @ vh
    return o.transpose(1, 2).reshape(B, L, D)


def torch_outputs(op: str, t: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """PyTorch's values of every output milmer_op_check wrote for `op`."""
    if op == "layernorm":
        x = t["x"].clone().requires_grad_()
        w, b = t["weight"].clone().requires_grad_(), t["bias"].clone().requires_grad_()
        y = F.layer_norm(x, (x.shape[-1],), w, b, 1e-5)
        dx, dw, db = torch.autograd.grad(y, (x, w, b), t["dout"])
        return {"out": y.detach(), "dx": dx, "dweight": dw, "dbias": db}
    if op == "gelu":
        x = t["x"].clone().requires_grad_()
        y = F.gelu(x)
        (dx,) = torch.autograd.grad(y, (x,), t["dout"])
        return {"out": y.detach(), "dx": dx}
    if op == "linear_relu":
        return {"out": F.relu(F.linear(t["x"], t["weight"], t["bias"]))}
    if op == "window_attention":
        return {"out": window_attention_torch(t["qkv"], t["table"])}
    if op == "mha_self":
        return {"out": mha_torch(t["q"], t["k"], t["v"])}
    if op == "residual_layernorm":
        s = t["x"] + (t["branch"] + t["branch_bias"])
        return {"out": F.layer_norm(s, (s.shape[-1],), t["weight"], t["bias"], 1e-5)}
    if op == "softmax_ce":
        x = t["logits"].clone().requires_grad_()
        loss = F.cross_entropy(x, t["labels"].long())
        (dx,) = torch.autograd.grad(loss, (x,))
        return {"loss": loss.detach().reshape(1), "dlogits": dx}
    if op == "adamw":
        p = t["param"].clone().requires_grad_()
        p.grad = t["grad"].clone()
        opt = torch.optim.AdamW([p], lr=1e-4, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.01,
                                foreach=False)
        opt.step()
        st = opt.state[p]
        return {"param": p.detach(), "m": st["exp_avg"], "v": st["exp_avg_sq"]}
    raise ValueError(op)


OPS = [
    # (op_check name, milmer_bench benchmark names, what the benchmark times)
    ("layernorm", ["layernorm/fwd/1358x768", "layernorm/bwd/1358x768"]),
    ("gelu", ["gelu/fwd/", "gelu/bwd/"]),
    ("linear_relu", ["linear/fwd/1358x768->2048_relu"]),
    ("window_attention", ["window_attention/fwd/B{images}_res56_w7_h3x32_shift3"]),
    ("mha_self", ["mha_attention/fwd/self_B14_97x97_D768_h12"]),
    ("residual_layernorm", ["residual_layernorm/fwd/1358x768"]),
    ("softmax_ce", ["softmax_ce/fwd_bwd/14x4"]),
    ("adamw", ["adamw/step/"]),
]


def op_differences(op_check: str, images: int, device: str) -> list[tuple[str, str, float]]:
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for op, _ in OPS:
            path = os.path.join(tmp, op + ".safetensors")
            subprocess.run([op_check, "--op", op, "--out", path, "--images", str(images)],
                           check=True)
            t = {k: v.to(device) for k, v in load(path).items()}
            ref = torch_outputs(op, {k: v for k, v in t.items() if not k.startswith("out.")})
            for name, want in ref.items():
                got = t["out." + name].reshape(want.shape)
                rows.append((op, name, float((got - want).abs().max())))
    return rows


# ---- timing on a GPU -------------------------------------------------------------------


def gpu_time_ms(fn, iters=20) -> float:
    l2 = torch.cuda.get_device_properties(0).L2_cache_size
    flush = torch.empty(2 * l2, dtype=torch.uint8, device="cuda")
    fn()
    torch.cuda.synchronize()
    start, stop = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    total = 0.0
    for i in range(iters):
        flush.fill_(i & 0xFF)
        start.record()
        fn()
        stop.record()
        stop.synchronize()
        total += start.elapsed_time(stop)
    return total / iters


def milmer_times(bench: str, images: int) -> dict[str, float]:
    out = subprocess.run(
        [bench, "--benchmark_format=json", "--benchmark_min_time=0.2",
         "--benchmark_filter=^(layernorm|gelu|linear|window_attention|mha_attention|"
         "residual_layernorm|softmax_ce|adamw|milmer_step)/"],
        check=True, stdout=subprocess.PIPE, text=True).stdout
    times = {}
    for b in json.loads(out)["benchmarks"]:
        if b.get("error_occurred"):
            continue
        unit = {"ns": 1e-6, "us": 1e-3, "ms": 1.0, "s": 1e3}[b["time_unit"]]
        times[b["name"].replace("/manual_time", "")] = b["real_time"] * unit
    return times


def torch_variants(op: str, t: dict[str, torch.Tensor]):
    """(name, callable) pairs timed for op: eager, torch.compile, and SDPA for attention."""
    if op == "layernorm":
        f = lambda: F.layer_norm(t["x"], (768,), t["weight"], t["bias"], 1e-5)  # noqa: E731
    elif op == "gelu":
        f = lambda: F.gelu(t["x"])  # noqa: E731
    elif op == "linear_relu":
        f = lambda: F.relu(F.linear(t["x"], t["weight"], t["bias"]))  # noqa: E731
    elif op == "window_attention":
        f = lambda: window_attention_torch(t["qkv"], t["table"])  # noqa: E731
    elif op == "mha_self":
        f = lambda: mha_torch(t["q"], t["k"], t["v"])  # noqa: E731
    elif op == "residual_layernorm":
        f = lambda: F.layer_norm(t["x"] + (t["branch"] + t["branch_bias"]), (768,),  # noqa: E731
                                 t["weight"], t["bias"], 1e-5)
    elif op == "softmax_ce":
        f = lambda: F.cross_entropy(t["logits"], t["labels"].long())  # noqa: E731
    else:
        return []
    out = [("eager", f), ("compile", torch.compile(f))]
    if op == "window_attention":
        out.append(("sdpa", lambda: window_attention_torch(t["qkv"], t["table"], sdpa=True)))
    if op == "mha_self":
        out.append(("sdpa", lambda: mha_torch(t["q"], t["k"], t["v"], sdpa=True)))
    return out


def gpu_table(bench: str, op_check: str, images: int) -> None:
    times = milmer_times(bench, images)
    print("| op | shape (benchmark) | milmer ms | PyTorch ms (eager / compile / sdpa) | "
          "milmer / best PyTorch |")
    print("|---|---|---:|---:|---:|")
    with tempfile.TemporaryDirectory() as tmp:
        for op, names in OPS:
            path = os.path.join(tmp, op + ".safetensors")
            subprocess.run([op_check, "--op", op, "--out", path, "--images", str(images)],
                           check=True)
            t = {k: v.cuda() for k, v in load(path).items() if not k.startswith("out.")}
            fwd = names[0].format(images=images)
            mt = next((v for k, v in times.items() if k.startswith(fwd)), float("nan"))
            pt = {n: gpu_time_ms(f) for n, f in torch_variants(op, t)}
            best = min(pt.values()) if pt else float("nan")
            cells = " / ".join(f"{n} {v:.3f}" for n, v in pt.items()) or "n/a"
            print(f"| {op} | {fwd} | {mt:.3f} | {cells} | {mt / best:.2f} |")
    step(times)


def step(times: dict[str, float]) -> None:
    import milmer_reference as ref

    cfg = ref.paper_config()
    model = ref.Milmer(cfg).cuda().train()
    opt = ref.make_optimizer(model, 1e-4)
    frames, eeg, labels = ref.random_batch(model.cfg, 14, torch.Generator().manual_seed(0))
    frames, eeg, labels = frames.cuda(), eeg.cuda(), labels.cuda()

    def train_step():
        loss = F.cross_entropy(model(frames, eeg), labels)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    pt = gpu_time_ms(train_step, iters=5)
    mt = times.get("milmer_step/paper/b14", float("nan"))
    print(f"\ntraining step, paper preset, batch 14: milmer {mt:.1f} ms, PyTorch eager "
          f"{pt:.1f} ms, ratio {mt / pt:.2f}")


# ---- model-level parity ----------------------------------------------------------------


def model_parity(parity: str, preset: str, batch: int, device: str) -> list[tuple[str, float]]:
    import milmer_reference as ref
    from safetensors.torch import save_file

    cfg = ref.PRESETS[preset]()
    cfg.update(ca_dropout=0.0, dropout=0.0, head_dropout=0.0)
    cfg["swin"]["drop_path_rate"] = 0.0
    torch.manual_seed(0)
    model = ref.Milmer(cfg).to(device).train()
    frames, eeg, labels = ref.random_batch(model.cfg, batch, torch.Generator().manual_seed(1))
    frames, eeg, labels = frames.to(device), eeg.to(device), labels.to(device)
    logits = model(frames, eeg)
    loss = F.cross_entropy(logits, labels)
    loss.backward()
    with tempfile.TemporaryDirectory() as tmp:
        paths = {k: os.path.join(tmp, k) for k in ("config.json", "params", "inputs", "out")}
        ref.save_config(model.cfg, paths["config.json"])
        params = model.canonical_state_dict()
        save_file({n: p.detach().cpu().contiguous() for n, p in params.items()}, paths["params"])
        save_file({"frames": frames.cpu(), "eeg": eeg.cpu(), "labels": labels.cpu()},
                  paths["inputs"])
        subprocess.run([parity, "--model", "milmer", "--config", paths["config.json"], "--params",
                        paths["params"], "--inputs", paths["inputs"], "--out", paths["out"]],
                       check=True, stdout=subprocess.DEVNULL)
        got = load(paths["out"])
    rows = [("logits", float((got["logits"] - logits.detach().cpu()).abs().max())),
            ("loss", float((got["loss"].reshape(()) - loss.detach().cpu()).abs()))]
    worst_name, worst = "", 0.0
    for n, p in params.items():
        d = float((got["grad." + n] - p.grad.cpu()).abs().max())
        if d > worst:
            worst_name, worst = n, d
    rows.append((f"parameter gradients (max over all; worst: {worst_name})", worst))
    return rows


def has_gpu() -> bool:
    if shutil.which("nvidia-smi") is None:
        return False
    ok = subprocess.run(["nvidia-smi", "-L"], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    return ok.returncode == 0 and b"GPU" in ok.stdout and torch.cuda.is_available()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--build", default=os.path.join(ROOT, "build/cuda-bench"),
                    help="cuda build with milmer_bench, milmer_op_check, milmer-parity")
    ap.add_argument("--host-build", default=os.path.join(ROOT, "build/host"))
    args = ap.parse_args()
    torch.manual_seed(0)

    if has_gpu():
        images = int(os.environ.get("MILMER_BENCH_SWIN_IMAGES", "42"))
        b = args.build
        print(f"GPU: {torch.cuda.get_device_name(0)}\n")
        gpu_table(os.path.join(b, "bench/milmer_bench"), os.path.join(b, "bench/milmer_op_check"),
                  images)
        rows = op_differences(os.path.join(b, "bench/milmer_op_check"), images, "cuda")
        parity = model_parity(os.path.join(b, "tools/parity/milmer-parity"), "paper", 2, "cuda")
    else:
        print("No GPU here: the GPU timing table (milmer vs PyTorch eager / torch.compile / SDPA)"
              " must be produced by `make bench` on a GPU. Running the CPU comparisons only.\n")
        hb = args.host_build
        rows = op_differences(os.path.join(hb, "bench/milmer_op_check"), 1, "cpu")
        parity = model_parity(os.path.join(hb, "tools/parity/milmer-parity"), "tiny", 2, "cpu")

    print("| op | output | max abs difference milmer vs PyTorch (same inputs, fp32) |")
    print("|---|---|---:|")
    for op, name, d in rows:
        print(f"| {op} | {name} | {d:.3e} |")
    print("\n| whole model (milmer-parity vs the reference, dropout off) | max abs difference |")
    print("|---|---:|")
    for name, d in parity:
        print(f"| {name} | {d:.3e} |")


if __name__ == "__main__":
    main()
