"""HSPG vs Prox-SG on group-lasso logistic regression (the convex comparison of the OTO/HSPG paper).

Datasets bundled with scikit-learn (no download), features standardized and grouped in contiguous blocks,
an unpenalized bias. Objective: mean logistic loss + λ Σ_g ‖w_g‖₂. Both methods see the same mini-batches
with the same decaying learning rate; Prox-SG is the textbook group soft-threshold after each SGD step,
HSPG is `hf_oto.HSPG(variant="sgd")` on a hand-built `GroupSet`. Printed per dataset and method: the final
objective (full batch), the group sparsity (fraction of groups exactly zero), train accuracy and wall time.

Usage: ``python bench/convex.py [--epochs 60] [--seeds 3]``.
"""

from __future__ import annotations

import argparse
import time

import torch
from sklearn.datasets import load_breast_cancer, load_digits, load_wine
from sklearn.preprocessing import StandardScaler

from hf_oto import HSPG, GroupBlock, GroupSet, ParamSlice


def datasets() -> dict[str, tuple[torch.Tensor, torch.Tensor, int, float]]:
    """name -> (features, binary labels, group size, λ)."""
    cancer = load_breast_cancer()
    digits = load_digits()
    wine = load_wine()
    raw = {
        "breast_cancer": (cancer.data, cancer.target, 3, 0.05),
        "digits (0-4 vs 5-9)": (digits.data, digits.target >= 5, 4, 0.02),
        "wine (class 0 vs rest)": (wine.data, wine.target == 0, 3, 0.05),
    }
    out = {}
    for name, (x, y, size, lam) in raw.items():
        x = StandardScaler().fit_transform(x)
        out[name] = (torch.tensor(x, dtype=torch.float32), torch.tensor(y, dtype=torch.float32), size, lam)
    return out


def weight_blocks(features: int, size: int) -> tuple[list[torch.Tensor], GroupSet]:
    """Weights split into contiguous groups of `size` features; a shorter remainder is one more group."""
    full = features // size
    params = [torch.zeros(full * size, requires_grad=True)]
    blocks = [GroupBlock("features", full, [ParamSlice("w", params[0], 0)])]
    if features % size:
        params.append(torch.zeros(features % size, requires_grad=True))
        blocks.append(GroupBlock("features", 1, [ParamSlice("w_rest", params[1], 0)]))
    return params, GroupSet(blocks)


def objective(x, y, weights, bias, groups: GroupSet, lam: float) -> float:
    with torch.no_grad():
        logits = x @ torch.cat(weights) + bias
        return float(torch.nn.functional.binary_cross_entropy_with_logits(logits, y) + lam * groups.norms().sum())


def run(method: str, x, y, size: int, lam: float, epochs: int, seed: int, lr: float = 0.1, batch: int = 32):
    weights, groups = weight_blocks(x.shape[1], size)
    bias = torch.zeros((), requires_grad=True)
    per_epoch = x.shape[0] // batch
    total = epochs * per_epoch
    optimizer = None
    if method == "hspg":
        optimizer = HSPG(
            [*weights, bias], groups, lr=lr, lam=lam, variant="sgd", epsilon=0.5, n_p=0.3, total_steps=total
        )
    gen = torch.Generator().manual_seed(seed)
    start = time.perf_counter()
    step = 0
    for _ in range(epochs):
        order = torch.randperm(x.shape[0], generator=gen)
        for b in range(per_epoch):
            rate = lr * (1 - step / total) + 1e-3
            idx = order[b * batch : (b + 1) * batch]
            logits = x[idx] @ torch.cat(weights) + bias
            loss = torch.nn.functional.binary_cross_entropy_with_logits(logits, y[idx])
            for p in (*weights, bias):
                p.grad = None
            loss.backward()
            if optimizer is not None:
                optimizer.param_groups[0]["lr"] = rate
                optimizer.step()
            else:
                with torch.no_grad():
                    bias -= rate * bias.grad
                    for w, block in zip(weights, groups.blocks, strict=True):
                        w -= rate * w.grad
                        view = w.view(block.num_groups, -1)
                        norms = view.norm(dim=1, keepdim=True)
                        view.mul_(torch.clamp(1 - rate * lam / norms.clamp_min(1e-30), min=0))
            step += 1
    elapsed = time.perf_counter() - start
    with torch.no_grad():
        accuracy = float((((x @ torch.cat(weights) + bias) > 0).float() == y).float().mean())
    sparsity = float((groups.norms() == 0).float().mean())
    return objective(x, y, weights, bias, groups, lam), sparsity, accuracy, elapsed, len(groups)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--epochs", type=int, default=60)
    parser.add_argument("--seeds", type=int, default=3)
    args = parser.parse_args()
    torch.set_num_threads(1)
    print(
        f"group-lasso logistic regression, {args.epochs} epochs, batch 32, lr 0.1 decaying, mean over {args.seeds} seeds"
    )
    print(
        f"{'dataset':<24}{'n×d':>9}{'groups':>8}  {'method':<8}{'objective':>11}{'group sparsity':>16}{'accuracy':>10}{'time':>9}"
    )
    for name, (x, y, size, lam) in datasets().items():
        for method in ("hspg", "prox-sg"):
            runs = [run(method, x, y, size, lam, args.epochs, seed) for seed in range(args.seeds)]
            obj, sparsity, accuracy, elapsed = (sum(r[i] for r in runs) / len(runs) for i in range(4))
            shape = f"{x.shape[0]}×{x.shape[1]}"
            print(
                f"{name:<24}{shape:>9}{runs[0][4]:>8}  {method:<8}{obj:>11.5f}{sparsity:>16.3f}{accuracy:>10.3f}"
                f"{elapsed:>8.2f}s"
            )
        print(f"{'':<24}{'':>9}{'':>8}  λ = {lam}")


if __name__ == "__main__":
    main()
