"""Knowledge distillation inside OTOTrainer (issue 16, part 1).

- the loss math on hand-computed values (temperature, T², masking of -100 and padding, the causal shift, QA);
- every task head (QA, sequence and token classification, causal LM) trains with a teacher, and the first logged
  `oto/distill_loss` / `oto/task_loss` equal an independent computation on the whole batch;
- the teacher is never saved, optimized or trained (eval mode, no grad); `oto_teacher` loads it from a folder;
- gradient accumulation gives the large-batch result, also for token-normalized (causal LM) losses;
- bf16 autocast reaches the teacher, and fp16 does through accelerate's GradScaler path; without a teacher the
  run is bit-identical to the Trainer's compute_loss;
- every bad input fails with a one-line message that names the problem and the fix.

Tiny models from configs, dropout off, a few steps each.
"""

from __future__ import annotations

import copy
import logging
import math
import os
import re

import datasets
import pytest
import torch
import torch.nn.functional as F
import transformers
from conftest import tiny_model
from safetensors.torch import load_file
from test_trainer import make_args, make_dataset, make_model, max_state_diff
from transformers import Trainer

from hf_oto import OTOTrainer, OTOTrainingArguments
from hf_oto.distillation import default_layer_map, hidden_mse, kd_sum_and_count, soft_kl

SEQ = 12
NO_DROPOUT = dict(hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)


# ---------------------------------------------------------------------------------------------- loss math


def test_soft_kl_with_temperature_on_hand_computed_values():
    """teacher [ln 3, 0] vs student [0, 0]: T=1 gives KL([.75,.25] ‖ [.5,.5]); T=2 softens to [√3, 1]/(1+√3), × 4."""
    student, teacher = torch.zeros(1, 2), torch.tensor([[math.log(3.0), 0.0]])
    expected_t1 = 0.75 * math.log(0.75 / 0.5) + 0.25 * math.log(0.25 / 0.5)
    assert soft_kl(student, teacher, 1.0).item() == pytest.approx(expected_t1, rel=1e-6)
    p = math.sqrt(3) / (1 + math.sqrt(3))
    expected_t2 = 4 * (p * math.log(p / 0.5) + (1 - p) * math.log((1 - p) / 0.5))
    assert soft_kl(student, teacher, 2.0).item() == pytest.approx(expected_t2, rel=1e-6)
    assert soft_kl(teacher, teacher, 2.0).item() == pytest.approx(0.0, abs=1e-7)


def test_masking_of_ignored_labels_padding_and_the_causal_shift():
    torch.manual_seed(0)
    student, teacher = torch.randn(1, 4, 5), torch.randn(1, 4, 5)
    per_position = soft_kl(student, teacher, 2.0)[0]
    # token level: position 0 is -100, position 3 is padding: positions 1 and 2 count
    labels, mask = torch.tensor([[-100, 1, 2, 3]]), torch.tensor([[1, 1, 1, 0]])
    total, count = kd_sum_and_count(student, teacher, 2.0, labels=labels, attention_mask=mask)
    assert count.item() == 2 and total.item() == pytest.approx((per_position[1] + per_position[2]).item(), rel=1e-6)
    # causal LM: logits at i predict labels[i + 1]; labels[2] = -100 drops position 1, padding at 3 drops 2
    total, count = kd_sum_and_count(student, teacher, 2.0, labels=torch.tensor([[7, 8, -100, 9]]), shift=True)
    assert count.item() == 2 and total.item() == pytest.approx((per_position[0] + per_position[2]).item(), rel=1e-6)
    total, count = kd_sum_and_count(
        student, teacher, 2.0, labels=torch.tensor([[7, 8, -100, 9]]), attention_mask=mask, shift=True
    )
    assert count.item() == 1 and total.item() == pytest.approx(per_position[0].item(), rel=1e-6)
    # sequence level: one row per example, -100 rows dropped
    rows_s, rows_t = student[0], teacher[0]
    total, count = kd_sum_and_count(rows_s, rows_t, 1.0, labels=torch.tensor([0, -100, 1, 1]))
    assert count.item() == 3
    assert total.item() == pytest.approx(soft_kl(rows_s, rows_t, 1.0)[[0, 2, 3]].sum().item(), rel=1e-6)


def test_qa_padding_is_not_a_position():
    """With a class mask, the softmax over positions ignores padding: equal to the KL on the real positions."""
    torch.manual_seed(1)
    student, teacher = torch.randn(2, 6), torch.randn(2, 6)
    keep = torch.tensor([[1, 1, 1, 1, 0, 0], [1, 1, 1, 1, 1, 1]]).bool()
    masked = soft_kl(student, teacher, 2.0, keep)
    assert masked[0].item() == pytest.approx(soft_kl(student[0, :4], teacher[0, :4], 2.0).item(), rel=1e-6)
    assert masked[1].item() == pytest.approx(soft_kl(student[1], teacher[1], 2.0).item(), rel=1e-6)
    assert torch.isfinite(masked).all()


def test_hidden_mse_and_default_layer_map():
    assert default_layer_map(3, 3) == [(1, 1), (2, 2), (3, 3)]
    assert default_layer_map(3, 6) == [(1, 2), (2, 4), (3, 6)]
    assert default_layer_map(4, 6) == [(1, 1), (2, 3), (3, 4), (4, 6)]
    student = [torch.zeros(1, 3, 2), torch.ones(1, 3, 2)]
    teacher = [torch.zeros(1, 3, 2), torch.zeros(1, 3, 2), torch.full((1, 3, 2), 3.0)]
    mask = torch.tensor([[1, 1, 0]])
    assert hidden_mse(student, teacher, [(1, 2)], mask).item() == pytest.approx(4.0)  # (1 - 3)² on real tokens
    assert hidden_mse(student, teacher, [(1, 1), (0, 2)], mask).item() == pytest.approx((1.0 + 9.0) / 2)
    teacher[2][0, 2] = 100.0  # padding: ignored
    assert hidden_mse(student, teacher, [(1, 2)], mask).item() == pytest.approx(4.0)


# ---------------------------------------------------------------------------------------------- heads


def _padding_mask(n: int, generator: torch.Generator) -> torch.Tensor:
    lengths = torch.randint(SEQ // 2, SEQ + 1, (n,), generator=generator)
    return (torch.arange(SEQ)[None, :] < lengths[:, None]).long()


def head_data(kind: str, n: int = 8, seed: int = 0) -> datasets.Dataset:
    """Random ids with right padding; labels per head, -100 on padding and on some real tokens."""
    generator = torch.Generator().manual_seed(seed)
    ids = torch.randint(5, 97, (n, SEQ), generator=generator)
    mask = _padding_mask(n, generator)
    data = {"input_ids": (ids * mask).tolist(), "attention_mask": mask.tolist()}
    if kind == "qa":
        data["start_positions"] = torch.randint(0, 5, (n,), generator=generator).tolist()
        data["end_positions"] = (torch.tensor(data["start_positions"]) + 1).tolist()
    elif kind == "seq":
        data["labels"] = torch.randint(0, 2, (n,), generator=generator).tolist()
    else:
        classes = 3 if kind == "tok" else 97
        labels = torch.randint(0, classes, (n, SEQ), generator=generator) if kind == "tok" else ids.clone()
        dropped = torch.rand(n, SEQ, generator=generator) < 0.25
        data["labels"] = labels.masked_fill(dropped | (mask == 0), -100).tolist()
    return datasets.Dataset.from_dict(data)


HEADS = {
    "qa": ("bert", transformers.BertForQuestionAnswering, {}),
    "seq": ("bert", transformers.BertForSequenceClassification, {}),
    "tok": ("bert", transformers.BertForTokenClassification, {"num_labels": 3}),
    "clm": ("llama", transformers.LlamaForCausalLM, {}),
}


def head_model(kind: str, seed: int = 0, **overrides) -> torch.nn.Module:
    model_type, cls, extra = HEADS[kind]
    settings = {**(NO_DROPOUT if model_type == "bert" else {}), **extra, **overrides}
    return tiny_model(model_type, cls, seed=seed, **settings)


def expected_losses(student, teacher, data: datasets.Dataset, kind: str, temperature: float) -> tuple[float, float]:
    """(task loss, KD) on the whole batch, computed here without hf_oto: explicit slicing instead of masks."""
    batch = {k: torch.tensor(data[k]) for k in data.column_names}
    inputs = {k: batch[k] for k in ("input_ids", "attention_mask")}
    with torch.no_grad():
        s, t = student(**batch), teacher(**inputs)

    def kl(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return F.kl_div(F.log_softmax(a / temperature, -1), F.log_softmax(b / temperature, -1), log_target=True,
                        reduction="none").sum(-1) * temperature**2  # fmt: skip

    mask = batch["attention_mask"].bool()
    if kind == "qa":
        lengths = mask.sum(1).tolist()
        values = [
            (kl(s.start_logits[i, :n], t.start_logits[i, :n]) + kl(s.end_logits[i, :n], t.end_logits[i, :n])) / 2
            for i, n in enumerate(lengths)
        ]
        kd = torch.stack(values).mean()
    elif kind == "seq":
        kd = kl(s.logits, t.logits).mean()
    elif kind == "tok":
        keep = (batch["labels"] != -100) & mask
        kd = kl(s.logits[keep], t.logits[keep]).mean()
    else:
        keep = (batch["labels"][:, 1:] != -100) & mask[:, 1:] & mask[:, :-1]
        kd = kl(s.logits[:, :-1][keep], t.logits[:, :-1][keep]).mean()
    return s.loss.item(), kd.item()


@pytest.mark.parametrize("kind", sorted(HEADS))
def test_every_head_trains_with_a_teacher_and_logs_both_losses(tmp_path, one_thread, kind):
    """A batch is the whole 8-example set, so the first log (step 1, initial weights) has known values; every
    logged loss is (1 − α)·task + α·KD, and training moves the student."""
    data = head_data(kind)
    student, teacher = head_model(kind), head_model(kind, seed=1)
    task, kd = expected_losses(student, teacher, data, kind, temperature=3.0)
    initial = copy.deepcopy(student)
    args = make_args(
        tmp_path,
        max_steps=3,
        logging_steps=1,
        oto_distill_alpha=0.3,
        oto_distill_temperature=3.0,
        lr_scheduler_type="constant",
    )
    trainer = OTOTrainer(model=student, args=args, train_dataset=data, teacher_model=teacher)
    trainer.train()
    logs = [log for log in trainer.state.log_history if "loss" in log]
    assert len(logs) == 3
    assert logs[0]["oto/task_loss"] == pytest.approx(task, rel=1e-5)
    assert logs[0]["oto/distill_loss"] == pytest.approx(kd, rel=1e-5) and kd > 1e-4
    for log in logs:
        assert log["loss"] == pytest.approx(0.7 * log["oto/task_loss"] + 0.3 * log["oto/distill_loss"], rel=1e-5)
        assert "oto/hidden_distill_loss" not in log
    assert max_state_diff(initial, trainer.model) > 1e-4


def test_hidden_state_distillation_is_logged_and_weighted(tmp_path, one_thread):
    """β·MSE joins the loss (layer map 1:2, 3:6 onto a 6-layer teacher), logged as oto/hidden_distill_loss."""
    teacher = head_model("seq", seed=1, num_hidden_layers=6)
    args = make_args(
        tmp_path, max_steps=2, logging_steps=1, oto_distill_hidden_weight=0.5, oto_distill_layer_map=["1:2", "3:6"]
    )
    trainer = OTOTrainer(model=head_model("seq"), args=args, train_dataset=head_data("seq"), teacher_model=teacher)
    assert trainer.distiller.layer_map == ((1, 2), (3, 6))
    trainer.train()
    for log in [log for log in trainer.state.log_history if "loss" in log]:
        parts = 0.5 * log["oto/task_loss"] + 0.5 * log["oto/distill_loss"] + 0.5 * log["oto/hidden_distill_loss"]
        assert log["oto/hidden_distill_loss"] > 1e-3 and log["loss"] == pytest.approx(parts, rel=1e-5)


# ---------------------------------------------------------------------------------------------- the teacher


def test_teacher_is_never_saved_optimized_or_trained(tmp_path, one_thread):
    """A teacher with another shape (6 layers, hidden 48) would show in any saved tensor: checkpoints and the slim
    folder hold exactly the student's tensors; HSPG never holds a teacher parameter; the teacher stays in eval mode
    without gradients and ends with the weights it started with."""
    teacher = make_model(seed=1, num_hidden_layers=6, hidden_size=48, intermediate_size=40)
    before = copy.deepcopy(teacher.state_dict())
    args = make_args(tmp_path / "out", max_steps=4, save_strategy="steps", save_steps=2, oto_target_group_sparsity=0.2)
    trainer = OTOTrainer(model=make_model(), args=args, train_dataset=make_dataset(), teacher_model=teacher)
    trainer.train()
    trainer.save_model(str(tmp_path / "slim"))

    assert trainer.distiller.teacher is teacher and not teacher.training
    assert not any(p.requires_grad or p.grad is not None for p in teacher.parameters())
    assert all(torch.equal(before[k], v) for k, v in teacher.state_dict().items())
    optimized = {id(p) for group in trainer.hspg.param_groups for p in group["params"]}
    assert optimized and not optimized & {id(p) for p in teacher.parameters()}
    assert optimized <= {id(p) for p in trainer.model.parameters()}

    student_keys = set(trainer.model.state_dict())
    for checkpoint in ("checkpoint-2", "checkpoint-4"):
        folder = tmp_path / "out" / checkpoint
        weights = [f for f in os.listdir(folder) if f.endswith((".safetensors", ".bin")) and "args" not in f]
        assert weights == ["model.safetensors"]
        assert set(load_file(folder / "model.safetensors")) <= student_keys
        for name in os.listdir(folder):  # nothing pickled (optimizer, scheduler, args, rng) holds a teacher tensor
            if name.endswith((".pt", ".pth", ".bin")):
                assert not any(48 in t.shape for t in _tensors(torch.load(folder / name, weights_only=False))), name
    slim_weights = load_file(tmp_path / "slim" / "model.safetensors")
    assert set(slim_weights) <= student_keys and all(v.shape[-1] != 48 for v in slim_weights.values())
    assert [f for f in trainer.slim_files if f.endswith((".safetensors", ".bin", ".pt"))] == ["model.safetensors"]


def _tensors(value) -> list[torch.Tensor]:
    """Every tensor inside nested dicts, lists and objects' __dict__."""
    if isinstance(value, torch.Tensor):
        return [value]
    if isinstance(value, dict):
        return [t for v in value.values() for t in _tensors(v)]
    if isinstance(value, (list, tuple)):
        return [t for v in value for t in _tensors(v)]
    if hasattr(value, "__dict__") and not isinstance(value, type):
        return _tensors(vars(value))
    return []


def test_oto_teacher_loads_from_a_folder(tmp_path, one_thread):
    """oto_teacher=<folder> loads the teacher with the student's Auto class (here the QA head) and distils."""
    saved = head_model("qa", seed=1)
    saved.save_pretrained(tmp_path / "teacher")
    args = make_args(tmp_path / "out", max_steps=2, logging_steps=1, oto_teacher=str(tmp_path / "teacher"))
    trainer = OTOTrainer(model=head_model("qa"), args=args, train_dataset=head_data("qa"))
    teacher = trainer.distiller.teacher
    assert type(teacher) is transformers.BertForQuestionAnswering and max_state_diff(teacher, saved) == 0.0
    trainer.train()
    assert all("oto/distill_loss" in log for log in trainer.state.log_history if "loss" in log)


# ---------------------------------------------------------------------------------------------- GA, bf16, identity


def _train(tmp_path, kind, data, batch, accumulation, teacher_seed=1, **overrides):
    args = make_args(
        tmp_path / f"{kind}-{batch}x{accumulation}",
        per_device_train_batch_size=batch,
        gradient_accumulation_steps=accumulation,
        max_steps=3,
        logging_steps=1,
        **overrides,
    )
    teacher = head_model(kind, seed=teacher_seed) if teacher_seed is not None else None
    trainer = OTOTrainer(model=head_model(kind), args=args, train_dataset=data, teacher_model=teacher)
    trainer.train()
    return trainer


def _logged(trainer, key):
    return [log[key] for log in trainer.state.log_history if key in log and "loss" in log]


@pytest.mark.parametrize("kind", ["clm", "seq"])
def test_gradient_accumulation_matches_the_large_batch(tmp_path, one_thread, kind):
    """GA=2 × batch 2 equals GA=1 × batch 4: losses, distillation losses and weights. For the causal LM the task
    loss is a token mean over the accumulated batch (num_items_in_batch) and KD must follow it: the micro-batches
    hold different numbers of counted tokens here, so a mean of per-micro-batch KD means would differ (checked)."""
    data = head_data(kind, n=12, seed=3)
    large, accumulated = _train(tmp_path, kind, data, 4, 1), _train(tmp_path, kind, data, 2, 2)
    for key in ("loss", "oto/task_loss", "oto/distill_loss"):
        assert _logged(accumulated, key) == pytest.approx(_logged(large, key), rel=1e-5, abs=1e-7), key
    assert max_state_diff(large.model, accumulated.model) <= 1e-5
    if kind == "clm":
        counts = [sum(v != -100 for v in row[1:]) for row in data["labels"]]
        assert len(set(counts)) > 2, "the test needs micro-batches with different token counts"
        student, teacher = head_model(kind), head_model(kind, seed=1)
        batch = {k: torch.tensor(data[k][:4]) for k in ("input_ids", "attention_mask", "labels")}
        with torch.no_grad():
            s, t = student(**batch).logits, teacher(**batch).logits
        halves = [kd_sum_and_count(s[i : i + 2], t[i : i + 2], 2.0, batch["labels"][i : i + 2], shift=True)
                  for i in (0, 2)]  # fmt: skip
        token_mean = (halves[0][0] + halves[1][0]) / (halves[0][1] + halves[1][1])
        mean_of_means = (halves[0][0] / halves[0][1] + halves[1][0] / halves[1][1]) / 2
        assert abs(token_mean - mean_of_means) > 1e-3 * token_mean


def _record_logit_dtypes(dtypes: dict[str, set], **models: torch.nn.Module) -> None:
    """Record, per named model, the dtypes its last Linear (the task head) produces."""
    for name, model in models.items():
        head = [m for m in model.modules() if isinstance(m, torch.nn.Linear)][-1]
        head.register_forward_hook(lambda m, i, o, name=name: dtypes.setdefault(name, set()).add(o.dtype) and None)


def test_bf16_autocast_reaches_the_teacher(tmp_path, one_thread):
    """bf16=True on CPU: the teacher's layers run in bfloat16 like the student's, and the losses stay finite."""
    dtypes: dict[str, set] = {}
    teacher = make_model(seed=1)
    student = make_model()
    _record_logit_dtypes(dtypes, teacher=teacher, student=student)
    args = make_args(tmp_path, max_steps=3, logging_steps=1, bf16=True)
    trainer = OTOTrainer(model=student, args=args, train_dataset=make_dataset(), teacher_model=teacher)
    trainer.train()
    assert dtypes == {"teacher": {torch.bfloat16}, "student": {torch.bfloat16}}
    assert all(math.isfinite(v) for v in _logged(trainer, "oto/distill_loss")) and _logged(trainer, "oto/distill_loss")


GPU = pytest.param(
    "cuda", marks=pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU: bench/gpu_suite.sh")
)


@pytest.mark.parametrize("device", ["cpu", GPU])
@pytest.mark.parametrize("kind", sorted(HEADS))
def test_fp16_with_a_teacher_through_accelerates_grad_scaler_path(tmp_path, one_thread, caplog, kind, device):
    """fp16=True with a teacher, through accelerate's own fp16 path: fp16 autocast on the student's forward and on
    the teacher's, and a GradScaler that skips overflowing steps. accelerate takes that path only off-CPU: on CPU
    it leaves native_amp False and trains in fp32 (OTOTrainer warns, checked here), so there the test switches on
    what accelerate sets for fp16 on a GPU, `native_amp`, before training starts, and CPU fp16 kernels stand in
    for CUDA's; on a GPU (bench/gpu_suite.sh) accelerate does it itself. A scaler with a huge initial scale
    replaces accelerate's so that the first steps overflow. Both models compute in float16; the first logged
    losses (initial weights, one whole-set batch) equal the fp32 ones within fp16 precision; the scaler skips
    steps, and HSPG still reaches its exact target on the Trainer's clock."""
    data = head_data(kind)
    student, teacher = head_model(kind), head_model(kind, seed=1)
    task, kd = expected_losses(student, teacher, data, kind, temperature=2.0)
    dtypes: dict[str, set] = {}
    _record_logit_dtypes(dtypes, teacher=teacher, student=student)
    args = make_args(
        tmp_path, max_steps=8, logging_steps=1, fp16=True, oto_target_group_sparsity=0.3, use_cpu=device == "cpu"
    )
    with caplog.at_level(logging.WARNING, logger="hf_oto.trainer"):
        trainer = OTOTrainer(model=student, args=args, train_dataset=data, teacher_model=teacher)
    accelerator = trainer.accelerator
    warned = any("fp16=True has no effect on cpu" in record.getMessage() for record in caplog.records)
    on_gpu = device != "cpu"
    # on CPU accelerate leaves its fp16 path off, and OTOTrainer says so
    assert accelerator.mixed_precision == "fp16" and accelerator.native_amp == on_gpu and warned != on_gpu
    accelerator.native_amp = True
    accelerator.scaler = torch.amp.GradScaler(device, init_scale=2.0**24)
    trainer.train()
    assert dtypes == {"teacher": {torch.float16}, "student": {torch.float16}}
    assert _logged(trainer, "oto/task_loss")[0] == pytest.approx(task, rel=1e-3)
    assert _logged(trainer, "oto/distill_loss")[0] == pytest.approx(kd, rel=1e-2)
    assert all(math.isfinite(v) for key in ("loss", "oto/distill_loss") for v in _logged(trainer, key))
    report = trainer.hspg.sparsity_report()
    assert report["skipped_steps"] >= 1 and report["step"] == 8
    assert report["zero_groups"] == report["target_zero_groups"] > 0


@pytest.mark.parametrize("kind", ["seq", "clm"])
def test_without_a_teacher_training_is_bit_identical(tmp_path, one_thread, monkeypatch, kind):
    """teacher=None gives, bit for bit, the weights and logs of the Trainer's own compute_loss (OTOTrainer before
    distillation existed); a run with a teacher does differ, so the comparison can fail."""
    data = head_data(kind, n=12, seed=3)
    plain = _train(tmp_path / "plain", kind, data, 4, 1, teacher_seed=None)
    with monkeypatch.context() as patch:
        patch.setattr(OTOTrainer, "compute_loss", Trainer.compute_loss)
        reference = _train(tmp_path / "reference", kind, data, 4, 1, teacher_seed=None)
    assert plain.distiller is None
    for name, tensor in reference.model.state_dict().items():
        assert torch.equal(tensor, plain.model.state_dict()[name]), name
    drop = ("train_runtime", "train_samples_per_second", "train_steps_per_second")
    strip = lambda history: [{k: v for k, v in log.items() if k not in drop} for log in history]  # noqa: E731
    assert strip(plain.state.log_history) == strip(reference.state.log_history)
    assert not any(k.startswith("oto/distill") or k == "oto/task_loss" for log in plain.state.log_history for k in log)
    distilled = _train(tmp_path / "kd", kind, data, 4, 1)
    assert max_state_diff(distilled.model, plain.model) > 1e-6


# ---------------------------------------------------------------------------------------------- bad input


@pytest.mark.parametrize(
    "field,value",
    [
        ("oto_distill_alpha", 1.5),
        ("oto_distill_alpha", -0.1),
        ("oto_distill_alpha", math.nan),
        ("oto_distill_alpha", math.inf),
        ("oto_distill_alpha", "0.5"),
        ("oto_distill_temperature", 0.0),
        ("oto_distill_temperature", -1.0),
        ("oto_distill_temperature", math.nan),
        ("oto_distill_temperature", math.inf),
        ("oto_distill_hidden_weight", -0.5),
        ("oto_distill_hidden_weight", math.nan),
        ("oto_distill_layer_map", ["1-2"]),
        ("oto_distill_layer_map", [(1,)]),
        ("oto_distill_layer_map", [(-1, 2)]),
        ("oto_distill_layer_map", []),
        ("oto_teacher", ""),
    ],
)
def test_bad_distillation_arguments_fail_at_construction(tmp_path, field, value):
    with pytest.raises(ValueError, match=re.escape(field) + r"=.* must") as error:
        OTOTrainingArguments(output_dir=str(tmp_path), **{field: value})
    assert "\n" not in str(error.value)


def _bad(kind="seq", teacher=None, student=None, **overrides):
    """A trainer constructor call with `teacher`, `student` (default: the model of `kind`) and `overrides`."""

    def build(tmp_path):
        args = make_args(tmp_path, max_steps=1, **overrides)
        model = student if student is not None else head_model(kind)
        return OTOTrainer(model=model, args=args, train_dataset=head_data(kind), teacher_model=teacher)

    return build


BAD_SETUPS = {
    "vocabulary": (_bad("clm", head_model("clm", vocab_size=101)), r"vocab_size=101 differs .* Use a teacher that"),
    "labels": (_bad("seq", head_model("seq", num_labels=3)), r"num_labels=3 differs .* Use a teacher trained"),
    "alpha 0": (_bad("seq", head_model("seq"), oto_distill_alpha=0.0), r"oto_distill_alpha=0 .* Set oto_distill_alpha"),
    "hidden size": (
        _bad("seq", head_model("seq", hidden_size=48, intermediate_size=40), oto_distill_hidden_weight=1.0),
        r"equal hidden sizes.*hidden_size=32 and the teacher 48\. Set oto_distill_hidden_weight=0",
    ),
    "layer map": (
        _bad("seq", head_model("seq"), oto_distill_hidden_weight=1.0, oto_distill_layer_map=["1:7"]),
        r"pair \(1, 7\) is out of range",
    ),
    "both teachers": (
        _bad("seq", head_model("seq"), oto_teacher="some/teacher"),
        r"both teacher_model and oto_teacher",
    ),
    "no teacher": (_bad("seq", None, oto_distill_temperature=4.0), r"oto_distill_temperature set but there is no"),
    "other head": (_bad("seq", head_model("tok")), r"needs the same task head \(ForSequenceClassification\)"),
    "regression": (
        _bad("seq", head_model("seq", num_labels=1), head_model("seq", seed=2, num_labels=1)),
        r"single-label classification heads",
    ),
}


@pytest.mark.parametrize("name", sorted(BAD_SETUPS))
def test_bad_teacher_setups_fail_in_one_line(tmp_path, name):
    build, pattern = BAD_SETUPS[name]
    with pytest.raises(ValueError, match=pattern) as error:
        build(tmp_path)
    assert "\n" not in str(error.value)


def test_the_student_itself_is_refused_as_teacher(tmp_path):
    model = head_model("seq")
    with pytest.raises(ValueError, match=r"shares parameters with the student .* copy\.deepcopy") as error:
        OTOTrainer(model=model, args=make_args(tmp_path), train_dataset=head_data("seq"), teacher_model=model)
    assert "\n" not in str(error.value)


def test_logits_of_another_shape_are_refused():
    with pytest.raises(ValueError, match=r"student logits \(2, 5\) and teacher logits \(2, 6\) differ"):
        soft_kl(torch.zeros(2, 5), torch.zeros(2, 6), 2.0)
