"""HSPG(adamw) vs torch.optim.AdamW(foreach=True): median `step()` time and optimizer-state memory.

BERT-base shape (transformers `BertConfig()` defaults: 12 layers, hidden 768, 12 heads, FFN 3072), random
init, no download, groups from `hf_oto.build_groups`, fixed random gradients. Three models are stepped
interleaved in one run, so machine noise hits every optimizer alike:

- AdamW(foreach=True), the reference;
- HSPG stage 1 (subgradient stage: every step before n_p);
- HSPG stage 2 (half-space stage with a live target schedule: 30% of the groups already zero, candidate
  selection, adaptive shrink and capped projection every step).

Usage: ``python bench/optimizer_step.py [--reps 7] [--threads 1] [--device cpu|cuda]``. Prints the medians,
the ratios (target ≤ 1.5) and the state memory ratio (target ≤ 1.1; HSPG's figure includes its CPU workspace).

``--threads`` defaults to 1: on a small machine shared with other jobs, multi-threaded timings are dominated
by OpenMP threads waiting for descheduled siblings (AdamW itself varied 10x between runs here), which says
nothing about either optimizer. On a quiet many-core machine pass ``--threads 0``.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
from transformers import BertConfig, BertModel

from hf_oto import HSPG, build_groups


def make_model(seed: int, device: str) -> BertModel:
    torch.manual_seed(seed)
    model = BertModel(BertConfig()).to(device)
    for p in model.parameters():
        p.grad = torch.randn_like(p) * 1e-2
    return model


def state_bytes(optimizer: torch.optim.Optimizer) -> int:
    """Bytes of every tensor the optimizer keeps between steps (per-parameter state and HSPG's global state)."""
    seen: dict[int, int] = {}

    def visit(value) -> None:
        if torch.is_tensor(value):
            seen[value.untyped_storage().data_ptr()] = value.untyped_storage().nbytes()
        elif isinstance(value, dict):
            for item in value.values():
                visit(item)
        elif isinstance(value, (list, tuple)):
            for item in value:
                visit(item)

    if isinstance(optimizer, HSPG):
        return optimizer.state_bytes()  # moments, per-group tensors and the CPU workspace
    for state in optimizer.state.values():
        visit(state)
    return sum(seen.values())


def timed(optimizer: torch.optim.Optimizer, device: str) -> float:
    if device == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    optimizer.step()
    if device == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--reps", type=int, default=7)
    parser.add_argument(
        "--threads", type=int, default=1, help="torch CPU threads (0: torch's default); see the module docstring"
    )
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    total = 10_000
    reference_model, stage1_model, stage2_model = (
        make_model(0, args.device),
        make_model(0, args.device),
        make_model(0, args.device),
    )
    reference = torch.optim.AdamW(reference_model.parameters(), lr=1e-4, weight_decay=0.01, foreach=True)
    stage1 = HSPG(
        stage1_model.parameters(), build_groups(stage1_model), lr=1e-4, weight_decay=0.01, n_p=total, lam=1e-3
    )
    groups2 = build_groups(stage2_model)
    stage2 = HSPG(
        stage2_model.parameters(),
        groups2,
        lr=1e-4,
        weight_decay=0.01,
        n_p=0,
        lam=1e-3,
        target_group_sparsity=0.5,
        total_steps=total,
    )
    # 30% of the groups are already zero (evenly spread), so masking paths are exercised.
    keep = torch.arange(len(groups2)) % 10 >= 3
    groups2.apply_mask_(keep.to(args.device))

    for optimizer in (reference, stage1, stage2):  # warm-up: allocate state, first projection
        optimizer.step()
    times: dict[str, list[float]] = {"adamw": [], "stage1": [], "stage2": []}
    for _ in range(args.reps):
        times["adamw"].append(timed(reference, args.device))
        times["stage1"].append(timed(stage1, args.device))
        times["stage2"].append(timed(stage2, args.device))
    median = {name: statistics.median(values) for name, values in times.items()}
    report = stage2.sparsity_report()

    params = sum(p.numel() for p in reference_model.parameters())
    print(
        f"BERT-base shape: {params / 1e6:.1f}M parameters, {len(groups2)} groups, torch {torch.__version__}, "
        f"{args.device}, {torch.get_num_threads()} threads, {args.reps} interleaved reps"
    )
    print(f"{'optimizer':<34}{'median step':>14}{'ratio':>8}")
    print(f"{'torch.optim.AdamW(foreach=True)':<34}{median['adamw'] * 1e3:>11.1f} ms{1.0:>8.2f}")
    print(f"{'HSPG adamw, stage 1':<34}{median['stage1'] * 1e3:>11.1f} ms{median['stage1'] / median['adamw']:>8.2f}")
    print(
        f"{f'HSPG adamw, stage 2 ({stage2.saliency.name})':<34}{median['stage2'] * 1e3:>11.1f} ms"
        f"{median['stage2'] / median['adamw']:>8.2f}"
    )
    print(f"  stage 2 state: {report['zero_groups']} zero groups, {report['candidates']} candidates shrinking")
    ref_bytes, hspg_bytes = state_bytes(reference), state_bytes(stage2)
    print(
        f"optimizer state: AdamW {ref_bytes / 2**20:.1f} MiB, HSPG {hspg_bytes / 2**20:.1f} MiB, "
        f"ratio {hspg_bytes / ref_bytes:.4f}"
    )


if __name__ == "__main__":
    main()
