#!/usr/bin/env python3
"""Writes the golden fixtures of tests/golden (see docs/golden.md).

Every fixture is the float32 PyTorch / transformers result on random weights and inputs,
together with a float64 run of the same computation (`ref64.<name>`), so that C++ tests can
bound their error by a multiple of PyTorch's own float32 error (docs/golden.md, Tolerance rule).

  python3 tools/make_golden.py                       # regenerate tests/golden
  python3 tools/make_golden.py --out DIR             # somewhere else
  python3 tools/make_golden.py --full-swin-t DIR     # Swin-T 224 forward (~110 MB), not committed

The output is deterministic for a given torch / transformers version (seeded generators,
deterministic algorithms, one thread).
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import os
import sys

import torch
import torch.nn.functional as F
from safetensors.torch import save_file

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import milmer_reference as ref  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TIE_MARGIN = 1e-3  # smallest allowed gap between consecutive sorted AMIL weights (top K + 1)
TRAIN_STEPS = 5
TRAIN_LR = 1e-3


def metadata(seed: int) -> dict:
    """One key only: safetensors writes metadata in hash order, so several keys would make
    regenerated files differ byte-wise from committed ones with identical tensors."""
    import safetensors
    import transformers

    return {
        "provenance": f"tools/make_golden.py seed={seed} torch={torch.__version__} "
        f"transformers={transformers.__version__} safetensors={safetensors.__version__}"
    }


def save(tensors: dict, path: str, seed: int) -> None:
    save_file({k: v.detach().contiguous() for k, v in tensors.items()}, path, metadata(seed))


def write_json(obj, path: str, indent=2) -> None:
    with open(path, "w") as f:
        json.dump(obj, f, indent=indent)
        f.write("\n")


def no_dropout(cfg: dict) -> dict:
    """Fixtures compare deterministic numerics: every dropout and drop-path off."""
    cfg = copy.deepcopy(cfg)
    cfg["swin"]["drop_path_rate"] = 0.0
    for k in ("ca_dropout", "dropout", "head_dropout"):
        cfg[k] = 0.0
    return cfg


@torch.no_grad()
def randomize(params: dict, g: torch.Generator) -> None:
    """Fixture weights with every term visible in the output.

    transformers zero-initialises the relative-position tables and uses std 0.02 weights,
    under which attention is nearly uniform and the bias untested. Here: matrices with unit
    gain (uniform, variance 1/fan_in), LayerNorm gains 1 + N(0, 0.2), biases N(0, 0.2),
    bias tables N(0, 1), learned tokens and embeddings N(0, 0.5).
    """
    for name, p in params.items():
        if name.endswith("relative_position_bias_table"):
            p.copy_(torch.randn(p.shape, generator=g))
        elif name in ("ca.queries", "fusion.cls", "fusion.pos_visual", "fusion.pos_eeg",
                      "fusion.type_embed.weight"):
            p.copy_(0.5 * torch.randn(p.shape, generator=g))
        elif p.dim() >= 2:
            bound = math.sqrt(3.0 / math.prod(p.shape[1:]))
            p.copy_((torch.rand(p.shape, generator=g) * 2 - 1) * bound)
        elif "norm" in name and name.endswith("weight"):
            p.copy_(1.0 + 0.2 * torch.randn(p.shape, generator=g))
        else:
            p.copy_(0.2 * torch.randn(p.shape, generator=g))


def grads_of(named: dict) -> dict:
    return {"grad." + n: p.grad.detach().clone() for n, p in named.items()}


def with_ref64(out32: dict, out64: dict) -> dict:
    out = dict(out32)
    out.update({"ref64." + k: v for k, v in out64.items()})
    return out


def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.double() - b).abs().max() / b.abs().max().clamp_min(1e-30))


# --------------------------------------------------------------------------------------------
# Swin-only fixtures
# --------------------------------------------------------------------------------------------


def swin_hf_dict(swin: dict) -> dict:
    d = {"model_type": "swin"}
    d.update(swin)
    return d


def run_swin(model, swin: dict, pixel_values, grad_output, with_grad: bool = True) -> dict:
    model.train()  # dropout and drop-path are 0: train and eval agree
    for p in model.parameters():
        p.grad = None
    pv = pixel_values.clone().requires_grad_(with_grad)
    out = model(pixel_values=pv).last_hidden_state
    res = {"output": out.detach().clone()}
    if with_grad:
        out.backward(grad_output)
        res["grad.pixel_values"] = pv.grad.detach().clone()
        res.update(grads_of(ref.swin_canonical_state_dict(model, swin)))
    return res


def make_swin_fixture(out_dir: str, swin: dict, batch: int, seed: int, with_grad=True) -> dict:
    from transformers import SwinModel

    os.makedirs(out_dir, exist_ok=True)
    swin = dict(swin, drop_path_rate=0.0)
    torch.manual_seed(seed)
    g = torch.Generator().manual_seed(seed)
    model = SwinModel(ref.hf_swin_config(swin), add_pooling_layer=False)
    params = ref.swin_canonical_state_dict(model, swin)
    randomize(params, g)
    side = swin["image_size"]
    pixel_values = torch.randn(batch, swin["num_channels"], side, side, generator=g)
    res = ref.swin_resolutions(swin)[-1]
    width = swin["embed_dim"] * 2 ** (len(swin["depths"]) - 1)
    grad_output = torch.randn(batch, res * res, width, generator=g)

    out32 = run_swin(model, swin, pixel_values, grad_output, with_grad)
    model64 = copy.deepcopy(model).double()
    out64 = run_swin(model64, swin, pixel_values.double(), grad_output.double(), with_grad)

    buffers = {
        n: ref.relative_position_index(swin["window_size"]) for n, _ in ref.swin_buffer_specs(swin)
    }
    write_json(swin_hf_dict(swin), os.path.join(out_dir, "config.json"))
    save(dict(params, **buffers), os.path.join(out_dir, "params.safetensors"), seed)
    inputs = {"pixel_values": pixel_values}
    if with_grad:
        inputs["grad_output"] = grad_output
    save(inputs, os.path.join(out_dir, "inputs.safetensors"), seed)
    save(with_ref64(out32, out64), os.path.join(out_dir, "expected.safetensors"), seed)
    verify_swin_fixture(out_dir, out32["output"])
    return {"output fp32 vs fp64 (max rel)": rel_err(out32["output"], out64["output"])}


def verify_swin_fixture(fixture_dir: str, output: torch.Tensor) -> None:
    """Loads the written files with transformers' own loader and reruns the forward.

    This ties the fixture's tensor names to what transformers reads from a checkpoint.
    """
    import shutil
    import tempfile

    from safetensors.torch import load_file
    from transformers import SwinModel

    with tempfile.TemporaryDirectory() as tmp:
        shutil.copy(os.path.join(fixture_dir, "config.json"), tmp)
        shutil.copy(os.path.join(fixture_dir, "params.safetensors"),
                    os.path.join(tmp, "model.safetensors"))
        model, info = SwinModel.from_pretrained(
            tmp, add_pooling_layer=False, attn_implementation="sdpa", output_loading_info=True
        )
    bad = {k: v for k, v in info.items() if v and k != "unexpected_keys"}
    unexpected = [k for k in info.get("unexpected_keys", []) if "relative_position_index" not in k]
    if bad or unexpected:
        raise RuntimeError(f"{fixture_dir}: transformers loads the fixture with {info}")
    pixel_values = load_file(os.path.join(fixture_dir, "inputs.safetensors"))["pixel_values"]
    with torch.no_grad():
        again = model(pixel_values=pixel_values).last_hidden_state
    if rel_err(again, output.double()) > 1e-6:
        raise RuntimeError(f"{fixture_dir}: reloaded SwinModel disagrees with the fixture")


# --------------------------------------------------------------------------------------------
# Milmer fixtures
# --------------------------------------------------------------------------------------------


class SelectionLog:
    """Records the AMIL weights of every forward, to reject near-ties in top-K."""

    def __init__(self, amil):
        self.weights = []
        self.index = []
        amil.register_forward_hook(self._hook)

    def _hook(self, module, inputs, output):
        self.weights.append(output[1]["weights"].detach().clone())
        self.index.append(output[1]["index"].detach().clone())

    def min_margin(self, k: int) -> float:
        m = math.inf
        for w in self.weights:
            s = torch.sort(w.double(), dim=1, descending=True).values
            top = min(k + 1, s.shape[1])
            if top > 1:
                m = min(m, float((s[:, : top - 1] - s[:, 1:top]).min()))
        return m


def run_milmer(model, frames, eeg, labels) -> dict:
    model.train()  # all dropouts are 0 in fixture configs
    inter = {}
    logits = model(frames, eeg, inter)
    loss = F.cross_entropy(logits, labels)
    model.zero_grad(set_to_none=True)
    loss.backward()
    out = {"logits": logits.detach().clone(), "loss": loss.detach().clone()}
    out.update(grads_of(model.canonical_state_dict()))
    for k in ("swin.out", "amil.scores", "amil.weights", "amil.gates", "ca.out", "eeg.tokens",
              "fusion.out"):
        out["inter." + k] = inter[k].detach().clone()
    out["inter.amil.index"] = inter["amil.index"].detach().clone()
    return out


def make_milmer_attempt(cfg: dict, batch: int, seed: int):
    torch.manual_seed(seed)
    g = torch.Generator().manual_seed(seed)
    model = ref.Milmer(cfg)
    params = model.canonical_state_dict()
    randomize(params, g)
    frames, eeg, labels = ref.random_batch(model.cfg, batch, g)
    init_params = {n: p.detach().clone() for n, p in params.items()}

    model64 = copy.deepcopy(model).double()
    log32, log64 = SelectionLog(model.amil), SelectionLog(model64.amil)
    out32 = run_milmer(model, frames, eeg, labels)
    out64 = run_milmer(model64, frames.double(), eeg.double(), labels)
    # Training: fresh copies so the optimiser starts from the fixture parameters.
    train32, train64 = copy.deepcopy(model), copy.deepcopy(model64)
    log32t, log64t = SelectionLog(train32.amil), SelectionLog(train64.amil)
    out32["losses"] = ref.train_steps(train32, frames, eeg, labels, TRAIN_STEPS, TRAIN_LR)
    out64["losses"] = ref.train_steps(
        train64, frames.double(), eeg.double(), labels, TRAIN_STEPS, TRAIN_LR
    )
    for n in ("head.weight", "head.bias"):
        out32[f"after{TRAIN_STEPS}.{n}"] = train32.canonical_state_dict()[n].detach().clone()
        out64[f"after{TRAIN_STEPS}.{n}"] = train64.canonical_state_dict()[n].detach().clone()

    k = model.cfg["top_k"]
    margin = min(log.min_margin(k) for log in (log32, log64, log32t, log64t))
    same = all(
        torch.equal(a, b)
        for a, b in zip(log32.index + log32t.index, log64.index + log64t.index)
    )
    return model, init_params, (frames, eeg, labels), out32, out64, margin, same


def make_milmer_fixture(out_dir: str, cfg: dict, batch: int, seed: int) -> dict:
    os.makedirs(out_dir, exist_ok=True)
    cfg = ref.check_config(no_dropout(cfg))
    for attempt in range(100):
        s = seed + attempt
        model, params, (frames, eeg, labels), out32, out64, margin, same = make_milmer_attempt(
            cfg, batch, s
        )
        if margin >= TIE_MARGIN and same:
            break
        print(f"  seed {s}: top-K margin {margin:.2e}, same selection {same}; re-seeding")
    else:
        raise RuntimeError("no seed without near-ties in top-K")

    ref.save_config(cfg, os.path.join(out_dir, "config.json"))
    save(params, os.path.join(out_dir, "params.safetensors"), s)
    save({"frames": frames, "eeg": eeg, "labels": labels},
         os.path.join(out_dir, "inputs.safetensors"), s)
    # Intermediates are for locating a mismatch, not for tolerances: float32 only.
    expected = with_ref64(out32, {k: v for k, v in out64.items() if not k.startswith("inter.")})
    expected["lr"] = torch.tensor(TRAIN_LR, dtype=torch.float32)
    expected["weight_decay"] = torch.tensor(0.01, dtype=torch.float32)
    save(expected, os.path.join(out_dir, "expected.safetensors"), s)
    verify_milmer_fixture(out_dir, out32["logits"])
    return {
        "seed": s,
        "top-K margin": margin,
        "logits fp32 vs fp64 (max rel)": rel_err(out32["logits"], out64["logits"]),
        "losses": [round(v, 5) for v in out32["losses"].tolist()],
    }


def verify_milmer_fixture(fixture_dir: str, logits: torch.Tensor) -> None:
    """Rebuilds the model from the written config and parameters and reruns the forward."""
    from safetensors.torch import load_file

    model = ref.Milmer(ref.load_config(os.path.join(fixture_dir, "config.json")))
    model.load_canonical_state_dict(load_file(os.path.join(fixture_dir, "params.safetensors")))
    inputs = load_file(os.path.join(fixture_dir, "inputs.safetensors"))
    model.train()
    with torch.no_grad():
        again = model(inputs["frames"], inputs["eeg"])
    if rel_err(again, logits.double()) > 1e-6:
        raise RuntimeError(f"{fixture_dir}: rebuilt model disagrees with the fixture")


# --------------------------------------------------------------------------------------------
# Fixture set
# --------------------------------------------------------------------------------------------


def swin_configs() -> dict:
    base = ref.tiny_config()["swin"]
    # Two stages: 8x8 map with 2x2 windows of 4 (shifted), then 4x4 equal to the window, so
    # the second stage runs unshifted (docs/model.md §2, like stage 4 of Swin-T at 224). Batch 2.
    tiny = dict(base, image_size=16, embed_dim=8)
    # 36 / 2 -> 18x18 map: padded to 20 for window 4, patch merging pads 9 -> 10, and the
    # last stage (5x5) pads to 8; every stage has shifted blocks. Three stages, batch 2.
    pad = dict(base, image_size=36, embed_dim=4, depths=[2, 2, 2], num_heads=[1, 2, 2])
    # Odd window (as Swin-T's 7) with shift 2 on a 20x20 map, no qkv bias; the last stage's
    # 5x5 map equals the window and runs unshifted. Batch 1.
    odd = dict(base, image_size=40, embed_dim=4, depths=[2, 2, 2], num_heads=[1, 2, 2],
               window_size=5, qkv_bias=False)
    return {"swin_tiny": (tiny, 2), "swin_pad": (pad, 2), "swin_odd_window": (odd, 1)}


def milmer_configs() -> dict:
    alt = ref.tiny_config()
    alt["swin"].update(image_size=20, embed_dim=8, depths=[2, 2], num_heads=[2, 2])
    alt.update(
        frames=5, top_k=3, amil_hidden=8, amil_detach_scores=False, queries=4, ca_heads=4,
        eeg_channels=3, eeg_samples=20, fusion_layers=1, fusion_heads=4, ffn_dim=24, classes=3,
    )
    return {"milmer_tiny": (ref.tiny_config(), 2), "milmer_alt": (alt, 2)}


def schedule_fixture() -> dict:
    lr, total, warmup = 1e-3, 12, 3
    return {
        "lr": lr,
        "total_steps": total,
        "final_ratio": 0.1,
        "no_warmup": [ref.lr_at(t, total, lr, 0) for t in range(total)],
        "warmup_steps": warmup,
        "warmup": [ref.lr_at(t, total, lr, warmup) for t in range(total)],
    }


def spec_entry(specs) -> list:
    return [[n, list(shape)] for n, shape in specs]


def make_all(out: str, seed: int) -> None:
    os.makedirs(out, exist_ok=True)
    specs = {}
    for name, (swin, batch) in swin_configs().items():
        print(name, make_swin_fixture(os.path.join(out, name), swin, batch, seed))
        swin = ref.swin_from_hf_dict(swin)
        specs[name] = {
            "config": f"{name}/config.json",
            "params": spec_entry(ref.swin_parameter_specs(swin)),
            "buffers": spec_entry(ref.swin_buffer_specs(swin)),
        }
    for name, (cfg, batch) in milmer_configs().items():
        print(name, make_milmer_fixture(os.path.join(out, name), cfg, batch, seed))
    os.makedirs(os.path.join(out, "presets"), exist_ok=True)
    for name, make in ref.PRESETS.items():
        ref.save_config(make(), os.path.join(out, "presets", f"{name}.json"))
    configs = {f"milmer_{p}": f"presets/{p}.json" for p in ref.PRESETS}
    configs.update({n: f"{n}/config.json" for n in milmer_configs()})
    for name, path in configs.items():
        cfg = ref.load_config(os.path.join(out, path))
        model = ref.Milmer(cfg)  # checks the spec list against the real module tree
        specs[name] = {
            "config": path,
            "params": spec_entry((n, list(p.shape)) for n, p in model.canonical_state_dict().items()),
            "count": sum(p.numel() for p in model.parameters()),
        }
    write_json(specs, os.path.join(out, "parameter_specs.json"), indent=None)
    write_json(schedule_fixture(), os.path.join(out, "schedule.json"))


def main() -> None:
    ap = argparse.ArgumentParser(description="Write the golden fixtures (docs/golden.md).")
    ap.add_argument("--out", default=os.path.join(REPO, "tests", "golden"))
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--full-swin-t", metavar="DIR",
                    help="write only a Swin-T 224 forward fixture (random weights) to DIR, "
                         "which must be outside the repository")
    args = ap.parse_args()

    torch.use_deterministic_algorithms(True)
    torch.set_num_threads(1)
    if args.full_swin_t:
        d = os.path.abspath(args.full_swin_t)
        if os.path.commonpath([d, REPO]) == REPO:
            sys.exit(f"--full-swin-t: {d} is inside the repository; fixtures that size stay out")
        swin = dict(ref.swin_t_dict())
        print("swin_t_224", make_swin_fixture(d, swin, 1, args.seed, with_grad=False))
        return
    make_all(args.out, args.seed)


if __name__ == "__main__":
    main()
