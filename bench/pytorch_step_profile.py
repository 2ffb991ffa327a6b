#!/usr/bin/env python3
"""What one training step of the PyTorch reference Milmer costs on the CPU.

  python3 bench/pytorch_step_profile.py --preset tiny|paper [--batch B] [--steps S]

The model is tools/milmer_reference.py's Milmer (the same config as the C++ model), trained
with its make_optimizer (torch.optim.AdamW, PyTorch's defaults for CPU tensors: the
single-tensor loop, foreach=False) on a fixed random batch: forward, cross-entropy, backward,
AdamW step. One warm-up step (it creates the gradients and the AdamW state), then S measured
steps. Prints one JSON object with:

  ops         operator calls of one step, from torch.profiler (CPU activity), by phase:
              aten_top    aten:: calls with no aten:: op above them: the calls Python code,
                          the autograd engine and the optimizer make. This is the number of
                          operators PyTorch eager dispatches per step (on a GPU, most of them
                          launch one or more kernels; views and reshapes launch none).
              aten_all    every aten:: call, nested ones included (an aten::linear counts
                          with the aten::addmm it calls).
  bytes       activations: the tensors autograd saves for backward during forward + loss,
              counted exactly with torch.autograd.graph.saved_tensors_hooks: the distinct
              storages of saved tensors (a storage saved several times, or through several
              views, counts once), parameters excluded, by top-level module. inputs: frames
              and EEG among them. parameters, gradients, adamw_state (exp_avg, exp_avg_sq
              and the step counters) after the warm-up step.
              rss_peak_delta: the process's peak resident size during the warm-up step
              (sampled every millisecond) minus its resident size before the model was
              built, torch and transformers already imported (covers parameters,
              gradients, AdamW state, saved activations and every temporary, and whatever
              the allocator keeps).
  seconds     wall and process CPU time per measured step (torch threads: --threads, default
              every core).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import threading
import time

import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tools"))
import milmer_reference as ref  # noqa: E402


def rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


class RssSampler:
    """Samples the resident size every millisecond on a thread: the peak of a stretch of work.

    ru_maxrss cannot be reset, and importing torch and transformers may already have set it
    higher than the step reaches; a sampler sees the step's own peak. Torch's kernels release
    the GIL, so the thread keeps sampling while they run.
    """

    def __init__(self):
        self.peak = rss_bytes()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        while not self._stop.is_set():
            self.peak = max(self.peak, rss_bytes())
            time.sleep(0.001)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, rss_bytes())
        return False


def storage_key(t: torch.Tensor):
    s = t.untyped_storage()
    return s.data_ptr(), s.nbytes()


class SavedTensorCounter:
    """Distinct storages autograd saves, attributed to the top-level module running."""

    def __init__(self, model: ref.Milmer, inputs: dict[str, torch.Tensor]):
        self.param_storages = {storage_key(p)[0] for p in model.parameters()}
        self.input_storages = {storage_key(t)[0]: name for name, t in inputs.items()}
        self.seen: dict[int, tuple[int, str]] = {}
        self.current = ["loss"]
        self.handles = []
        for name in ("swin", "amil", "ca", "eeg", "fusion", "head_dropout", "head"):
            module = getattr(model, name)
            self.handles.append(module.register_forward_pre_hook(self._enter(name)))
            self.handles.append(module.register_forward_hook(self._leave()))

    def _enter(self, name):
        def hook(_module, _args):
            self.current.append(name)

        return hook

    def _leave(self):
        def hook(_module, _args, _out):
            self.current.pop()

        return hook

    def pack(self, t: torch.Tensor):
        ptr, nbytes = storage_key(t)
        if ptr and ptr not in self.param_storages and ptr not in self.seen:
            owner = self.input_storages.get(ptr, self.current[-1])
            self.seen[ptr] = (nbytes, "inputs" if ptr in self.input_storages else owner)
        return t

    @staticmethod
    def unpack(t):
        return t

    def totals(self) -> dict:
        by_module: dict[str, int] = {}
        for nbytes, owner in self.seen.values():
            by_module[owner] = by_module.get(owner, 0) + nbytes
        return {"total": sum(by_module.values()), "by_module": by_module}

    def remove(self):
        for h in self.handles:
            h.remove()


def count_ops(prof) -> dict:
    """aten calls per phase (record_function ranges named phase:<name>)."""
    out: dict[str, dict[str, int]] = {}
    for ev in prof.events():
        if not ev.name.startswith("aten::"):
            continue
        phase, top, parent = "other", True, ev.cpu_parent
        while parent is not None:
            if parent.name.startswith("aten::"):
                top = False
            if parent.name.startswith("phase:"):
                phase = parent.name[len("phase:") :]
            parent = parent.cpu_parent
        counts = out.setdefault(phase, {"aten_top": 0, "aten_all": 0})
        counts["aten_all"] += 1
        counts["aten_top"] += int(top)
    total = {"aten_top": 0, "aten_all": 0}
    for counts in out.values():
        for k in total:
            total[k] += counts[k]
    out["total"] = total
    return out


def step(model, opt, frames, eeg, labels, phases: bool):
    def phase(name):
        return torch.profiler.record_function("phase:" + name) if phases else _Null()

    with phase("forward"):
        logits = model(frames, eeg)
    with phase("loss"):
        loss = F.cross_entropy(logits, labels)
    with phase("backward"):
        opt.zero_grad(set_to_none=False)
        loss.backward()
    with phase("optimizer"):
        opt.step()
    return loss.detach()


class _Null:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


def profile(preset: str, batch: int, steps: int, threads: int, seed: int) -> dict:
    torch.set_num_threads(threads)
    from transformers import SwinModel  # noqa: F401  (imported before the baseline)

    rss_start = rss_bytes()
    torch.manual_seed(seed)
    cfg = ref.PRESETS[preset]()
    model = ref.Milmer(cfg)
    model.train()
    opt = ref.make_optimizer(model, 1e-4)
    g = torch.Generator().manual_seed(seed)
    frames, eeg, labels = ref.random_batch(model.cfg, batch, g)

    # Warm-up step: saved tensors counted, resident high-water mark measured.
    counter = SavedTensorCounter(model, {"frames": frames, "eeg": eeg})
    with RssSampler() as rss:
        with torch.autograd.graph.saved_tensors_hooks(counter.pack, counter.unpack):
            logits = model(frames, eeg)
            loss = F.cross_entropy(logits, labels)
        counter.remove()
        opt.zero_grad(set_to_none=False)
        loss.backward()
        opt.step()
    saved = counter.totals()
    del logits, loss

    param_bytes = sum(p.numel() * p.element_size() for p in model.parameters())
    grad_bytes = sum(p.grad.numel() * p.grad.element_size() for p in model.parameters())
    state_bytes = sum(
        v.numel() * v.element_size()
        for st in opt.state.values()
        for v in st.values()
        if torch.is_tensor(v)
    )

    # Operator counts of one step.
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
        step(model, opt, frames, eeg, labels, phases=True)
    ops = count_ops(prof)

    wall, cpu = [], []
    for _ in range(steps):
        w0, c0 = time.perf_counter(), time.process_time()
        loss = step(model, opt, frames, eeg, labels, phases=False)
        wall.append(time.perf_counter() - w0)
        cpu.append(time.process_time() - c0)

    return {
        "preset": preset,
        "batch": batch,
        "steps": steps,
        "torch": torch.__version__,
        "threads": threads,
        "parameters": sum(p.numel() for p in model.parameters()),
        "loss": float(loss),
        "ops": ops,
        "bytes": {
            "activations": saved["total"],
            "activations_by_module": saved["by_module"],
            "parameters": param_bytes,
            "gradients": grad_bytes,
            "adamw_state": state_bytes,
            "rss_peak_delta": rss.peak - rss_start,
        },
        "seconds": {"wall": sum(wall) / steps, "cpu": sum(cpu) / steps},
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--preset", choices=sorted(ref.PRESETS), default="tiny")
    ap.add_argument("--batch", type=int, default=2)
    ap.add_argument("--steps", type=int, default=2, help="measured steps after one warm-up")
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    result = profile(args.preset, args.batch, args.steps, args.threads, args.seed)
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
