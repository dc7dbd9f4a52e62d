"""Kernel launches per optimizer step: HSPG vs torch.optim.AdamW, counted (not timed).

On a GPU, a BERT-base optimizer step is bound by kernel-launch latency, not bandwidth: HSPG's cost over
AdamW is roughly the number of extra kernels it launches. This bench counts, with `torch.profiler`, the
compute operators each `step()` dispatches (views and other metadata-only operators excluded; a `_foreach_*`
operator counts once, as on CUDA it is one or a few multi-tensor kernels). With ``--device cuda`` it also
counts the CUDA kernels actually launched.

The model has BERT-base's layer structure (12 layers, 12 heads, FFN 4x) at a small width so the count runs
anywhere in seconds; the count does not depend on the width. On CPU, HSPG is built with the accelerator
layout (no CPU workspace, all layers of a structure stacked), so the figures are those a GPU run dispatches.

Usage: ``python bench/optimizer_launches.py [--device cpu|cuda] [--hidden 48]``.
"""

from __future__ import annotations

import argparse

import torch
from torch.profiler import ProfilerActivity, profile
from transformers import BertConfig, BertModel

from hf_oto import HSPG, build_groups

METADATA_OPS = {
    "aten::view",
    "aten::slice",
    "aten::reshape",
    "aten::unflatten",
    "aten::to",
    "aten::item",
    "aten::_local_scalar_dense",
    "aten::detach",
    "aten::detach_",
    "aten::lift_fresh",
    "aten::as_strided",
    "aten::select",
    "aten::expand",
    "aten::alias",
    "aten::squeeze",
    "aten::unsqueeze",
    "aten::_reshape_alias",
    "aten::t",
    "aten::flatten",
    "aten::unbind",
    "aten::view_as",
    "aten::_unsafe_view",
    "aten::empty",
    "aten::empty_like",
    "aten::empty_strided",
    "aten::resolve_conj",
    "aten::resolve_neg",
}


def make_model(hidden: int, device: str) -> BertModel:
    torch.manual_seed(0)
    config = BertConfig(hidden_size=hidden, num_attention_heads=12, intermediate_size=4 * hidden, vocab_size=1000)
    model = BertModel(config).to(device)
    for p in model.parameters():
        p.grad = torch.randn_like(p) * 1e-2
    return model


def count(optimizer: torch.optim.Optimizer, device: str) -> tuple[int, int | None]:
    """(top-level compute operators, CUDA kernels or None) dispatched by one `step()`."""
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device == "cuda" else [])
    with profile(activities=activities) as prof:
        optimizer.step()
        if device == "cuda":
            torch.cuda.synchronize()
    events = prof.events()
    operators = [
        e
        for e in events
        if e.name.startswith("aten::")
        and e.name not in METADATA_OPS
        and (e.cpu_parent is None or not e.cpu_parent.name.startswith("aten::"))
    ]
    kernels = None
    if device == "cuda":
        kernels = sum(1 for e in events if e.device_type == torch.autograd.DeviceType.CUDA)
    return len(operators), kernels


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--hidden", type=int, default=48, help="model width (multiple of 12)")
    args = parser.parse_args()
    total = 10_000
    # the accelerator layout on every device (see the docstring)
    hspg = {"lr": 1e-4, "weight_decay": 0.01, "lam": 1e-3, "layout": "stacked"}
    window = {"n_p": 0, "target_group_sparsity": 0.5, "total_steps": total}
    runs = {}
    model = make_model(args.hidden, args.device)
    runs["AdamW(foreach=True)"] = torch.optim.AdamW(model.parameters(), lr=1e-4, weight_decay=0.01, foreach=True)
    model = make_model(args.hidden, args.device)
    runs["AdamW(fused=True)"] = torch.optim.AdamW(model.parameters(), lr=1e-4, weight_decay=0.01, fused=True)
    model = make_model(args.hidden, args.device)
    runs["HSPG stage 1"] = HSPG(model.parameters(), build_groups(model), n_p=total, **hspg)
    model = make_model(args.hidden, args.device)
    runs["HSPG window, magnitude"] = HSPG(
        model.parameters(), build_groups(model), saliency="magnitude", **window, **hspg
    )
    model = make_model(args.hidden, args.device)
    runs["HSPG window, taylor"] = HSPG(model.parameters(), build_groups(model), saliency="taylor", **window, **hspg)

    print(f"BERT-base layer structure at width {args.hidden}, {args.device}, torch {torch.__version__}")
    print(f"{'optimizer':<28}{'operators/step':>16}{'CUDA kernels/step':>20}")
    for name, optimizer in runs.items():
        for _ in range(3):  # state allocation, first projections
            optimizer.step()
        operators, kernels = count(optimizer, args.device)
        print(f"{name:<28}{operators:>16}{'-' if kernels is None else kernels:>20}")


if __name__ == "__main__":
    main()
