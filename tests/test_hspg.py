"""HSPG: exactness against torch optimizers, group-sparse recovery, target sparsity, resume, errors, DDP."""

from __future__ import annotations

import io
import math
import os

import pytest
import torch
from torch import nn

from hf_oto import HSPG, GroupBlock, GroupSet, NonFiniteGradientError, ParamSlice

pytestmark = pytest.mark.usefixtures("one_thread")


# ----------------------------------------------------------------------------- helpers


def make_mlp(seed: int = 0, hidden: int = 32) -> nn.Sequential:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(8, hidden), nn.ReLU(), nn.Linear(hidden, 4))


def mlp_groups(model: nn.Sequential, prunable: bool = True) -> GroupSet:
    """Hidden neuron j: row j of the first Linear (weight and bias) and column j of the second."""
    hidden = model[0].out_features
    slices = [
        ParamSlice("0.weight", model[0].weight, 0),
        ParamSlice("0.bias", model[0].bias, 0),
        ParamSlice("2.weight", model[2].weight, 1),
    ]
    return GroupSet([GroupBlock("ffn", hidden, slices, layer=0, prunable=prunable, unit="neuron")])


def decay_groups(model: nn.Module, lr_no_decay: float | None = None) -> list[dict]:
    """The Trainer's layout: weights decay, biases don't (optionally with their own lr)."""
    no_decay = {"params": [p for n, p in model.named_parameters() if n.endswith("bias")], "weight_decay": 0.0}
    if lr_no_decay is not None:
        no_decay["lr"] = lr_no_decay
    return [{"params": [p for n, p in model.named_parameters() if not n.endswith("bias")]}, no_decay]


DATA = torch.Generator().manual_seed(1)
X_MLP = torch.randn(512, 8, generator=DATA)
Y_MLP = torch.tanh(X_MLP @ torch.randn(8, 4, generator=DATA)) + 0.05 * torch.randn(512, 4, generator=DATA)


def mlp_loss(model: nn.Module, step: int) -> torch.Tensor:
    start = (step * 32) % 512
    return ((model(X_MLP[start : start + 32]) - Y_MLP[start : start + 32]) ** 2).mean()


def train(model: nn.Module, optimizer: torch.optim.Optimizer, steps: range, loss_fn=mlp_loss) -> list[float]:
    losses = []
    for step in steps:
        loss = loss_fn(model, step)
        model.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    return losses


# ----------------------------------------------------------------------------- exactness vs torch


def test_matches_torch_adamw_with_param_groups():
    """λ = 0, no target, stage 1 only: HSPG is AdamW, per param group lr and weight decay included."""
    ref_model, model = make_mlp(), make_mlp()
    reference = torch.optim.AdamW(decay_groups(ref_model, 3e-3), lr=1e-2, weight_decay=0.1, foreach=True)
    optimizer = HSPG(decay_groups(model, 3e-3), mlp_groups(model), lr=1e-2, lam=0.0, weight_decay=0.1, n_p=10**6)
    train(ref_model, reference, range(30))
    train(model, optimizer, range(30))
    for expected, actual in zip(ref_model.parameters(), model.parameters(), strict=True):
        torch.testing.assert_close(actual, expected, rtol=0, atol=1e-6)


def test_matches_torch_sgd_momentum_and_follows_scheduler():
    """variant="sgd" is torch.optim.SGD (heavy ball, coupled weight decay); a scheduler's lr is used."""
    ref_model, model = make_mlp(), make_mlp()
    reference = torch.optim.SGD(decay_groups(ref_model), lr=0.05, momentum=0.9, weight_decay=1e-3)
    optimizer = HSPG(
        decay_groups(model),
        mlp_groups(model),
        lr=0.05,
        lam=0.0,
        variant="sgd",
        momentum=0.9,
        weight_decay=1e-3,
        n_p=10**6,
    )
    schedules = [torch.optim.lr_scheduler.LambdaLR(o, lambda s: 1.0 / (1 + s)) for o in (reference, optimizer)]
    for step in range(20):
        for m, o, sched in zip((ref_model, model), (reference, optimizer), schedules, strict=True):
            loss = mlp_loss(m, step)
            m.zero_grad()
            loss.backward()
            o.step()
            sched.step()
    for expected, actual in zip(ref_model.parameters(), model.parameters(), strict=True):
        torch.testing.assert_close(actual, expected, rtol=0, atol=1e-6)


def test_unprunable_block_gets_plain_adamw_step():
    """Groups of an unprunable block take the base step only: no λ, never projected."""
    ref_model, model = make_mlp(), make_mlp()
    reference = torch.optim.AdamW(ref_model.parameters(), lr=1e-2)
    optimizer = HSPG(
        model.parameters(), mlp_groups(model, prunable=False), lr=1e-2, weight_decay=0.01, lam=10.0, epsilon=0.9, n_p=0
    )
    train(ref_model, reference, range(20))
    train(model, optimizer, range(20))
    for expected, actual in zip(ref_model.parameters(), model.parameters(), strict=True):
        torch.testing.assert_close(actual, expected, rtol=0, atol=1e-6)
    assert not optimizer.zero_mask().any()


# ----------------------------------------------------------------------------- convex: group lasso


def group_lasso_problem(seed: int = 0):
    """Least squares with 20 groups of 5 features, 10 groups truly zero."""
    gen = torch.Generator().manual_seed(seed)
    n, groups, size = 400, 20, 5
    x = torch.randn(n, groups * size, generator=gen)
    truth = torch.randn(groups, size, generator=gen)
    true_zero = torch.arange(groups) % 2 == 1
    truth[true_zero] = 0
    y = x @ truth.flatten() + 0.1 * torch.randn(n, generator=gen)
    return x, y, true_zero, groups, size


def objective(w: torch.Tensor, x, y, lam: float, groups: int) -> float:
    return float(0.5 * ((x @ w - y) ** 2).mean() + lam * w.view(groups, -1).norm(dim=1).sum())


def run_group_lasso(method: str, lam: float = 0.05, epochs: int = 30, lr: float = 0.05, seed: int = 0):
    """Mini-batch SGD on the group lasso with HSPG or Prox-SG (group soft-threshold), same batches and lr."""
    x, y, true_zero, groups, size = group_lasso_problem()
    w = torch.zeros(groups * size, requires_grad=True)
    batch = 32
    per_epoch = x.shape[0] // batch
    total = epochs * per_epoch
    if method == "hspg":
        blocks = GroupSet([GroupBlock("feature", groups, [ParamSlice("w", w, 0)])])
        optimizer = HSPG([w], blocks, lr=lr, lam=lam, variant="sgd", epsilon=0.5, n_p=0.3, total_steps=total)
    gen = torch.Generator().manual_seed(seed)
    step = 0
    for _ in range(epochs):
        order = torch.randperm(x.shape[0], generator=gen)
        for b in range(per_epoch):
            rate = lr * (1 - step / total) + 1e-3  # the same decaying schedule for both methods
            idx = order[b * batch : (b + 1) * batch]
            loss = 0.5 * ((x[idx] @ w - y[idx]) ** 2).mean()
            w.grad = None
            loss.backward()
            if method == "hspg":
                optimizer.param_groups[0]["lr"] = rate
                optimizer.step()
            else:
                with torch.no_grad():
                    w -= rate * w.grad
                    view = w.view(groups, size)
                    norms = view.norm(dim=1, keepdim=True)
                    view.mul_(torch.clamp(1 - rate * lam / norms.clamp_min(1e-30), min=0))
            step += 1
    with torch.no_grad():
        zero = w.view(groups, size).norm(dim=1) == 0
        final = objective(w, x, y, lam, groups)
    return final, zero, true_zero


def test_group_lasso_recovers_true_zero_groups_and_beats_prox_sg():
    hspg_objective, hspg_zero, true_zero = run_group_lasso("hspg")
    prox_objective, prox_zero, _ = run_group_lasso("prox")
    assert torch.equal(hspg_zero, true_zero), (hspg_zero, true_zero)
    assert abs(hspg_objective - prox_objective) <= 0.01 * prox_objective, (hspg_objective, prox_objective)
    assert hspg_zero.sum() >= prox_zero.sum()


def test_prox_stage_one_produces_exact_zeros():
    x, y, true_zero, groups, size = group_lasso_problem()
    w = torch.zeros(groups * size, requires_grad=True)
    blocks = GroupSet([GroupBlock("feature", groups, [ParamSlice("w", w, 0)])])
    optimizer = HSPG([w], blocks, lr=0.05, lam=0.5, variant="sgd", prox=True, n_p=10**6)
    for _ in range(200):
        w.grad = None
        (0.5 * ((x @ w - y) ** 2).mean()).backward()
        optimizer.step()
    zero = w.detach().view(groups, size).norm(dim=1) == 0
    assert zero[true_zero].all()
    assert optimizer.sparsity_report()["exactly_zero_groups"] == int(zero.sum())


# ----------------------------------------------------------------------------- target sparsity


def test_target_sparsity_mlp_exact_monotone_and_early():
    model = make_mlp(hidden=33)
    groups = mlp_groups(model)
    total = 200
    optimizer = HSPG(
        decay_groups(model),
        groups,
        lr=1e-2,
        lam=1e-3,
        weight_decay=0.01,
        n_p=0.2,
        target_group_sparsity=0.5,
        total_steps=total,
    )
    zeros, losses = [], []
    for step in range(total):
        losses += train(model, optimizer, range(step, step + 1))
        zeros.append(int(optimizer.zero_mask().sum()))
    target = math.floor(0.5 * 33)
    assert zeros[-1] == target
    assert all(a <= b <= target for a, b in zip(zeros, zeros[1:]))  # monotone, never overshoots
    last_change = max(i for i in range(total) if zeros[i] != (zeros[i - 1] if i else 0))
    assert total - (last_change + 1) >= 0.2 * total  # ≥ 20% of the steps remain after the last projection
    assert all(math.isfinite(v) for v in losses)
    assert sum(losses[-20:]) < sum(losses[:20])
    norms = groups.norms()
    mask = optimizer.zero_mask()
    assert (norms[mask] == 0).all() and (norms[~mask] > 0).all()
    state = optimizer.state[model[0].weight]
    assert (state["exp_avg"][mask] == 0).all() and (state["exp_avg_sq"][mask] == 0).all()
    report = optimizer.sparsity_report()
    assert report["zero_groups"] == target and report["zero_ffn_neurons"] == target
    assert report["group_sparsity"] == pytest.approx(target / 33)
    assert report["zero_group_norms"]["max"] == 0.0 and report["nonzero_group_norms"]["min"] > 0


def test_taylor_saliency_removes_the_groups_the_loss_does_not_need():
    """Idle neurons with large input rows (tiny outputs) vs useful ones with small rows (strong outputs):
    magnitude ranking removes the useful neurons, the Taylor ranking (|x_gᵀ∇_g f|) the idle ones."""
    generator = torch.Generator().manual_seed(3)
    inputs = torch.randn(512, 8, generator=generator)

    def build() -> nn.Sequential:
        model = make_mlp(hidden=32)
        with torch.no_grad():
            model[0].weight[:16] *= 0.3  # useful: small input rows...
            model[2].weight[:, :16] *= 5.0  # ...strong outputs
            model[0].weight[16:] *= 4.0  # idle: large input rows...
            model[2].weight[:, 16:] *= 1e-3  # ...that barely reach the output
        return model

    with torch.no_grad():
        targets = build()(inputs)
    results = {}
    for saliency in ("magnitude", "taylor"):
        model = build()
        optimizer = HSPG(
            model.parameters(),
            mlp_groups(model),
            lr=1e-3,
            n_p=0.2,
            target_group_sparsity=0.5,
            total_steps=100,
            saliency=saliency,
        )

        def loss_fn(model, step):
            start = (step * 32) % 512
            return ((model(inputs[start : start + 32]) - targets[start : start + 32]) ** 2).mean()

        train(model, optimizer, range(100), loss_fn=loss_fn)
        with torch.no_grad():
            loss = ((model(inputs) - targets) ** 2).mean().item()
        zero = optimizer.zero_mask()
        assert int(zero.sum()) == 16
        results[saliency] = (loss, int(zero[16:].sum()))
    assert results["taylor"][1] >= 12  # mostly idle neurons removed
    assert results["magnitude"][1] <= 4  # magnitude removes the useful ones
    assert results["taylor"][0] < results["magnitude"][0] / 10


def test_target_sparsity_tiny_bert_then_slim():
    from transformers import BertConfig, BertForSequenceClassification

    from hf_oto import build_groups, slim_model

    config = BertConfig(
        vocab_size=64,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=48,
        max_position_embeddings=32,
        hidden_dropout_prob=0.0,
        attention_probs_dropout_prob=0.0,
    )
    torch.manual_seed(0)
    model = BertForSequenceClassification(config)
    groups = build_groups(model)
    gen = torch.Generator().manual_seed(0)
    ids = torch.randint(4, 64, (256, 12), generator=gen)
    labels = (ids < 20).any(dim=1).long()
    total = 60
    optimizer = HSPG(
        decay_groups(model),
        groups,
        lr=3e-3,
        weight_decay=0.01,
        n_p=0.25,
        target_group_sparsity=0.5,
        total_steps=total,
    )

    def loss_fn(m, step):
        start = (step * 16) % 256
        return m(input_ids=ids[start : start + 16], labels=labels[start : start + 16]).loss

    losses = train(model, optimizer, range(total), loss_fn)
    target = math.floor(0.5 * len(groups))
    assert int(optimizer.zero_mask().sum()) == target
    assert (groups.norms()[optimizer.zero_mask()] == 0).all()
    assert all(math.isfinite(v) for v in losses) and sum(losses[-10:]) < sum(losses[:10])
    report = optimizer.sparsity_report()
    per_layer = {row["layer"]: row for row in report["per_layer"]}
    assert report["zero_heads"] == sum(per_layer[i]["attention"]["zero_query_heads"] for i in range(2))
    assert report["zero_heads"] + report["zero_ffn_neurons"] == target
    model.eval()
    slim, slim_report = slim_model(model, groups)
    assert slim_report.slim.params < slim_report.dense.params


@pytest.mark.parametrize("family,variant", [("bert", "adamw"), ("bert", "sgd"), ("llama", "adamw")])
def test_stacked_layers_match_per_layer_steps(family, variant):
    """HSPG steps same-shaped blocks of all layers together (stacked, one kernel per slice position). The
    workspace layout (CPU default), the stacked layout (accelerator default: torch.stack, no workspace) and
    one-layer units (views) must agree,
    also on steps where some layers' parameters have no gradient. LLaMA: GQA groups, gated MLP, no biases."""
    from conftest import tiny_model
    from transformers import BertForSequenceClassification, LlamaForCausalLM

    from hf_oto import build_groups

    gen = torch.Generator().manual_seed(0)
    ids = torch.randint(4, 64, (128, 12), generator=gen)
    labels = (ids < 20).any(dim=1).long() if family == "bert" else ids

    def run(layout: str, unit_numel: int | None = None):
        model = tiny_model(family, BertForSequenceClassification if family == "bert" else LlamaForCausalLM)
        layer = model.bert.encoder.layer[1] if family == "bert" else model.model.layers[1]
        no_grad_step = (  # these get no gradient every fifth step
            [layer.attention.self.query.weight, layer.intermediate.dense.bias]
            if family == "bert"
            else [layer.self_attn.q_proj.weight, layer.mlp.up_proj.weight]
        )
        optimizer = HSPG(
            decay_groups(model),
            build_groups(model),
            lr=3e-3,
            weight_decay=0.01,
            variant=variant,
            momentum=0.9,
            n_p=0.25,
            target_group_sparsity=0.5,
            total_steps=24,
            saliency="taylor",
            layout=layout,
            unit_numel=unit_numel,
        )
        units = optimizer.layout.unit_layers
        for step in range(24):
            start = (step * 16) % 128
            model.zero_grad()
            model(input_ids=ids[start : start + 16], labels=labels[start : start + 16]).loss.backward()
            if step % 5 == 3:
                for p in no_grad_step:
                    p.grad = None
            optimizer.step()
        return model, optimizer, units

    reference, reference_opt, units = run("workspace")
    assert units == [3, 3]  # attention and FFN blocks of the 3 layers, each stacked
    for layout, unit_numel, expected_units in (("stacked", None, [3, 3]), ("workspace", 1, [1] * 6)):
        model, optimizer, units = run(layout, unit_numel)
        assert units == expected_units
        assert torch.equal(optimizer.zero_mask(), reference_opt.zero_mask())
        for a, b in zip(reference.parameters(), model.parameters(), strict=True):
            torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
    assert int(reference_opt.zero_mask().sum()) == reference_opt.target_zero_groups


def test_target_needs_total_steps_and_room():
    model = make_mlp()
    optimizer = HSPG(model.parameters(), mlp_groups(model), lr=1e-2, n_p=5, target_group_sparsity=0.5)
    mlp_loss(model, 0).backward()
    with pytest.raises(ValueError, match="total_steps"):
        optimizer.step()
    with pytest.raises(ValueError, match="n_p"):
        HSPG(model.parameters(), mlp_groups(model), lr=1e-2, n_p=90, target_group_sparsity=0.5, total_steps=100)
    fractional = HSPG(model.parameters(), mlp_groups(model), lr=1e-2, n_p=0.5)
    with pytest.raises(ValueError, match="n_p"):
        fractional.step()
    fractional.set_total_steps(10)
    assert fractional.switch_step == 5
    fractional.step()


def test_report_counts_query_heads_of_kv_groups():
    """A GQA kv-group covers several query heads; the report gives both counts."""
    weight = nn.Parameter(torch.randn(8, 6))
    with torch.no_grad():
        weight[2:4] = 0  # kv group 1 (rows 2-3) is already zero
    groups = GroupSet(
        [GroupBlock("attention", 4, [ParamSlice("w", weight, 0)], layer=3, unit="kv group", queries_per_group=2)]
    )
    optimizer = HSPG([weight], groups, lr=1e-3, n_p=0)
    weight.grad = torch.randn(8, 6)
    optimizer.step()
    report = optimizer.sparsity_report()
    assert report["zero_kv_groups"] == 1 and report["zero_heads"] == 2
    assert report["per_layer"][0]["attention"] == {
        "zero_kv_groups": 1,
        "kv_groups": 4,
        "zero_query_heads": 2,
        "query_heads": 8,
        "prunable": True,
    }
    assert report["stage"] == 2 and report["step"] == 1 and optimizer.groups is groups


# ----------------------------------------------------------------------------- errors


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [
        ({"lr": 0.0}, "lr"),
        ({"lr": -1.0}, "lr"),
        ({"lam": -0.1}, "lam"),
        ({"epsilon": 1.0}, "epsilon"),
        ({"epsilon": -0.1}, "epsilon"),
        ({"target_group_sparsity": 1.0}, "target_group_sparsity"),
        ({"target_group_sparsity": -0.5}, "target_group_sparsity"),
        ({"n_p": -1}, "n_p"),
        ({"n_p": 1.5}, "n_p"),
        ({"n_p": "10"}, "n_p"),
        ({"variant": "adam"}, "variant"),
        ({"saliency": "norm"}, "saliency"),
    ],
)
def test_bad_hyperparameters_name_the_argument(kwargs, name):
    model = make_mlp()
    arguments = {"lr": 1e-3, "n_p": 0, **kwargs}
    with pytest.raises(ValueError, match=name):
        HSPG(model.parameters(), mlp_groups(model), **arguments)


def test_grouped_parameter_in_two_blocks_is_rejected():
    model = make_mlp()
    block = mlp_groups(model).blocks[0]
    with pytest.raises(ValueError, match="exactly one block"):
        HSPG(model.parameters(), GroupSet([block, block]), lr=1e-3)


def test_nonfinite_gradient_raises_or_skips():
    model = make_mlp()
    optimizer = HSPG(model.parameters(), mlp_groups(model), lr=1e-3, n_p=0)
    mlp_loss(model, 0).backward()
    model[2].weight.grad[0, 3] = float("nan")
    with pytest.raises(NonFiniteGradientError, match=r"2\.weight"):
        optimizer.step()

    skipping = HSPG(model.parameters(), mlp_groups(model), lr=1e-3, n_p=0, skip_nonfinite_steps=True)
    before = [p.detach().clone() for p in model.parameters()]
    model[0].bias.grad[1] = float("inf")
    skipping.step()
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters(), strict=True))
    assert skipping.sparsity_report()["skipped_steps"] == 1
    assert not any(skipping.state.values())  # no moments were created or touched


# ----------------------------------------------------------------------------- state


@pytest.mark.parametrize("variant,saliency", [("adamw", "magnitude"), ("sgd", "magnitude"), ("adamw", "taylor")])
def test_resume_is_bit_for_bit(variant, saliency, tmp_path):
    def build():
        model = make_mlp()
        optimizer = HSPG(
            decay_groups(model),
            mlp_groups(model),
            lr=1e-2,
            variant=variant,
            momentum=0.9,
            weight_decay=0.01,
            n_p=10,
            epsilon=0.9,
            target_group_sparsity=0.5,
            total_steps=60,
            saliency=saliency,
        )
        return model, optimizer

    model, optimizer = build()
    train(model, optimizer, range(60))

    first, first_opt = build()
    train(first, first_opt, range(41))  # in the middle of the projection window
    torch.save({"model": first.state_dict(), "optimizer": first_opt.state_dict()}, tmp_path / "ckpt.pt")
    resumed, resumed_opt = build()
    checkpoint = torch.load(tmp_path / "ckpt.pt", weights_only=True)
    resumed.load_state_dict(checkpoint["model"])
    resumed_opt.load_state_dict(checkpoint["optimizer"])
    assert 0 < int(resumed_opt.zero_mask().sum()) < 16 and resumed_opt.current_step == 41
    train(resumed, resumed_opt, range(41, 60))

    for expected, actual in zip(model.parameters(), resumed.parameters(), strict=True):
        assert torch.equal(expected, actual)
    assert torch.equal(optimizer.zero_mask(), resumed_opt.zero_mask())
    assert int(resumed_opt.zero_mask().sum()) == 16
    assert resumed_opt.sparsity_report() == optimizer.sparsity_report()


def test_state_dict_roundtrip_is_harmless():
    """Accelerate calls opt.load_state_dict(opt.state_dict()) at wrap time; nothing may change."""
    model, twin = make_mlp(), make_mlp()
    kwargs = {"lr": 1e-2, "n_p": 5, "target_group_sparsity": 0.5, "total_steps": 40}
    optimizer = HSPG(model.parameters(), mlp_groups(model), **kwargs)
    reference = HSPG(twin.parameters(), mlp_groups(twin), **kwargs)
    train(model, optimizer, range(20))
    train(twin, reference, range(20))
    state = optimizer.state_dict()
    optimizer.load_state_dict(state)
    assert "hspg" in state  # the input dict is not consumed
    buffer = io.BytesIO()
    torch.save(state, buffer)
    buffer.seek(0)
    loaded = torch.load(buffer, weights_only=True)
    assert loaded["hspg"]["zero_mask"].dtype == torch.bool
    train(model, optimizer, range(20, 40))
    train(twin, reference, range(20, 40))
    assert all(torch.equal(a, b) for a, b in zip(model.parameters(), twin.parameters(), strict=True))


# ----------------------------------------------------------------------------- distributed


def _distributed_worker(rank: int, world: int, init_file: str, out_dir: str) -> None:
    import torch.distributed as dist

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    try:
        model = make_mlp()
        optimizer = HSPG(
            model.parameters(),
            mlp_groups(model),
            lr=2e-2,
            n_p=5,
            epsilon=0.3,
            target_group_sparsity=0.5,
            total_steps=30,
        )
        for step in range(30):
            # Each rank sees different data and no all-reduce: only the broadcast decision keeps masks equal.
            loss = mlp_loss(model, step * world + rank)
            model.zero_grad()
            loss.backward()
            optimizer.step()
        torch.save({"mask": optimizer.zero_mask(), "weight": model[0].weight.detach()}, f"{out_dir}/rank{rank}.pt")
    finally:
        dist.destroy_process_group()


def test_two_process_gloo_ranks_agree_on_zero_masks(tmp_path):
    import torch.multiprocessing as mp

    mp.spawn(_distributed_worker, args=(2, str(tmp_path / "init"), str(tmp_path)), nprocs=2, join=True)
    results = [torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in range(2)]
    assert not torch.equal(results[0]["weight"], results[1]["weight"])  # the ranks really diverged
    assert torch.equal(results[0]["mask"], results[1]["mask"])
    assert int(results[0]["mask"].sum()) == 16
    for result in results:
        assert (result["weight"][result["mask"]] == 0).all()


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(pytest.main([os.path.abspath(__file__), "-q"]))
