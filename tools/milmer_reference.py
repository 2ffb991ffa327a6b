#!/usr/bin/env python3
"""PyTorch reference implementation of the Milmer model (docs: docs/golden.md).

This is the executable form of docs/model.md: every module, formula and parameter name below
follows that page, and the C++ library is checked against fixtures produced from it
(tools/make_golden.py). Section numbers in comments (§N) refer to docs/model.md.

Parameter names. The Milmer state dict uses the names of docs/model.md §11. The Swin part
uses the names transformers writes to disk (`save_pretrained`) and that every Hub Swin
checkpoint has (`attention.self.query.weight`, `intermediate.dense.weight`, ...). Recent
transformers releases rename these in memory (`attention.q_proj`, `mlp.fc1`, ...) and map
them back on save; `swin_memory_to_checkpoint_name` does the same mapping here, so the names
are the same whichever transformers version runs this file. `canonical_state_dict` /
`load_canonical_state_dict` speak only checkpoint names, in the order of `parameter_specs`.

Usage:
  python3 tools/milmer_reference.py --preset tiny            # parameter count per module
  python3 tools/milmer_reference.py --preset tiny --steps 20 # a few AdamW steps on noise
  python3 tools/milmer_reference.py --config my.json --export-specs specs.json
"""

from __future__ import annotations

import argparse
import json
import math
from collections import OrderedDict

import torch
import torch.nn as nn
import torch.nn.functional as F

# --------------------------------------------------------------------------------------------
# Configuration (the config file of §10)
# --------------------------------------------------------------------------------------------

# The Swin keys a config carries; anything else in a transformers config.json is ignored.
SWIN_KEYS = (
    "image_size",
    "patch_size",
    "num_channels",
    "embed_dim",
    "depths",
    "num_heads",
    "window_size",
    "mlp_ratio",
    "qkv_bias",
    "layer_norm_eps",
    "drop_path_rate",
    "hidden_act",
    "hidden_dropout_prob",
    "attention_probs_dropout_prob",
    "use_absolute_embeddings",
)

MILMER_KEYS = (
    "frames",
    "top_k",
    "amil_hidden",
    "amil_detach_scores",
    "queries",
    "ca_heads",
    "ca_dropout",
    "eeg_channels",
    "eeg_samples",
    "fusion_layers",
    "fusion_heads",
    "ffn_dim",
    "dropout",
    "head_dropout",
    "classes",
)


def swin_t_dict() -> dict:
    """Swin-T 224 (§2); equal to transformers' SwinConfig defaults."""
    return {
        "image_size": 224,
        "patch_size": 4,
        "num_channels": 3,
        "embed_dim": 96,
        "depths": [2, 2, 6, 2],
        "num_heads": [3, 6, 12, 24],
        "window_size": 7,
        "mlp_ratio": 4.0,
        "qkv_bias": True,
        "layer_norm_eps": 1e-5,
        "drop_path_rate": 0.1,
        "hidden_act": "gelu",
        "hidden_dropout_prob": 0.0,
        "attention_probs_dropout_prob": 0.0,
        "use_absolute_embeddings": False,
    }


def paper_config() -> dict:
    """The `paper` preset (§9)."""
    return {
        "swin": swin_t_dict(),
        "frames": 10,
        "top_k": 3,
        "amil_hidden": 128,
        "amil_detach_scores": True,
        "queries": 64,
        "ca_heads": 12,
        "ca_dropout": 0.2,
        "eeg_channels": 32,
        "eeg_samples": 384,
        "fusion_layers": 2,
        "fusion_heads": 12,
        "ffn_dim": 2048,
        "dropout": 0.2,
        "head_dropout": 0.1,
        "classes": 4,
    }


def tiny_config() -> dict:
    """The `tiny` preset (§9). Must equal milmer::MilmerConfig::tiny() in config.hpp.

    Swin: 32x32 image, 2x2 patches -> 16x16 map (stage 1, width 16, 1 head), 8x8 (stage 2,
    width 32, 2 heads); window 4 so both stages have 4 or more windows and shifted blocks.
    Model width D = 32, 64 tokens per frame. The other sizes scale the paper's ratios:
    ffn 2D, AMIL hidden D/2, 2 heads everywhere.
    """
    swin = swin_t_dict()
    swin.update(
        image_size=32, patch_size=2, embed_dim=16, depths=[2, 2], num_heads=[1, 2], window_size=4
    )
    return {
        "swin": swin,
        "frames": 4,
        "top_k": 2,
        "amil_hidden": 16,
        "amil_detach_scores": True,
        "queries": 8,
        "ca_heads": 2,
        "ca_dropout": 0.2,
        "eeg_channels": 8,
        "eeg_samples": 64,
        "fusion_layers": 2,
        "fusion_heads": 2,
        "ffn_dim": 64,
        "dropout": 0.2,
        "head_dropout": 0.1,
        "classes": 4,
    }


PRESETS = {"tiny": tiny_config, "paper": paper_config}


def swin_from_hf_dict(d: dict) -> dict:
    """The Swin keys of a transformers config dict, missing ones at transformers' defaults."""
    out = swin_t_dict()
    for k in SWIN_KEYS:
        if k in d:
            out[k] = d[k]
    for k in ("image_size", "patch_size"):
        if isinstance(out[k], (list, tuple)):
            if len(set(out[k])) != 1:
                raise ValueError(f"swin.{k}: only square sizes are supported, got {out[k]}")
            out[k] = int(out[k][0])
    return out


def check_config(cfg: dict) -> dict:
    missing = [k for k in ("swin",) + MILMER_KEYS if k not in cfg]
    extra = [k for k in cfg if k not in ("swin",) + MILMER_KEYS]
    if missing or extra:
        raise ValueError(f"milmer config: missing keys {missing}, unknown keys {extra}")
    cfg = dict(cfg)
    cfg["swin"] = swin = swin_from_hf_dict(cfg["swin"])
    # The same settings milmer::SwinConfig refuses: the C++ model does not implement them.
    if swin["use_absolute_embeddings"] or swin["hidden_act"] != "gelu":
        raise ValueError("swin: absolute embeddings and activations other than gelu unsupported")
    if swin["hidden_dropout_prob"] or swin["attention_probs_dropout_prob"]:
        raise ValueError("swin: hidden / attention dropout must be 0")
    if min(swin_resolutions(swin)) < swin["window_size"]:
        raise ValueError(f"swin: a stage map {swin_resolutions(swin)} is below the window")
    d = model_width(cfg)
    if cfg["top_k"] > cfg["frames"] or cfg["top_k"] < 1:
        raise ValueError(f"milmer config: top_k must be in [1, frames], got {cfg['top_k']}")
    for heads_key in ("ca_heads", "fusion_heads"):
        if d % cfg[heads_key]:
            raise ValueError(f"milmer config: width {d} not divisible by {heads_key}")
    return cfg


def load_config(path: str) -> dict:
    with open(path) as f:
        return check_config(json.load(f))


def save_config(cfg: dict, path: str) -> None:
    with open(path, "w") as f:
        json.dump(cfg, f, indent=2)
        f.write("\n")


def model_width(cfg: dict) -> int:
    s = cfg["swin"]
    return s["embed_dim"] * 2 ** (len(s["depths"]) - 1)


def swin_resolutions(swin: dict) -> list[int]:
    """Feature-map side per stage: patch embed pads to a patch multiple, merging pads to even."""
    r = -(-swin["image_size"] // swin["patch_size"])
    out = []
    for _ in swin["depths"]:
        out.append(r)
        r = -(-r // 2)
    return out


def tokens_per_frame(cfg: dict) -> int:
    return swin_resolutions(cfg["swin"])[-1] ** 2


def hf_swin_config(swin: dict, attn_implementation: str = "sdpa"):
    """A transformers.SwinConfig for the `swin` dict.

    Attention runs through SDPA: transformers' eager path computes the softmax in float32
    even for a float64 model, which would spoil the fp64 reference runs.
    """
    from transformers import SwinConfig

    c = SwinConfig(**swin)
    c._attn_implementation = attn_implementation
    return c


# --------------------------------------------------------------------------------------------
# Parameter names (§11)
# --------------------------------------------------------------------------------------------

# In-memory name (recent transformers) -> checkpoint name. Identity on transformers releases
# that still use the checkpoint names in memory, since no pattern then matches.
_SWIN_RENAMES = (
    (".attention.q_proj.", ".attention.self.query."),
    (".attention.k_proj.", ".attention.self.key."),
    (".attention.v_proj.", ".attention.self.value."),
    (
        ".attention.relative_position_bias.relative_position_bias_table",
        ".attention.self.relative_position_bias_table",
    ),
    (".attention.o_proj.", ".attention.output.dense."),
    (".mlp.fc1.", ".intermediate.dense."),
    (".mlp.fc2.", ".output.dense."),
)


def swin_memory_to_checkpoint_name(name: str) -> str:
    for src, dst in _SWIN_RENAMES:
        if src in name:
            return name.replace(src, dst)
    return name


def swin_parameter_specs(swin: dict, prefix: str = "") -> list[tuple[str, list[int]]]:
    """Swin parameters in checkpoint names, in forward order (transformers 4.x module order)."""
    c, p = swin["embed_dim"], swin["patch_size"]
    specs = [
        ("embeddings.patch_embeddings.projection.weight", [c, swin["num_channels"], p, p]),
        ("embeddings.patch_embeddings.projection.bias", [c]),
        ("embeddings.norm.weight", [c]),
        ("embeddings.norm.bias", [c]),
    ]
    w = swin["window_size"]
    nstage = len(swin["depths"])
    for s, (depth, heads) in enumerate(zip(swin["depths"], swin["num_heads"])):
        dim = swin["embed_dim"] * 2**s
        hidden = int(swin["mlp_ratio"] * dim)
        for b in range(depth):
            blk = f"encoder.layers.{s}.blocks.{b}."
            specs += [
                (blk + "layernorm_before.weight", [dim]),
                (blk + "layernorm_before.bias", [dim]),
                (blk + "attention.self.relative_position_bias_table", [(2 * w - 1) ** 2, heads]),
            ]
            for proj in ("query", "key", "value"):
                specs.append((blk + f"attention.self.{proj}.weight", [dim, dim]))
                if swin["qkv_bias"]:
                    specs.append((blk + f"attention.self.{proj}.bias", [dim]))
            specs += [
                (blk + "attention.output.dense.weight", [dim, dim]),
                (blk + "attention.output.dense.bias", [dim]),
                (blk + "layernorm_after.weight", [dim]),
                (blk + "layernorm_after.bias", [dim]),
                (blk + "intermediate.dense.weight", [hidden, dim]),
                (blk + "intermediate.dense.bias", [hidden]),
                (blk + "output.dense.weight", [dim, hidden]),
                (blk + "output.dense.bias", [dim]),
            ]
        if s < nstage - 1:
            specs += [
                (f"encoder.layers.{s}.downsample.reduction.weight", [2 * dim, 4 * dim]),
                (f"encoder.layers.{s}.downsample.norm.weight", [4 * dim]),
                (f"encoder.layers.{s}.downsample.norm.bias", [4 * dim]),
            ]
    d = swin["embed_dim"] * 2 ** (nstage - 1)
    specs += [("layernorm.weight", [d]), ("layernorm.bias", [d])]
    return [(prefix + n, shape) for n, shape in specs]


def swin_buffer_specs(swin: dict, prefix: str = "") -> list[tuple[str, list[int]]]:
    """The int64 relative_position_index buffers as transformers 4.x checkpoints store them."""
    w2 = swin["window_size"] ** 2
    return [
        (prefix + f"encoder.layers.{s}.blocks.{b}.attention.self.relative_position_index", [w2, w2])
        for s, depth in enumerate(swin["depths"])
        for b in range(depth)
    ]


def relative_position_index(window: int) -> torch.Tensor:
    """Standard Swin index (window^2 x window^2, int64) into the (2W-1)^2 bias table."""
    coords = torch.stack(torch.meshgrid(torch.arange(window), torch.arange(window), indexing="ij"))
    flat = coords.flatten(1)
    rel = (flat[:, :, None] - flat[:, None, :]).permute(1, 2, 0) + (window - 1)
    return rel[:, :, 0] * (2 * window - 1) + rel[:, :, 1]


def parameter_specs(cfg: dict) -> list[tuple[str, list[int]]]:
    """Every Milmer parameter, §11 names, in the order milmer::parameter_specs uses."""
    d, L = model_width(cfg), cfg["amil_hidden"]
    n, c, s = cfg["queries"], cfg["eeg_channels"], cfg["eeg_samples"]
    specs = swin_parameter_specs(cfg["swin"], "swin.")
    specs += [
        ("amil.V.weight", [L, d]),
        ("amil.V.bias", [L]),
        ("amil.w.weight", [1, L]),
        ("amil.w.bias", [1]),
        ("ca.queries", [n, d]),
        ("ca.attn.in_proj_weight", [3 * d, d]),
        ("ca.attn.in_proj_bias", [3 * d]),
        ("ca.attn.out_proj.weight", [d, d]),
        ("ca.attn.out_proj.bias", [d]),
        ("eeg.norm.weight", [s]),
        ("eeg.norm.bias", [s]),
        ("eeg.proj.weight", [d, s]),
        ("eeg.proj.bias", [d]),
        ("fusion.cls", [d]),
        ("fusion.type_embed.weight", [2, d]),
        ("fusion.pos_visual", [n, d]),
        ("fusion.pos_eeg", [c, d]),
    ]
    f = cfg["ffn_dim"]
    for i in range(cfg["fusion_layers"]):
        p = f"fusion.layers.{i}."
        specs += [
            (p + "self_attn.in_proj_weight", [3 * d, d]),
            (p + "self_attn.in_proj_bias", [3 * d]),
            (p + "self_attn.out_proj.weight", [d, d]),
            (p + "self_attn.out_proj.bias", [d]),
            (p + "linear1.weight", [f, d]),
            (p + "linear1.bias", [f]),
            (p + "linear2.weight", [d, f]),
            (p + "linear2.bias", [d]),
            (p + "norm1.weight", [d]),
            (p + "norm1.bias", [d]),
            (p + "norm2.weight", [d]),
            (p + "norm2.bias", [d]),
        ]
    specs += [("head.weight", [cfg["classes"], d]), ("head.bias", [cfg["classes"]])]
    return specs


def swin_canonical_state_dict(swin_model: nn.Module, swin: dict, prefix: str = "") -> OrderedDict:
    """Parameters of a transformers SwinModel under checkpoint names, in spec order."""
    by_name = {
        prefix + swin_memory_to_checkpoint_name(n): p for n, p in swin_model.named_parameters()
    }
    specs = swin_parameter_specs(swin, prefix)
    _check_same_names(by_name, specs, "SwinModel")
    return OrderedDict((n, by_name[n]) for n, _ in specs)


def _check_same_names(by_name: dict, specs: list, what: str) -> None:
    want = {n: shape for n, shape in specs}
    missing = sorted(set(want) - set(by_name))
    extra = sorted(set(by_name) - set(want))
    shape = sorted(n for n in want if n in by_name and list(by_name[n].shape) != want[n])
    if missing or extra or shape:
        raise RuntimeError(
            f"{what}: parameter names disagree with the spec: missing {missing}, "
            f"extra {extra}, wrong shape {shape}"
        )


# --------------------------------------------------------------------------------------------
# Model
# --------------------------------------------------------------------------------------------


class AMIL(nn.Module):
    """Attention-based MIL top-K frame selection (§3)."""

    def __init__(self, d: int, hidden: int, top_k: int, detach_scores: bool):
        super().__init__()
        self.V = nn.Linear(d, hidden)
        self.w = nn.Linear(hidden, 1)
        self.top_k = top_k
        self.detach_scores = detach_scores

    def forward(self, x: torch.Tensor):
        """x: (B, F, M, D) frame tokens -> Z (B, K*M, D) and the selection details."""
        b, f, m, d = x.shape
        e = x.mean(dim=2)  # (B, F, D) instance embeddings
        if self.detach_scores:
            e = e.detach()
        scores = self.w(torch.tanh(self.V(e))).squeeze(-1)  # (B, F)
        weights = torch.softmax(scores, dim=1)
        # Descending, stable: equal weights keep the lower frame index first. The sort itself
        # is not differentiable; gradients reach V and w through the gates below.
        index = torch.sort(weights.detach(), dim=1, descending=True, stable=True).indices
        index = index[:, : self.top_k]  # (B, K)
        selected = torch.gather(weights, 1, index)  # (B, K)
        gates = selected / selected.mean(dim=1, keepdim=True)
        tokens = torch.gather(x, 1, index[:, :, None, None].expand(b, self.top_k, m, d))
        z = (gates[:, :, None, None] * tokens).reshape(b, self.top_k * m, d)
        return z, {"scores": scores, "weights": weights, "index": index, "gates": gates}


class TokenCompression(nn.Module):
    """N learnable queries cross-attend to the selected tokens (§4)."""

    def __init__(self, d: int, queries: int, heads: int, dropout: float):
        super().__init__()
        self.queries = nn.Parameter(torch.empty(queries, d))
        self.attn = nn.MultiheadAttention(d, heads, dropout=dropout, batch_first=True)
        nn.init.normal_(self.queries, std=0.02)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        q = self.queries.unsqueeze(0).expand(z.shape[0], -1, -1)
        out, _ = self.attn(q, z, z, need_weights=False)
        return out


class EEGBranch(nn.Module):
    """One token per channel: LayerNorm over samples, Linear, ReLU (§5)."""

    def __init__(self, samples: int, d: int):
        super().__init__()
        self.norm = nn.LayerNorm(samples)
        self.proj = nn.Linear(samples, d)

    def forward(self, eeg: torch.Tensor) -> torch.Tensor:
        return F.relu(self.proj(self.norm(eeg)))


class Fusion(nn.Module):
    """[CLS; visual; EEG] + type and position embeddings, post-LN encoder layers (§6)."""

    def __init__(self, cfg: dict, d: int):
        super().__init__()
        self.cls = nn.Parameter(torch.empty(d))
        self.type_embed = nn.Embedding(2, d)
        self.pos_visual = nn.Parameter(torch.empty(cfg["queries"], d))
        self.pos_eeg = nn.Parameter(torch.empty(cfg["eeg_channels"], d))
        self.layers = nn.ModuleList(
            nn.TransformerEncoderLayer(
                d,
                cfg["fusion_heads"],
                cfg["ffn_dim"],
                dropout=cfg["dropout"],
                activation="relu",
                batch_first=True,
                norm_first=False,
            )
            for _ in range(cfg["fusion_layers"])
        )
        # The type embedding shares the 0.02 init so that no added embedding dwarfs the tokens.
        for p in (self.cls, self.type_embed.weight, self.pos_visual, self.pos_eeg):
            nn.init.normal_(p, std=0.02)

    def forward(self, visual: torch.Tensor, eeg: torch.Tensor) -> torch.Tensor:
        b = visual.shape[0]
        types = self.type_embed.weight
        x = torch.cat(
            [
                self.cls.expand(b, 1, -1),
                visual + types[0] + self.pos_visual,
                eeg + types[1] + self.pos_eeg,
            ],
            dim=1,
        )
        for layer in self.layers:
            x = layer(x)
        return x


class Milmer(nn.Module):
    def __init__(self, cfg: dict):
        super().__init__()
        from transformers import SwinModel

        self.cfg = cfg = check_config(cfg)
        d = model_width(cfg)
        self.swin = SwinModel(hf_swin_config(cfg["swin"]), add_pooling_layer=False)
        self.amil = AMIL(d, cfg["amil_hidden"], cfg["top_k"], cfg["amil_detach_scores"])
        self.ca = TokenCompression(d, cfg["queries"], cfg["ca_heads"], cfg["ca_dropout"])
        self.eeg = EEGBranch(cfg["eeg_samples"], d)
        self.fusion = Fusion(cfg, d)
        self.head_dropout = nn.Dropout(cfg["head_dropout"])
        self.head = nn.Linear(d, cfg["classes"])

    def forward(self, frames: torch.Tensor, eeg: torch.Tensor, intermediates: dict | None = None):
        """frames (B, F, 3, H, W), eeg (B, C, S) -> logits (B, classes).

        When `intermediates` is a dict, the activations between modules are stored in it.
        """
        b, f = frames.shape[:2]
        x = self.swin(pixel_values=frames.flatten(0, 1)).last_hidden_state  # (B*F, M, D)
        x = x.unflatten(0, (b, f))
        z, sel = self.amil(x)
        visual = self.ca(z)
        eeg_tokens = self.eeg(eeg)
        fused = self.fusion(visual, eeg_tokens)
        logits = self.head(self.head_dropout(fused[:, 0]))
        if intermediates is not None:
            intermediates.update(
                {"swin.out": x, "amil.z": z, "ca.out": visual, "eeg.tokens": eeg_tokens}
            )
            intermediates.update({"amil." + k: v for k, v in sel.items()})
            intermediates["fusion.out"] = fused
        return logits

    # -- checkpoint names -----------------------------------------------------------------

    def _by_checkpoint_name(self) -> dict:
        out = {}
        for n, p in self.named_parameters():
            if n.startswith("swin."):
                n = "swin." + swin_memory_to_checkpoint_name(n[len("swin.") :])
            out[n] = p
        return out

    def canonical_state_dict(self) -> OrderedDict:
        """Parameters (not copies) under §11 names, in parameter_specs order."""
        by_name = self._by_checkpoint_name()
        specs = parameter_specs(self.cfg)
        _check_same_names(by_name, specs, "Milmer")
        return OrderedDict((n, by_name[n]) for n, _ in specs)

    @torch.no_grad()
    def load_canonical_state_dict(self, tensors: dict) -> None:
        """Copies every parameter from `tensors` (§11 names); extra buffers ignored."""
        own = self.canonical_state_dict()
        params = {n: t for n, t in tensors.items() if not n.endswith("relative_position_index")}
        _check_same_names(params, [(n, list(p.shape)) for n, p in own.items()], "checkpoint")
        for n, p in own.items():
            p.copy_(params[n])


def count_parameters(model: Milmer) -> OrderedDict:
    counts = OrderedDict()
    for n, p in model.canonical_state_dict().items():
        top = n.split(".")[0]
        counts[top] = counts.get(top, 0) + p.numel()
    counts["total"] = sum(counts.values())
    return counts


# --------------------------------------------------------------------------------------------
# Optimiser and schedule (§7)
# --------------------------------------------------------------------------------------------


def make_optimizer(model: nn.Module, lr: float, weight_decay: float = 0.01):
    """AdamW with PyTorch semantics: decoupled decay on every parameter."""
    return torch.optim.AdamW(
        model.parameters(), lr=lr, betas=(0.9, 0.999), eps=1e-8, weight_decay=weight_decay
    )


def lr_at(step: int, total_steps: int, lr: float, warmup_steps: int = 0, final_ratio=0.1):
    """Learning rate of 0-based `step`.

    Warm-up: lr * (step + 1) / warmup_steps for step < warmup_steps. Then cosine from lr to
    final_ratio * lr: with p = (step - warmup) / max(1, total - warmup) clamped to [0, 1],
    lr_t = lr * (final_ratio + (1 - final_ratio) * 0.5 * (1 + cos(pi * p))).
    """
    if step < warmup_steps:
        return lr * (step + 1) / warmup_steps
    p = min(1.0, max(0.0, (step - warmup_steps) / max(1, total_steps - warmup_steps)))
    return lr * (final_ratio + (1.0 - final_ratio) * 0.5 * (1.0 + math.cos(math.pi * p)))


def train_steps(model, frames, eeg, labels, steps: int, lr, total_steps=None, warmup=0):
    """`steps` AdamW steps on one batch; returns the loss before each step.

    `lr` constant when total_steps is None, else the cosine schedule over total_steps.
    """
    opt = make_optimizer(model, lr)
    losses = []
    for t in range(steps):
        if total_steps is not None:
            for g in opt.param_groups:
                g["lr"] = lr_at(t, total_steps, lr, warmup)
        loss = F.cross_entropy(model(frames, eeg), labels)
        losses.append(loss.detach())
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return torch.stack(losses)


def random_batch(cfg: dict, batch: int, generator: torch.Generator, dtype=torch.float32):
    s = cfg["swin"]
    frames = torch.randn(
        batch, cfg["frames"], s["num_channels"], s["image_size"], s["image_size"],
        generator=generator, dtype=dtype,
    )
    eeg = torch.randn(batch, cfg["eeg_channels"], cfg["eeg_samples"], generator=generator,
                      dtype=dtype)
    labels = torch.randint(0, cfg["classes"], (batch,), generator=generator)
    return frames, eeg, labels


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--preset", choices=sorted(PRESETS), default="tiny")
    ap.add_argument("--config", help="model config JSON, docs/model.md §10 (overrides --preset)")
    ap.add_argument("--steps", type=int, default=0, help="AdamW steps on a random batch")
    ap.add_argument("--batch", type=int, default=2)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--export-specs", help="write [[name, shape], ...] of the config as JSON")
    args = ap.parse_args()

    cfg = load_config(args.config) if args.config else PRESETS[args.preset]()
    if args.export_specs:
        with open(args.export_specs, "w") as f:
            json.dump(parameter_specs(check_config(cfg)), f)
    torch.manual_seed(args.seed)
    model = Milmer(cfg)
    for name, n in count_parameters(model).items():
        print(f"{name:>8}: {n:,} parameters")
    if args.steps:
        g = torch.Generator().manual_seed(args.seed)
        frames, eeg, labels = random_batch(model.cfg, args.batch, g)
        model.train()
        losses = train_steps(model, frames, eeg, labels, args.steps, args.lr, args.steps)
        print("losses:", " ".join(f"{v:.4f}" for v in losses.tolist()))


if __name__ == "__main__":
    main()
