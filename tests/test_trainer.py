"""OTOTrainer and OTOTrainingArguments (issue 4), single process: arguments, optimizer wiring, Trainer features,
logs, exact target sparsity, exact resume from dense checkpoints, bf16 autocast.

Every run trains a tiny BERT classifier (3 layers, 4 heads, FFN 24: 12 head groups + 72 neuron groups) on
generated data for a few steps on CPU, with dropout off so that runs are deterministic. The builders here are
shared by tests/test_trainer_save.py and tests/test_trainer_hub.py.
"""

import json
import math
import os
import re

import datasets
import pytest
import torch
import transformers
import yaml
from conftest import tiny_model
from transformers import HfArgumentParser, Trainer, TrainerCallback, TrainingArguments

import hf_oto
from hf_oto import HSPG, OTOTrainer, OTOTrainingArguments
from hf_oto.groups import ATTENTION

NUM_GROUPS = 84  # 3 layers × (4 heads + 24 FFN neurons)
SEQ_LEN = 12


# ---------------------------------------------------------------------------------------------- builders


def make_dataset(n: int = 64, seed: int = 0) -> datasets.Dataset:
    """A learnable toy task: the label says whether the second token id is above 50."""
    generator = torch.Generator().manual_seed(seed)
    ids = torch.randint(5, 97, (n, SEQ_LEN), generator=generator)
    return datasets.Dataset.from_dict(
        {
            "input_ids": ids.tolist(),
            "attention_mask": [[1] * SEQ_LEN] * n,
            "labels": (ids[:, 1] > 50).long().tolist(),
        }
    )


def make_model(seed: int = 0, **overrides) -> transformers.BertForSequenceClassification:
    """Tiny BERT classifier with dropout off (runs must be deterministic to compare them)."""
    return tiny_model(
        "bert",
        transformers.BertForSequenceClassification,
        seed=seed,
        hidden_dropout_prob=0.0,
        attention_probs_dropout_prob=0.0,
        **overrides,
    )


def make_args(output_dir, cls=OTOTrainingArguments, **overrides):
    """Quiet, CPU-only arguments for short runs; `overrides` win."""
    values = dict(
        output_dir=str(output_dir),
        use_cpu=True,
        report_to=[],
        disable_tqdm=True,
        per_device_train_batch_size=8,
        per_device_eval_batch_size=16,
        learning_rate=1e-3,
        max_steps=12,
        logging_steps=4,
        save_strategy="no",
        seed=0,
    )
    if cls is OTOTrainingArguments:
        values["oto_n_p"] = 0.25
    values.update(overrides)
    return cls(**values)


def accuracy(prediction) -> dict[str, float]:
    return {"accuracy": float((prediction.predictions.argmax(-1) == prediction.label_ids).mean())}


def max_state_diff(a: torch.nn.Module, b: torch.nn.Module) -> float:
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    return max((sa[k].float() - sb[k].float()).abs().max().item() for k in sa)


class Recorder(TrainerCallback):
    """Records every log, every evaluation and, right before each optimizer step, lrs and the clipped grad norm."""

    def __init__(self):
        self.logs, self.evaluations, self.steps = [], [], []

    def on_log(self, args, state, control, logs=None, **kwargs):
        self.logs.append((state.global_step, dict(logs)))

    def on_evaluate(self, args, state, control, metrics=None, **kwargs):
        self.evaluations.append((state.global_step, dict(metrics)))

    def on_pre_optimizer_step(self, args, state, control, model=None, optimizer=None, **kwargs):
        grads = [p.grad for p in model.parameters() if p.grad is not None]
        norm = torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g) for g in grads])).item()
        self.steps.append({"step": state.global_step, "lrs": [g["lr"] for g in optimizer.param_groups], "norm": norm})


# ---------------------------------------------------------------------------------------------- arguments

OTO_FIELDS = [name for name in OTOTrainingArguments.__dataclass_fields__ if name.startswith("oto_")]


def test_every_oto_field_is_documented():
    """Each oto_* field has an entry (type, default, description) in the class docstring and a --help text."""
    doc = OTOTrainingArguments.__doc__
    assert {"oto_lambda", "oto_epsilon", "oto_n_p", "oto_target_group_sparsity", "oto_variant", "oto_prune"} <= set(
        OTO_FIELDS
    )
    assert {"oto_unprunable_layers", "oto_save_slim", "oto_verify_tolerance"} <= set(OTO_FIELDS)
    documented = re.findall(r"^\s{8}(oto_\w+) \(`[^`]+`.*defaults to", doc, flags=re.MULTILINE)
    assert sorted(documented) == sorted(OTO_FIELDS), "docstring entries and dataclass fields differ"
    for name in OTO_FIELDS:
        description = doc.split(f"{name} (", 1)[1].split("\n", 2)[1]
        assert len(description.strip()) > 20, f"{name} has no description"
        assert len(OTOTrainingArguments.__dataclass_fields__[name].metadata.get("help", "")) > 10, name


PARSED = {
    "oto_lambda": 0.02,
    "oto_epsilon": 0.3,
    "oto_n_p": 10.0,
    "oto_target_group_sparsity": 0.5,
    "oto_projection_deadline": 0.6,
    "oto_saliency": "magnitude",
    "oto_variant": "sgd",
    "oto_momentum": 0.8,
    "oto_prune": "heads",
    "oto_unprunable_layers": [0, 2],
    "oto_save_slim": False,
    "oto_verify_tolerance": 1e-4,
    "oto_flops_seq_len": 64,
    "oto_skip_nonfinite_steps": True,
    "oto_teacher": "me/teacher",
    "oto_distill_alpha": 0.7,
    "oto_distill_temperature": 3.0,
    "oto_distill_hidden_weight": 0.1,
    "oto_distill_layer_map": ["1:2", "3:6"],
}


def test_parse_from_cli_json_and_yaml(tmp_path):
    """HfArgumentParser reads every oto_* field from the command line, a JSON file and a YAML file alike."""
    assert set(PARSED) == set(OTO_FIELDS), "update PARSED when adding a field"
    parser = HfArgumentParser(OTOTrainingArguments)
    common = {"output_dir": str(tmp_path / "out"), "use_cpu": True, "learning_rate": 3e-5}
    cli = [f"--output_dir={common['output_dir']}", "--use_cpu", "--learning_rate=3e-5"]
    for name, value in PARSED.items():
        if isinstance(value, list):
            cli += [f"--{name}", *map(str, value)]
        else:
            cli += [f"--{name}", str(value).lower() if isinstance(value, bool) else str(value)]
    (from_cli,) = parser.parse_args_into_dataclasses(args=cli)
    (tmp_path / "args.json").write_text(json.dumps({**common, **PARSED}))
    (from_json,) = parser.parse_json_file(str(tmp_path / "args.json"))
    (tmp_path / "args.yaml").write_text(yaml.safe_dump({**common, **PARSED}))
    (from_yaml,) = parser.parse_yaml_file(str(tmp_path / "args.yaml"))
    for parsed in (from_cli, from_json, from_yaml):
        assert isinstance(parsed, OTOTrainingArguments)
        assert parsed.oto_settings() == PARSED
        assert parsed.learning_rate == 3e-5
        assert parsed.oto_n_p_value == 10 and isinstance(parsed.oto_n_p_value, int)  # whole steps
    defaults = OTOTrainingArguments(output_dir=str(tmp_path / "d"))
    assert defaults.oto_n_p_value == 0.25 and defaults.oto_save_slim and defaults.oto_target_group_sparsity is None
    assert defaults.oto_saliency == "taylor" and defaults.oto_projection_deadline == 0.8


@pytest.mark.parametrize(
    "field,value",
    [
        ("oto_lambda", -0.1),
        ("oto_lambda", math.nan),
        ("oto_lambda", math.inf),
        ("oto_epsilon", "0.5"),
        ("oto_n_p", "10"),
        ("oto_epsilon", 1.0),
        ("oto_epsilon", -0.01),
        ("oto_n_p", 1.5),
        ("oto_n_p", -3.0),
        ("oto_target_group_sparsity", 1.0),
        ("oto_target_group_sparsity", -0.2),
        ("oto_variant", "adam"),
        ("oto_projection_deadline", 0.9),
        ("oto_projection_deadline", 0.0),
        ("oto_saliency", "norm"),
        ("oto_prune", "layers"),
        ("oto_unprunable_layers", [1, -1]),
        ("oto_unprunable_layers", None),
        ("oto_verify_tolerance", math.inf),
        ("oto_verify_tolerance", 0.0),
        ("oto_verify_tolerance", -1e-5),
        ("oto_momentum", 1.0),
        ("oto_flops_seq_len", 0),
    ],
)
def test_out_of_range_values_fail_at_construction(tmp_path, field, value):
    with pytest.raises(ValueError, match=re.escape(field) + r"=.* must") as error:
        OTOTrainingArguments(output_dir=str(tmp_path), **{field: value})
    assert "Invalid OTO arguments" in str(error.value)


def test_out_of_range_from_cli_names_every_bad_field(tmp_path):
    parser = HfArgumentParser(OTOTrainingArguments)
    with pytest.raises(ValueError) as error:
        parser.parse_args_into_dataclasses(
            args=[f"--output_dir={tmp_path}", "--oto_epsilon=1.5", "--oto_lambda=-1", "--oto_prune=all"]
        )
    message = str(error.value)
    assert "oto_epsilon=1.5" in message and "oto_lambda=-1" in message and "oto_prune='all'" in message


# ---------------------------------------------------------------------------------------------- optimizer


def test_create_optimizer_builds_hspg_with_trainer_settings(tmp_path):
    """HSPG gets the Trainer's lr (rescaled every step by the warmup+linear schedule), the decay/no-decay split,
    and the total step count computed by the Trainer from epochs and gradient accumulation."""
    recorder = Recorder()
    args = make_args(
        tmp_path,
        max_steps=-1,
        num_train_epochs=2,
        gradient_accumulation_steps=2,
        per_device_train_batch_size=8,  # 64 examples → 8 batches → 4 updates per epoch → 8 steps
        warmup_steps=2,
        weight_decay=0.05,
        oto_target_group_sparsity=0.25,
        oto_projection_deadline=0.5,
        oto_saliency="magnitude",
    )
    trainer = OTOTrainer(model=make_model(), args=args, train_dataset=make_dataset(), callbacks=[recorder])
    trainer.train()
    hspg = trainer.hspg
    assert isinstance(hspg, HSPG) and trainer.optimizer.optimizer is hspg
    assert trainer.state.max_steps == 8 and hspg.total_steps == 8 and hspg.current_step == 8
    assert hspg.target_zero_groups == NUM_GROUPS // 4 and hspg.switch_step == 2  # n_p = 0.25 of 8
    assert hspg.saliency.name == "magnitude" and hspg.deadline_step == 3  # ⌊0.5·8⌋ − 1
    assert int(hspg.zero_mask().sum()) == NUM_GROUPS // 4

    # decay split: biases and LayerNorm weights in a weight_decay=0 group, everything else in the other
    names = {id(p): n for n, p in trainer.model.named_parameters()}
    decay, no_decay = hspg.param_groups
    assert decay["weight_decay"] == 0.05 and no_decay["weight_decay"] == 0.0
    decay_names = {names[id(p)] for p in decay["params"]}
    no_decay_names = {names[id(p)] for p in no_decay["params"]}
    assert decay_names | no_decay_names == set(names.values()) and not decay_names & no_decay_names
    assert decay_names == set(trainer.get_decay_parameter_names(trainer.model))
    assert all(n.endswith("bias") or "LayerNorm" in n for n in no_decay_names)
    assert any("LayerNorm" in n for n in no_decay_names) and any(n.endswith("bias") for n in no_decay_names)
    assert not any(n.endswith("bias") or "LayerNorm" in n for n in decay_names)

    # lr at each optimizer step: linear warmup over 2 steps, then linear decay to 0 at step 8
    expected = [1e-3 * k / 2 if k < 2 else 1e-3 * (8 - k) / 6 for k in range(8)]
    assert [s["step"] for s in recorder.steps] == list(range(8))
    for record, lr in zip(recorder.steps, expected, strict=True):
        assert record["lrs"] == pytest.approx([lr, lr], rel=1e-9, abs=1e-15)


@pytest.mark.parametrize("variant", ["adamw", "sgd"])
def test_hspg_without_penalty_equals_stock_trainer(tmp_path, variant):
    """With λ = 0 and no stage 2, HSPG is AdamW (or SGD with momentum): OTOTrainer then ends at the weights of the
    stock Trainer with the same lr schedule, weight decay split, gradient clipping (active here) and gradient
    accumulation. This proves each of those reaches HSPG exactly as it reaches torch's optimizer."""
    common = dict(
        max_steps=6,
        per_device_train_batch_size=4,
        gradient_accumulation_steps=2,
        warmup_steps=2,
        weight_decay=0.1,
        max_grad_norm=0.05,
        logging_steps=1,
        learning_rate=1e-3 if variant == "adamw" else 0.05,
    )
    stock_args = make_args(
        tmp_path / "stock",
        cls=TrainingArguments,
        optim="adamw_torch" if variant == "adamw" else "sgd",
        optim_args=None if variant == "adamw" else "momentum=0.9",
        **common,
    )
    stock = Trainer(model=make_model(), args=stock_args, train_dataset=make_dataset())
    # OTOTrainer trains BERT on a plain mean loss (hf_oto.trainer.loss_uses_num_items_in_batch, docs/design.md §6);
    # give the stock Trainer the same loss so that both see identical gradients.
    stock.model_accepts_loss_kwargs = False
    stock.train()
    oto_args = make_args(
        tmp_path / "oto", oto_lambda=0.0, oto_n_p=6, oto_variant=variant, oto_momentum=0.9, **common
    )  # n_p = 6 = max_steps: stage 1 only
    oto = OTOTrainer(model=make_model(), args=oto_args, train_dataset=make_dataset())
    oto.train()
    assert oto.hspg.switch_step == 6 and oto.hspg.current_step == 6  # stage 2 would start after the last step
    grad_norms = [log["grad_norm"] for log in oto.state.log_history if "grad_norm" in log]
    assert len(grad_norms) == 6 and max(grad_norms) > 2 * 0.05, "clipping must be active for this test to mean much"
    assert max_state_diff(stock.model, oto.model) <= 1e-6
    moved = max_state_diff(make_model(), oto.model)
    assert moved > 1e-3, "training did not change the weights"


def test_gradient_clipping_reaches_hspg(tmp_path):
    """The gradients HSPG sees are clipped to max_grad_norm (pre-clip norms, as logged, are larger)."""
    recorder = Recorder()
    args = make_args(tmp_path, max_steps=6, logging_steps=1, max_grad_norm=0.02, oto_target_group_sparsity=0.2)
    trainer = OTOTrainer(model=make_model(), args=args, train_dataset=make_dataset(), callbacks=[recorder])
    trainer.train()
    logged = [log["grad_norm"] for log in trainer.state.log_history if "grad_norm" in log]
    assert len(recorder.steps) == 6 and all(n > 0.02 for n in logged)
    assert all(s["norm"] == pytest.approx(0.02, rel=1e-4) for s in recorder.steps)


def test_gradient_accumulation_matches_large_batch(tmp_path):
    """4 examples × 2 accumulation steps give the same weights and zero masks as batches of 8: the loss is averaged,
    not summed, over micro-batches, so HSPG's balance between gradient and λ·x/‖x‖ does not depend on it."""
    runs = []
    for batch, accumulation in ((8, 1), (4, 2)):
        args = make_args(
            tmp_path / f"ga{accumulation}",
            per_device_train_batch_size=batch,
            gradient_accumulation_steps=accumulation,
            max_steps=10,
            oto_prune="heads",
            oto_target_group_sparsity=0.5,
            oto_lambda=0.05,
        )
        trainer = OTOTrainer(model=make_model(), args=args, train_dataset=make_dataset())
        trainer.train()
        runs.append(trainer)
    large, accumulated = runs
    assert accumulated.hspg.current_step == large.hspg.current_step == 10
    assert torch.equal(large.hspg.zero_mask(), accumulated.hspg.zero_mask())
    assert (
        large.state.log_history[-1]["oto/zero_heads"] == 6 and large.state.log_history[-1]["oto/zero_ffn_neurons"] == 0
    )
    assert max_state_diff(large.model, accumulated.model) <= 1e-5
    losses = [[log["loss"] for log in t.state.log_history if "loss" in log] for t in runs]
    assert losses[0] == pytest.approx(losses[1], rel=1e-5)


# ---------------------------------------------------------------------------------------------- logs and reporting

OTO_LOG_KEYS = {
    "oto/group_sparsity",
    "oto/zero_heads",
    "oto/zero_ffn_neurons",
    "oto/params_kept_ratio",
    "oto/flops_kept_ratio",
    "oto/stage",
}


def test_logs_eval_callbacks_and_tensorboard_with_exact_target(tmp_path, capsys):
    """One run with eval_strategy="steps", a custom callback and report_to=["tensorboard"]:

    - every logging step carries the oto/* metrics: in the callback's logs, on the console (the progress
      printer, as disable_tqdm=True) and in the TensorBoard event file;
    - evaluation runs every eval_steps with compute_metrics;
    - the final group sparsity is exactly ⌊s·N⌋/N and the model holds exactly that many all-zero groups;
    - the logged params/FLOPs kept ratios are those of the slim model.
    """
    recorder = Recorder()
    args = make_args(
        tmp_path / "out",
        max_steps=20,
        logging_steps=5,
        eval_strategy="steps",
        eval_steps=5,
        report_to=["tensorboard"],
        oto_target_group_sparsity=0.4,
        oto_n_p=0.25,  # stage 2 from the 6th step (index 5): the log after step 5 still reports stage 1
    )
    trainer = OTOTrainer(
        model=make_model(),
        args=args,
        train_dataset=make_dataset(),
        eval_dataset=make_dataset(32, seed=1),
        compute_metrics=accuracy,
        callbacks=[recorder],
    )
    trainer.train()
    target = math.floor(0.4 * NUM_GROUPS)
    printed = [line for line in capsys.readouterr().out.splitlines() if "'loss'" in line]
    assert len(printed) == 4 and all(f"'{key}'" in line for line in printed for key in OTO_LOG_KEYS)

    train_logs = [(step, logs) for step, logs in recorder.logs if "loss" in logs]
    assert [step for step, _ in train_logs] == [5, 10, 15, 20]
    for _, logs in train_logs:
        assert logs.keys() >= OTO_LOG_KEYS
        assert all(isinstance(logs[k], float) for k in OTO_LOG_KEYS)
    assert [logs["oto/stage"] for _, logs in train_logs] == [1.0, 2.0, 2.0, 2.0]
    sparsity = [logs["oto/group_sparsity"] for _, logs in train_logs]
    assert sparsity == sorted(sparsity) and sparsity[0] == 0.0
    final = train_logs[-1][1]
    assert final["oto/group_sparsity"] == target / NUM_GROUPS  # exactly ⌊s·N⌋/N, never more
    assert final["oto/zero_heads"] + final["oto/zero_ffn_neurons"] == target

    # the model itself: exactly `target` all-zero groups, the ones HSPG reports
    model = trainer.model
    groups = hf_oto.build_groups(model)
    zero = groups.zero_norm_mask()
    assert int(zero.sum()) == target and torch.equal(zero, trainer.hspg.zero_mask().cpu())
    attention = torch.cat([torch.full((b.num_groups,), b.structure == ATTENTION) for b in groups.blocks])
    assert int((zero & attention).sum()) == final["oto/zero_heads"]

    _, report = hf_oto.slim_model(model, groups, seq_len=args.oto_flops_seq_len)
    assert final["oto/params_kept_ratio"] == pytest.approx(report.params_kept_ratio, rel=1e-12)
    assert final["oto/flops_kept_ratio"] == pytest.approx(report.flops_kept_ratio, rel=1e-12)
    assert report.params_kept_ratio < 1 and report.flops_kept_ratio < 1

    # evaluation every 5 steps, through compute_metrics; eval logs are left alone
    assert [step for step, _ in recorder.evaluations] == [5, 10, 15, 20]
    assert all({"eval_loss", "eval_accuracy"} <= metrics.keys() for _, metrics in recorder.evaluations)
    eval_logs = [logs for _, logs in recorder.logs if "eval_loss" in logs]
    assert len(eval_logs) == 4 and not any(k.startswith("oto/") for logs in eval_logs for k in logs)

    # TensorBoard
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    event_dirs = {root for root, _, files in os.walk(tmp_path / "out") if any("tfevents" in f for f in files)}
    assert event_dirs, "no TensorBoard event file written"
    scalars = {}
    for directory in event_dirs:
        accumulator = EventAccumulator(directory)
        accumulator.Reload()
        for tag in accumulator.Tags()["scalars"]:
            scalars.setdefault(tag, []).extend(accumulator.Scalars(tag))
    for key in OTO_LOG_KEYS:
        assert f"train/{key}" in scalars, f"train/{key} missing from TensorBoard"
    events = scalars["train/oto/group_sparsity"]
    assert {e.step for e in events} == {5, 10, 15, 20}
    assert max(events, key=lambda e: e.step).value == pytest.approx(target / NUM_GROUPS, abs=1e-6)
    assert "eval/accuracy" in scalars


# ---------------------------------------------------------------------------------------------- checkpoints


def test_checkpoints_are_dense_and_resume_exactly(tmp_path):
    """Stop after 5 of 10 steps (the checkpoint sits in the middle of the target schedule), resume in a fresh
    trainer whose model starts from other weights: the final weights and zero masks equal the uninterrupted run's."""
    settings = dict(
        max_steps=10,
        save_strategy="steps",
        save_steps=5,
        oto_target_group_sparsity=0.4,
        oto_n_p=0.25,  # stage 2 from step 2, last projection at step 7
    )
    full = OTOTrainer(model=make_model(), args=make_args(tmp_path / "full", **settings), train_dataset=make_dataset())
    full.train()
    checkpoint = tmp_path / "full" / "checkpoint-5"
    assert sorted(os.listdir(tmp_path / "full")) == ["checkpoint-10", "checkpoint-5"]

    # the checkpoint is a stock, dense model plus HSPG state mid-schedule
    config = json.loads((checkpoint / "config.json").read_text())
    assert config["model_type"] == "bert" and not any(k.startswith("oto_") for k in config) and "auto_map" not in config
    assert not (checkpoint / "modeling_oto.py").exists() and not (checkpoint / "README.md").exists()
    dense, info = transformers.BertForSequenceClassification.from_pretrained(checkpoint, output_loading_info=True)
    assert not any(info[k] for k in ("missing_keys", "unexpected_keys", "mismatched_keys"))
    assert [layer.intermediate.dense.out_features for layer in dense.bert.encoder.layer] == [24, 24, 24]
    assert [layer.attention.self.query.out_features for layer in dense.bert.encoder.layer] == [32, 32, 32]
    state = torch.load(checkpoint / "optimizer.pt", weights_only=True)["hspg"]
    assert state["step"] == 5 and state["stage"] == 2 and state["total_steps"] == 10

    # the last checkpoint holds the final, dense, group-sparse weights
    last = transformers.BertForSequenceClassification.from_pretrained(tmp_path / "full" / "checkpoint-10")
    assert max_state_diff(last, full.model) == 0.0
    assert int(hf_oto.build_groups(last).zero_norm_mask().sum()) == math.floor(0.4 * NUM_GROUPS)

    resumed = OTOTrainer(
        model=make_model(seed=1), args=make_args(tmp_path / "resumed", **settings), train_dataset=make_dataset()
    )
    assert max_state_diff(resumed.model, full.model) > 0.1  # starts elsewhere: weights must come from the checkpoint
    resumed.train(resume_from_checkpoint=str(checkpoint))
    assert resumed.state.global_step == 10 and resumed.hspg.current_step == 10
    assert torch.equal(resumed.hspg.zero_mask(), full.hspg.zero_mask())
    assert int(full.hspg.zero_mask().sum()) == math.floor(0.4 * NUM_GROUPS)
    assert torch.equal(
        hf_oto.build_groups(resumed.model).zero_norm_mask(), hf_oto.build_groups(full.model).zero_norm_mask()
    )
    assert max_state_diff(resumed.model, full.model) <= 1e-6


# ---------------------------------------------------------------------------------------------- mixed precision


def test_bf16_autocast_on_cpu_trains_and_saves_exactly(tmp_path):
    """bf16=True on CPU: training runs under autocast; the saved slim model (float32 weights) matches the dense
    model at float32 precision, and the autocast wrapper is still in place afterwards."""
    args = make_args(tmp_path / "run", max_steps=8, bf16=True, oto_target_group_sparsity=0.3)
    trainer = OTOTrainer(model=make_model(), args=args, train_dataset=make_dataset())
    trainer.train()
    model = trainer.model
    assert "_original_forward" in model.__dict__, "accelerate did not wrap forward in autocast: test is moot"
    wrapper = model.__dict__["forward"]
    trainer.save_model(str(tmp_path / "slim"))
    assert model.__dict__["forward"] is wrapper
    assert trainer.slim_report.max_output_diff <= 1e-5
    assert trainer.slim_report.slim.params < trainer.slim_report.dense.params
    slim = transformers.AutoModelForSequenceClassification.from_pretrained(tmp_path / "slim")
    assert next(slim.parameters()).dtype == torch.float32
    inputs = {"input_ids": torch.tensor(make_dataset(4, seed=3)["input_ids"])}
    with torch.no_grad():
        expected = model.__dict__["_original_forward"](**inputs).logits
        assert (slim(**inputs).logits - expected).abs().max() <= 1e-5


def test_fp16_grad_scaler_skips_keep_the_hspg_schedule_on_the_trainer_clock():
    """fp16: accelerate's AcceleratedOptimizer + GradScaler skips optimizer.step() on overflow, so HSPG never
    sees those steps. OTOTrainer's SkippedStepClock advances HSPG's clock for them: n_p, the deadline and the
    exact target stay where the Trainer's step count puts them. Real fp16 autocast and GradScaler, on CPU."""
    from accelerate import Accelerator
    from accelerate.optimizer import AcceleratedOptimizer

    from hf_oto.trainer import SkippedStepClock

    Accelerator(cpu=True)  # the process state AcceleratedOptimizer reads
    model = make_model()
    data = make_dataset(64)
    inputs, labels = torch.tensor(data["input_ids"]), torch.tensor(data["labels"])
    total = 24
    hspg = HSPG(model.parameters(), hf_oto.build_groups(model), lr=3e-3, target_group_sparsity=0.5, total_steps=total)
    # A huge initial scale overflows fp16 gradients for the first steps: the scaler skips them and halves the scale.
    optimizer = AcceleratedOptimizer(hspg, scaler=torch.amp.GradScaler("cpu", init_scale=2.0**24))
    clock = SkippedStepClock()
    skipped = 0
    for step in range(total):
        start = (step * 16) % 64
        with torch.autocast("cpu", dtype=torch.float16):
            output = model(input_ids=inputs[start : start + 16], labels=labels[start : start + 16])
        assert output.logits.dtype == torch.float16
        optimizer.zero_grad()
        optimizer.scaler.scale(output.loss).backward()
        optimizer.step()
        skipped += optimizer.step_was_skipped
        clock.on_optimizer_step(None, None, None, optimizer=optimizer)
        assert hspg.current_step == step + 1
    assert skipped >= 2  # the overflow path really ran
    assert hspg.sparsity_report()["skipped_steps"] == skipped
    assert int(hspg.zero_mask().sum()) == hspg.target_zero_groups == NUM_GROUPS // 2
    assert all(torch.isfinite(p).all() for p in model.parameters())


def test_skipped_step_clock_is_installed(tmp_path):
    trainer = OTOTrainer(model=make_model(), args=make_args(tmp_path), train_dataset=make_dataset())
    assert any(type(c).__name__ == "SkippedStepClock" for c in trainer.callback_handler.callbacks)


def test_bf16_weights_save_with_half_precision_tolerance(tmp_path):
    """A model held in bfloat16 trains with HSPG and its slim save is checked at a bf16-sized tolerance."""
    args = make_args(tmp_path / "run", max_steps=8, bf16=True, oto_target_group_sparsity=0.3)
    trainer = OTOTrainer(model=make_model().to(torch.bfloat16), args=args, train_dataset=make_dataset())
    trainer.train()
    assert int(trainer.hspg.zero_mask().sum()) == math.floor(0.3 * NUM_GROUPS)
    trainer.save_model(str(tmp_path / "slim"))
    assert next(trainer.slim_model.parameters()).dtype == torch.bfloat16
    assert trainer.slim_model.oto_reference["tolerance"] == hf_oto.slim.default_tolerance(trainer.model) > 1e-5
    assert trainer.slim_report.max_output_diff <= trainer.slim_model.oto_reference["tolerance"]
    assert os.path.isfile(tmp_path / "slim" / "model.safetensors")
