"""The optimizer package's public boundaries: saliency objects, layouts, the shared hyperparameter check,
state checks on resume, and clear refusals of bad input."""

from __future__ import annotations

import math

import pytest
import torch
from test_hspg import decay_groups, make_mlp, mlp_groups, mlp_loss, train

from hf_oto import HSPG, OTOTrainingArguments
from hf_oto.optim import MagnitudeSaliency, Saliency, TaylorSaliency, schedule
from hf_oto.optim.hyperparameters import hyperparameter_problems

pytestmark = pytest.mark.usefixtures("one_thread")


def target_hspg(model, **overrides) -> HSPG:
    kwargs = dict(lr=1e-2, n_p=5, target_group_sparsity=0.5, total_steps=40, saliency="magnitude")
    return HSPG(decay_groups(model), mlp_groups(model), **{**kwargs, **overrides})


# ----------------------------------------------------------------------------- saliency objects


class ReverseIndexSaliency(Saliency):
    """Removes the highest-indexed neurons first, whatever the weights: easy to check from outside."""

    name = "reverse-index"

    def scores(self, norms_squared):
        return -torch.arange(len(norms_squared), dtype=torch.float32)


def test_a_user_saliency_object_decides_which_groups_go():
    model = make_mlp()
    optimizer = target_hspg(model, saliency=ReverseIndexSaliency())
    train(model, optimizer, range(40))
    zero = optimizer.zero_mask()
    assert zero[16:].all() and not zero[:16].any()  # exactly the upper half of the 32 neurons


@pytest.mark.parametrize("name,cls", [("magnitude", MagnitudeSaliency), ("taylor", TaylorSaliency)])
def test_saliency_by_name_or_instance_is_the_same(name, cls):
    by_name, by_instance = make_mlp(), make_mlp()
    first, second = target_hspg(by_name, saliency=name), target_hspg(by_instance, saliency=cls())
    train(by_name, first, range(40))
    train(by_instance, second, range(40))
    assert type(first.saliency) is cls and first.saliency.name == name
    assert torch.equal(first.zero_mask(), second.zero_mask())
    assert all(torch.equal(a, b) for a, b in zip(by_name.parameters(), by_instance.parameters(), strict=True))


# ----------------------------------------------------------------------------- layouts


def test_layout_is_a_constructor_argument():
    model = make_mlp()
    assert target_hspg(model).layout.kind == "workspace"  # auto on CPU
    assert target_hspg(model, layout="stacked").layout.kind == "stacked"
    stepped = {}
    for layout in ("stacked", "workspace"):
        net = make_mlp()
        stepped[layout] = target_hspg(net, layout=layout)
        train(net, stepped[layout], range(1))
    assert stepped["stacked"].state_bytes() < stepped["workspace"].state_bytes()  # no workspace buffers
    with pytest.raises(ValueError, match="layout='gpu' is unknown"):
        target_hspg(model, layout="gpu")


# ----------------------------------------------------------------------------- one check for both front doors


VALID = {
    "lam": 0.0,
    "epsilon": 0.5,
    "n_p": 3,
    "target_group_sparsity": None,
    "projection_deadline": 0.5,
    "saliency": "taylor",
    "variant": "sgd",
    "momentum": 0.5,
}


@pytest.mark.parametrize(
    "key,field,value",
    [
        ("lam", "oto_lambda", math.inf),
        ("lam", "oto_lambda", -1.0),
        ("epsilon", "oto_epsilon", "0.5"),
        ("epsilon", "oto_epsilon", 1.0),
        ("n_p", "oto_n_p", 2.5),
        ("target_group_sparsity", "oto_target_group_sparsity", 1.0),
        ("projection_deadline", "oto_projection_deadline", 0.95),
        ("saliency", "oto_saliency", "random"),
        ("variant", "oto_variant", "adam"),
        ("momentum", "oto_momentum", 1.0),
    ],
)
def test_hspg_and_training_arguments_refuse_the_same_values(tmp_path, key, field, value):
    model = make_mlp()
    with pytest.raises(ValueError, match=rf"\b{key}=") as from_hspg:
        HSPG(model.parameters(), mlp_groups(model), lr=1e-2, **{key: value})
    with pytest.raises(ValueError, match=rf"{field}=") as from_args:
        OTOTrainingArguments(output_dir=str(tmp_path), **{field: value})
    requirement = str(from_hspg.value).split("=", 1)[1].split(" ", 1)[1].rstrip(".")
    assert requirement in str(from_args.value)  # the same words after the name
    assert hyperparameter_problems({key: value}) and not hyperparameter_problems({key: VALID[key]})


@pytest.mark.parametrize(
    "override,name",
    [
        ({"lr": -1e-3}, "lr"),
        ({"betas": (0.9, 1.0)}, "betas"),
        ({"betas": (0.9,)}, "betas"),
        ({"eps": 0.0}, "eps"),
        ({"momentum": 1.5}, "momentum"),
        ({"weight_decay": -0.1}, "weight_decay"),
    ],
)
def test_bad_param_group_values_are_refused(override, name):
    model = make_mlp()
    groups = decay_groups(model)
    groups[1].update(override)
    with pytest.raises(ValueError, match=rf"param_groups\[1\]: {name}="):
        HSPG(groups, mlp_groups(model), lr=1e-2)


def test_a_param_group_may_have_lr_zero():
    model = make_mlp()
    groups = decay_groups(model)
    groups[1]["lr"] = 0.0
    bias_before = model[0].bias.detach().clone()
    optimizer = HSPG(groups, mlp_groups(model, prunable=False), lr=1e-2, n_p=0)
    train(model, optimizer, range(3))
    assert torch.equal(model[0].bias, bias_before)


def test_groups_must_be_a_groupset():
    model = make_mlp()
    with pytest.raises(TypeError, match="groups must be a GroupSet .*build_groups.* not list"):
        HSPG(model.parameters(), list(mlp_groups(model).blocks), lr=1e-2)


def test_frozen_layers_message_suggests_oto_unprunable_layers():
    from conftest import tiny_model
    from transformers import BertForSequenceClassification

    from hf_oto import build_groups

    model = tiny_model("bert", BertForSequenceClassification)
    for p in model.bert.encoder.layer[1].parameters():
        p.requires_grad_(False)
    trainable = [p for p in model.parameters() if p.requires_grad]
    with pytest.raises(ValueError, match=r"oto_unprunable_layers=\[1\]") as error:
        HSPG(trainable, build_groups(model), lr=1e-2)
    assert "build_groups(model, unprunable_layers=[1])" in str(error.value)
    HSPG(trainable, build_groups(model, unprunable_layers=[1]), lr=1e-2)  # the suggestion works


# ----------------------------------------------------------------------------- resume checks


@pytest.mark.parametrize(
    "change,field",
    [
        ({"target_group_sparsity": 0.25}, "target_group_sparsity"),
        ({"total_steps": 50}, "total_steps"),
        ({"lam": 0.1}, "lam"),
        ({"saliency": "taylor"}, "saliency"),
        ({"n_p": 4}, "n_p"),
    ],
)
def test_resume_with_other_settings_is_refused(change, field):
    model = make_mlp()
    optimizer = target_hspg(model)
    train(model, optimizer, range(10))
    state = optimizer.state_dict()
    other = target_hspg(make_mlp(), **change)
    with pytest.raises(ValueError, match=rf"saved with {field}=.* but the optimizer has {field}="):
        other.load_state_dict(state)
    same = target_hspg(make_mlp())
    same.load_state_dict(state)  # identical settings resume
    assert same.current_step == 10


def test_resume_adopts_total_steps_when_not_yet_known():
    model = make_mlp()
    optimizer = target_hspg(model)
    train(model, optimizer, range(10))
    fresh = make_mlp()
    later = HSPG(
        decay_groups(fresh), mlp_groups(fresh), lr=1e-2, n_p=5, target_group_sparsity=0.5, saliency="magnitude"
    )
    later.load_state_dict(optimizer.state_dict())
    assert later.total_steps == 40 and later.deadline_step == optimizer.deadline_step


def test_state_format_is_checked():
    model = make_mlp()
    optimizer = target_hspg(model)
    train(model, optimizer, range(3))
    state = optimizer.state_dict()
    state["hspg"] = {**state["hspg"], "format": 99}
    with pytest.raises(ValueError, match="format 99"):
        target_hspg(make_mlp()).load_state_dict(state)


def test_format_1_state_with_taylor_importance_loads():
    """States written before the optim split kept the Taylor average as a top-level ``importance``."""
    model = make_mlp()
    optimizer = target_hspg(model, saliency="taylor")
    mlp_loss(model, 0).backward()
    optimizer.step()
    state = optimizer.state_dict()
    legacy = dict(state["hspg"])
    legacy["importance"] = legacy.pop("saliency_state")["importance"]
    legacy["format"] = 1
    resumed = target_hspg(make_mlp(), saliency="taylor")
    resumed.load_state_dict({**state, "hspg": legacy})
    assert torch.equal(resumed.saliency.importance, optimizer.saliency.importance)


# ----------------------------------------------------------------------------- schedule functions


def test_schedule_functions():
    assert schedule.switch_step(0.25, 40) == 10 and schedule.switch_step(7, None) == 7
    assert schedule.switch_step(0.25, None) is None
    assert schedule.deadline_step(0.8, 40) == 31 and schedule.deadline_step(0.01, 10) == 0
    assert schedule.target_zero_groups(0.3, 10) == 3  # ⌊0.3·10⌋ despite 0.3·10 = 2.9999999999999996
    assert schedule.stage(9, 10) == 1 and schedule.stage(10, 10) == 2
    assert schedule.candidate_shrink(31, 31) == (0.0, True)
    assert schedule.candidate_shrink(29, 31) == (1 - 1 / 3, False)
    quotas = schedule.structure_quotas(torch.tensor([12, 7]), 0.5)
    assert quotas.tolist() == [6, 3] or quotas.tolist() == [6, 4]
    assert int(quotas.sum()) == 9
