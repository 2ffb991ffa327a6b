#!/usr/bin/env python3
"""Converts a transformers Swin checkpoint directory into the plain Swin file milmer loads.

  python3 tools/convert_swin.py SRC_DIR OUT.safetensors
  python3 tools/convert_swin.py --self-test

SRC_DIR holds config.json and model.safetensors, a sharded model.safetensors.index.json, or
pytorch_model.bin, saved from SwinModel or SwinForImageClassification (whose tensors carry a
`swin.` prefix and a classifier). OUT gets every SwinModel parameter in float32 under the
names transformers writes to disk, without prefix, plus the int64 relative_position_index
buffers (window^2 x window^2, as transformers 4.x stores them); the classifier is dropped.
A config.json with the Swin fields is written beside OUT. Afterwards the converted file is
loaded back with transformers and must give the source model's output on a random image.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile

import torch
from safetensors.torch import load_file, save_file

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import milmer_reference as ref  # noqa: E402

DROPPED_PREFIXES = ("classifier.",)


def load_source_tensors(src: str) -> dict:
    st = os.path.join(src, "model.safetensors")
    index = os.path.join(src, "model.safetensors.index.json")
    pt = os.path.join(src, "pytorch_model.bin")
    if os.path.exists(st):
        return load_file(st)
    if os.path.exists(index):
        with open(index) as f:
            shards = sorted(set(json.load(f)["weight_map"].values()))
        out = {}
        for shard in shards:
            out.update(load_file(os.path.join(src, shard)))
        return out
    if os.path.exists(pt):
        return torch.load(pt, map_location="cpu", weights_only=True)
    raise SystemExit(f"{src}: no model.safetensors, model.safetensors.index.json or "
                     "pytorch_model.bin")


def convert_tensors(tensors: dict, swin: dict) -> dict:
    """Source tensors -> OrderedDict of plain SwinModel tensors (float32) and index buffers."""
    renamed, dropped = {}, []
    for name, t in tensors.items():
        if name.startswith(DROPPED_PREFIXES):
            dropped.append(name)
            continue
        if name.startswith("swin."):
            name = name[len("swin.") :]
        renamed[ref.swin_memory_to_checkpoint_name(name)] = t

    params = ref.swin_parameter_specs(swin)
    buffers = ref.swin_buffer_specs(swin)
    index = ref.relative_position_index(swin["window_size"])
    problems = []
    out = {}
    for name, shape in params:
        if name not in renamed:
            problems.append(f"missing {name}")
        elif list(renamed[name].shape) != shape:
            problems.append(f"{name}: shape {list(renamed[name].shape)}, expected {shape}")
        else:
            out[name] = renamed[name].to(torch.float32).contiguous()
    for name, shape in buffers:
        if name in renamed and not torch.equal(renamed[name].reshape(-1).long(), index.reshape(-1)):
            problems.append(f"{name}: not the standard Swin index for window {swin['window_size']}")
        out[name] = index.clone()
    extra = sorted(set(renamed) - set(out))
    problems += [f"unexpected tensor {n}" for n in extra]
    if problems:
        raise SystemExit("cannot convert:\n  " + "\n  ".join(problems))
    if dropped:
        print(f"dropped {len(dropped)} tensors: {', '.join(sorted(dropped))}")
    return out


def convert(src: str, out_path: str, check: bool = True) -> None:
    with open(os.path.join(src, "config.json")) as f:
        hf = json.load(f)
    if hf.get("model_type", "swin") != "swin":
        raise SystemExit(f"{src}/config.json: model_type {hf.get('model_type')!r}, expected 'swin'")
    if hf.get("use_absolute_embeddings", False):
        raise SystemExit(f"{src}/config.json: use_absolute_embeddings is not supported")
    swin = ref.swin_from_hf_dict(hf)
    tensors = convert_tensors(load_source_tensors(src), swin)
    out_dir = os.path.dirname(os.path.abspath(out_path))
    os.makedirs(out_dir, exist_ok=True)
    save_file(tensors, out_path, {"converted_from": os.path.basename(os.path.abspath(src))})
    config = {"model_type": "swin"}
    config.update(swin)
    with open(os.path.join(out_dir, "config.json"), "w") as f:
        json.dump(config, f, indent=2)
        f.write("\n")
    n = sum(t.numel() for k, t in tensors.items() if not k.endswith("relative_position_index"))
    print(f"wrote {out_path}: {len(tensors)} tensors, {n:,} parameters")
    if check:
        check_against_source(src, out_path, swin)


@torch.no_grad()
def check_against_source(src: str, out_path: str, swin: dict) -> None:
    """The converted file, loaded by transformers, must reproduce the source model."""
    from transformers import SwinModel

    source = SwinModel.from_pretrained(src, add_pooling_layer=False).eval()
    with tempfile.TemporaryDirectory() as tmp:
        config = {"model_type": "swin"}
        config.update(swin)
        with open(os.path.join(tmp, "config.json"), "w") as f:
            json.dump(config, f)
        os.symlink(os.path.abspath(out_path), os.path.join(tmp, "model.safetensors"))
        converted, info = SwinModel.from_pretrained(
            tmp, add_pooling_layer=False, output_loading_info=True
        )
    if info["missing_keys"]:
        raise SystemExit(f"converted file misses {info['missing_keys']}")
    converted.eval()
    g = torch.Generator().manual_seed(0)
    x = torch.randn(1, swin["num_channels"], swin["image_size"], swin["image_size"], generator=g)
    a = source(pixel_values=x).last_hidden_state
    b = converted(pixel_values=x).last_hidden_state
    if not torch.equal(a, b):
        raise SystemExit(f"converted model differs from the source: max {float((a - b).abs().max())}")
    print("check: transformers reproduces the source model from the converted file")


def self_test() -> None:
    """Round trip through randomly initialised SwinForImageClassification checkpoints."""
    from transformers import SwinForImageClassification

    swin = dict(ref.tiny_config()["swin"])
    torch.manual_seed(0)
    with tempfile.TemporaryDirectory() as tmp:
        model = SwinForImageClassification(ref.hf_swin_config(swin))
        model.config.num_labels = 7
        with torch.no_grad():  # transformers zero-initialises the bias tables
            for n, p in model.named_parameters():
                if "relative_position_bias_table" in n:
                    p.normal_()
        for serialization in (True, False):
            src = os.path.join(tmp, f"src_{serialization}")
            model.save_pretrained(src, safe_serialization=serialization)
            out = os.path.join(tmp, f"out_{serialization}", "swin.safetensors")
            convert(src, out)
            names = set(load_file(out))
            want = {n for n, _ in ref.swin_parameter_specs(swin) + ref.swin_buffer_specs(swin)}
            assert names == want, sorted(names ^ want)
        # A transformers 4.x checkpoint also stores the index buffers (window^2 x window^2).
        src = os.path.join(tmp, "src_v4")
        model.save_pretrained(src)
        tensors = load_file(os.path.join(src, "model.safetensors"))
        for n, _ in ref.swin_buffer_specs(swin, "swin."):
            tensors[n] = ref.relative_position_index(swin["window_size"])
        save_file(tensors, os.path.join(src, "model.safetensors"))
        convert(src, os.path.join(tmp, "out_v4", "swin.safetensors"))
    print("self-test passed")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("src", nargs="?", help="transformers checkpoint directory")
    ap.add_argument("out", nargs="?", help="output .safetensors (config.json goes beside it)")
    ap.add_argument("--no-check", action="store_true", help="skip the reload comparison")
    ap.add_argument("--self-test", action="store_true")
    args = ap.parse_args()
    if args.self_test:
        self_test()
        return
    if not args.src or not args.out:
        ap.error("SRC_DIR and OUT.safetensors are required")
    convert(args.src, args.out, check=not args.no_check)


if __name__ == "__main__":
    main()
