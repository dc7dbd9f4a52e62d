"""Knowledge distillation inside `OTOTrainer`: a dense teacher guides the student while HSPG prunes it.

One training run optimizes ``(1 - α)·task + α·KD + β·hidden``:

- ``KD``: KL(teacher ‖ student) on logits softened by the temperature T, times T² (Hinton et al., 2015), over
  the positions that count: labels ≠ -100 (causal LM: the shifted labels, ``logits[:, :-1]`` vs
  ``labels[:, 1:]``) and attention_mask ≠ 0. Question answering distils ``start_logits`` and ``end_logits``
  (the mean of the two, like the QA loss), with padding excluded from the softmax over positions.
- ``hidden``: mean squared error between student and teacher hidden states (a layer map pairs them) over the
  non-padding tokens.

Normalization, so that gradient accumulation and DDP behave as they do for the task loss: the KD term follows
the task loss. When the Trainer normalizes the task loss by ``num_items_in_batch`` (models whose loss consumes
it, e.g. causal LMs: a token mean over the whole accumulated, all-process batch), KD is the sum over the counted
positions divided by the same ``num_items_in_batch`` (and multiplied by the same process count), so that GA=2 ×
batch 2 equals GA=1 × batch 4. Otherwise both are means over the micro-batch, which the Trainer divides by the
number of accumulation steps. The hidden-state term is always a micro-batch mean weighted like one micro-batch.

The teacher runs in eval mode under `torch.no_grad` and under the student's autocast (fp16/bf16), is moved to
the student's device, has ``requires_grad=False``, is never given to the optimizer or to DDP (each rank holds
its own copy) and is never saved: it is an attribute of the `Distiller`, not a submodule of the student.
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from transformers import TrainerCallback

from .optim.hyperparameters import is_number

DEFAULT_ALPHA = 0.5
DEFAULT_TEMPERATURE = 2.0
DISTILL_FIELDS = ("oto_distill_alpha", "oto_distill_temperature", "oto_distill_hidden_weight", "oto_distill_layer_map")
"""The `OTOTrainingArguments` fields that only mean something with a teacher."""
LABEL_HEADS = ("ForSequenceClassification", "ForTokenClassification", "ForMultipleChoice", "ForImageClassification")
VOCAB_HEADS = ("ForCausalLM", "ForMaskedLM")
LOG_KEYS = ("oto/task_loss", "oto/distill_loss")


# ---------------------------------------------------------------------------------------------- loss math


def soft_kl(
    student_logits: torch.Tensor,
    teacher_logits: torch.Tensor,
    temperature: float,
    class_mask: torch.Tensor | None = None,
) -> torch.Tensor:
    """T²·KL(softmax(teacher/T) ‖ softmax(student/T)) over the last dimension, in float32: one value per row.

    `class_mask` (same shape as the logits, True = keep) removes classes from both softmaxes (QA: padding)."""
    if student_logits.shape != teacher_logits.shape:
        raise ValueError(
            f"student logits {tuple(student_logits.shape)} and teacher logits {tuple(teacher_logits.shape)} differ: "
            "distillation needs a teacher with the same vocabulary / label set. Use a teacher with the student's "
            "tokenizer and num_labels."
        )
    student, teacher = student_logits.float() / temperature, teacher_logits.float() / temperature
    if class_mask is not None:
        student = student.masked_fill(~class_mask, -math.inf)
        teacher = teacher.masked_fill(~class_mask, -math.inf)
    log_p_teacher, log_p_student = F.log_softmax(teacher, -1), F.log_softmax(student, -1)
    terms = log_p_teacher.exp() * (log_p_teacher - log_p_student)
    if class_mask is not None:
        terms = torch.where(class_mask, terms, torch.zeros_like(terms))
    return terms.sum(-1) * temperature**2


def position_mask(
    shape: torch.Size, labels: torch.Tensor | None, attention_mask: torch.Tensor | None
) -> torch.Tensor | None:
    """Which rows/positions of a per-row loss of `shape` count: labels ≠ -100 and attention_mask ≠ 0, where
    their shape matches (per-sequence labels leave token positions alone). None: all count."""
    mask = None
    for tensor, keep in ((labels, lambda t: t != -100), (attention_mask, lambda t: t != 0)):
        if tensor is not None and tensor.shape == shape:
            mask = keep(tensor) if mask is None else mask & keep(tensor)
    return mask


def kd_sum_and_count(
    student_logits: torch.Tensor,
    teacher_logits: torch.Tensor,
    temperature: float,
    labels: torch.Tensor | None = None,
    attention_mask: torch.Tensor | None = None,
    shift: bool = False,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Sum of `soft_kl` over the rows/positions that count, and their number.

    `shift`: causal LM, where position i predicts token i+1 (``logits[:, :-1]`` vs ``labels[:, 1:]``; both the
    input and the target position must be real tokens)."""
    if shift:
        student_logits, teacher_logits = student_logits[..., :-1, :], teacher_logits[..., :-1, :]
        labels = labels[..., 1:] if labels is not None else None
        if attention_mask is not None:
            attention_mask = attention_mask[..., :-1] * attention_mask[..., 1:]
    kl = soft_kl(student_logits, teacher_logits, temperature)
    mask = position_mask(kl.shape, labels, attention_mask)
    if mask is None:
        return kl.sum(), torch.tensor(kl.numel(), device=kl.device)
    return torch.where(mask, kl, torch.zeros_like(kl)).sum(), mask.sum()


def hidden_mse(
    student_hidden: Sequence[torch.Tensor],
    teacher_hidden: Sequence[torch.Tensor],
    layer_map: Sequence[tuple[int, int]],
    attention_mask: torch.Tensor | None = None,
) -> torch.Tensor:
    """Mean over the mapped layer pairs of the MSE between hidden states, over non-padding tokens (float32)."""
    losses = []
    for s, t in layer_map:
        diff = (student_hidden[s].float() - teacher_hidden[t].float()) ** 2
        if attention_mask is not None and attention_mask.shape == diff.shape[:-1]:
            keep = attention_mask.to(diff.dtype).unsqueeze(-1)
            losses.append((diff * keep).sum() / (keep.sum() * diff.shape[-1]).clamp(min=1))
        else:
            losses.append(diff.mean())
    return torch.stack(losses).mean()


def default_layer_map(student_layers: int, teacher_layers: int) -> list[tuple[int, int]]:
    """Student layer i ↦ teacher layer ⌊i·L_t/L_s⌋ for i = 1…L_s: the identity when the counts match, else evenly
    spaced, always ending on the last layers. Indices are into ``hidden_states`` (0 = embedding output)."""
    return [(i, i * teacher_layers // student_layers) for i in range(1, student_layers + 1)]


# ---------------------------------------------------------------------------------------------- settings


@dataclass(frozen=True)
class DistillSettings:
    """Resolved distillation settings (the `OTOTrainingArguments` fields with their defaults applied)."""

    alpha: float
    temperature: float
    hidden_weight: float
    layer_map: tuple[tuple[int, int], ...] | None  # None: `default_layer_map`


def parse_layer_map(value: Any) -> tuple[tuple[int, int], ...] | None:
    """`oto_distill_layer_map` as pairs: from ``[(0, 0), (1, 2)]`` or ``["0:0", "1:2"]`` (command line)."""
    if value is None:
        return None
    if not isinstance(value, (list, tuple)) or not value:
        raise ValueError("not a non-empty list")
    pairs = []
    for entry in value:
        if isinstance(entry, str):
            entry = entry.split(":")
            if len(entry) != 2 or not all(part.strip().isdigit() for part in entry):
                raise ValueError(f"{':'.join(entry)!r} is not 'student:teacher'")
            entry = [int(part) for part in entry]
        if not (isinstance(entry, (list, tuple)) and len(entry) == 2 and all(is_number(i) for i in entry)):
            raise ValueError(f"{entry!r} is not a (student_layer, teacher_layer) pair")
        if any(int(i) != i or i < 0 for i in entry):
            raise ValueError(f"{entry!r} holds a layer index that is not an int ≥ 0")
        pairs.append((int(entry[0]), int(entry[1])))
    return tuple(pairs)


def _finite(value: Any, low: float, high: float = math.inf, strict_low: bool = False) -> bool:
    return is_number(value) and math.isfinite(value) and (value > low if strict_low else value >= low) and value <= high


def distill_argument_problems(args: Any) -> list[str]:
    """One phrase per invalid distillation field of `args` (an `OTOTrainingArguments`)."""
    problems = []
    teacher = args.oto_teacher
    if teacher is not None and not (isinstance(teacher, str) and teacher.strip()):
        problems.append(f"oto_teacher={teacher!r} must be None or a folder path / Hub id of the teacher model")
    checks = [
        ("oto_distill_alpha", lambda v: _finite(v, 0.0, 1.0), "must be None (0.5) or a finite number in [0, 1]"),
        (
            "oto_distill_temperature",
            lambda v: _finite(v, 0.0, strict_low=True),
            "must be None (2.0) or a finite number > 0",
        ),
        ("oto_distill_hidden_weight", lambda v: _finite(v, 0.0), "must be None (0: off) or a finite number ≥ 0"),
    ]
    for name, ok, rule in checks:
        value = getattr(args, name)
        if value is not None and not ok(value):
            problems.append(f"{name}={value!r} {rule}")
    try:
        parse_layer_map(args.oto_distill_layer_map)
    except ValueError as error:
        problems.append(
            f"oto_distill_layer_map={args.oto_distill_layer_map!r} must be None (automatic) or a list of "
            f"(student_layer, teacher_layer) pairs or 'student:teacher' strings ({error})"
        )
    return problems


def resolve_settings(args: Any, has_teacher: bool) -> DistillSettings | None:
    """The settings to distil with, or None without a teacher; refuses settings that would silently do nothing."""
    given = [name for name in DISTILL_FIELDS if getattr(args, name) is not None]
    if not has_teacher:
        if given:
            raise ValueError(
                f"{', '.join(given)} set but there is no teacher, so nothing would be distilled: pass "
                "OTOTrainer(teacher_model=...) or oto_teacher=<folder or Hub id>, or drop those settings."
            )
        return None
    alpha = DEFAULT_ALPHA if args.oto_distill_alpha is None else float(args.oto_distill_alpha)
    hidden = float(args.oto_distill_hidden_weight or 0.0)
    if alpha == 0 and hidden == 0:
        raise ValueError(
            "oto_distill_alpha=0 with a teacher and no hidden-state distillation: the teacher would cost a forward "
            "pass per step and change nothing. Set oto_distill_alpha > 0 (or oto_distill_hidden_weight > 0), or "
            "drop the teacher."
        )
    temperature = DEFAULT_TEMPERATURE if args.oto_distill_temperature is None else args.oto_distill_temperature
    return DistillSettings(alpha, float(temperature), hidden, parse_layer_map(args.oto_distill_layer_map))


# ---------------------------------------------------------------------------------------------- the teacher


def head_name(model: torch.nn.Module) -> str:
    """The task-head part of a model's class name: ``BertForQuestionAnswering`` → ``ForQuestionAnswering``."""
    name = type(model).__name__
    return name[name.index("For") :] if "For" in name else "(base model)"


def load_teacher(name_or_path: str, student: torch.nn.Module) -> torch.nn.Module:
    """Load `oto_teacher` with the Auto class of the student's task head (e.g. AutoModelForQuestionAnswering)."""
    import transformers

    from .modeling_oto import auto_class_name

    stock = getattr(type(student), "_oto_base_class", type(student))
    auto_name = auto_class_name(stock)
    if auto_name == "AutoModel":
        raise ValueError(
            f"oto_teacher: the student {type(student).__name__} has no task head that distillation supports; "
            "pass teacher_model=<a loaded model> instead."
        )
    return getattr(transformers, auto_name).from_pretrained(name_or_path)


def check_teacher(student: torch.nn.Module, teacher: torch.nn.Module, settings: DistillSettings) -> None:
    """Refuse a teacher whose outputs cannot be compared with the student's, each with a one-line fix."""
    if not isinstance(teacher, torch.nn.Module):
        raise TypeError(f"teacher_model must be a torch.nn.Module (a transformers model), got {type(teacher).__name__}")
    if {id(p) for p in teacher.parameters()} & {id(p) for p in student.parameters()}:
        raise ValueError(
            "teacher_model shares parameters with the student (is it the same model?): the teacher must stay fixed "
            "while the student is pruned. Pass a separate copy, e.g. copy.deepcopy(model) before training."
        )
    if head_name(teacher) != head_name(student):
        raise ValueError(
            f"teacher_model is a {type(teacher).__name__} but the student a {type(student).__name__}: distillation "
            f"needs the same task head ({head_name(student)}). Load the teacher with the student's Auto class."
        )
    s_config, t_config = student.config, teacher.config
    head = head_name(student)
    if head in VOCAB_HEADS and s_config.vocab_size != t_config.vocab_size:
        raise ValueError(
            f"teacher vocab_size={t_config.vocab_size} differs from the student's {s_config.vocab_size}: their "
            "logits cover different vocabularies. Use a teacher that shares the student's tokenizer."
        )
    if head in LABEL_HEADS and head != "ForMultipleChoice" and s_config.num_labels != t_config.num_labels:
        raise ValueError(
            f"teacher num_labels={t_config.num_labels} differs from the student's {s_config.num_labels}: distillation "
            "compares label distributions. Use a teacher trained on the student's label set."
        )
    check_problem_type(student)
    if settings.hidden_weight > 0:
        s_size, t_size = getattr(s_config, "hidden_size", None), getattr(t_config, "hidden_size", None)
        if s_size != t_size:
            raise ValueError(
                f"hidden-state distillation needs equal hidden sizes, but the student has hidden_size={s_size} and "
                f"the teacher {t_size}. Set oto_distill_hidden_weight=0 (logit distillation still works)."
            )
        layers = (s_config.num_hidden_layers, t_config.num_hidden_layers)
        for s, t in settings.layer_map or ():
            if s > layers[0] or t > layers[1]:
                raise ValueError(
                    f"oto_distill_layer_map pair ({s}, {t}) is out of range: the student has hidden states 0…"
                    f"{layers[0]} and the teacher 0…{layers[1]} (0 = embeddings). Fix the pair or leave the map None."
                )


def check_problem_type(student: torch.nn.Module) -> None:
    """Softmax distillation fits single-label classification only: refuse regression and multi-label heads."""
    config = student.config
    problem = getattr(config, "problem_type", None)
    regression = head_name(student) == "ForSequenceClassification" and config.num_labels == 1
    if regression or problem in ("regression", "multi_label_classification"):
        raise ValueError(
            f"distillation supports single-label classification heads, not {problem or 'regression (num_labels=1)'}: "
            "its softmax KL does not apply. Train without a teacher."
        )


def _prepare_teacher(teacher: torch.nn.Module, device: torch.device) -> torch.nn.Module:
    teacher = teacher.to(device).eval()
    teacher.requires_grad_(False)
    return teacher


def _forward_names(model: torch.nn.Module) -> set[str] | None:
    """The keyword arguments `model.forward` takes, or None when it takes ``**kwargs``."""
    parameters = inspect.signature(model.forward).parameters.values()
    if any(p.kind == inspect.Parameter.VAR_KEYWORD for p in parameters):
        return None
    return {p.name for p in parameters}


# ---------------------------------------------------------------------------------------------- the distiller


@dataclass(frozen=True)
class Normalization:
    """How the Trainer normalized this micro-batch's task loss (see the module docstring)."""

    scaled_for_ga: bool  # True: the Trainer will not divide the loss by the accumulation steps
    num_items: torch.Tensor | int | None  # the task loss's divisor, when it is num_items_in_batch
    process_scale: int  # the Trainer's multiplier of a num_items-normalized loss under DDP
    ga_steps: int  # micro-batches in this accumulation step


def normalization_for(trainer: Any, num_items_in_batch: torch.Tensor | int | None) -> Normalization:
    """Mirror `Trainer.training_step` / `Trainer.compute_loss` (transformers 5.x) for the loss at hand."""
    accepts = trainer.model_accepts_loss_kwargs or trainer.compute_loss_func is not None
    scaled = trainer.loss_is_scaled_for_ga
    if scaled is None:
        scaled = (trainer.model_accepts_loss_kwargs and num_items_in_batch is not None) or (
            trainer.compute_loss_func is not None
        )
    process_scale = 1
    if trainer.args.average_tokens_across_devices and accepts and num_items_in_batch is not None:
        process_scale = trainer.accelerator.num_processes // trainer.get_tp_size()
    items = num_items_in_batch if scaled and accepts else None
    return Normalization(bool(scaled), items, process_scale, int(trainer.current_gradient_accumulation_steps))


class Distiller(TrainerCallback):
    """Holds the teacher, computes the distillation terms and averages them for the logs (a callback only to
    reset those averages when training starts)."""

    def __init__(self, teacher: torch.nn.Module, student: torch.nn.Module, settings: DistillSettings, device):
        check_teacher(student, teacher, settings)
        self.teacher = _prepare_teacher(teacher, device)
        self.settings = settings
        from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES

        stock = getattr(type(student), "_oto_base_class", type(student))
        self.shift_labels = stock.__name__ in MODEL_FOR_CAUSAL_LM_MAPPING_NAMES.values()
        self.layer_map = settings.layer_map or default_layer_map(
            student.config.num_hidden_layers, teacher.config.num_hidden_layers
        )
        self._teacher_names = _forward_names(self.teacher)
        self._sums: dict[str, torch.Tensor] = {}
        self._last_step = 0

    # ------------------------------------------------------------------ forward passes

    def student_inputs(self, inputs: dict[str, Any]) -> dict[str, Any]:
        return {**inputs, "output_hidden_states": True} if self.settings.hidden_weight > 0 else inputs

    def teacher_outputs(self, inputs: dict[str, Any], label_names: Sequence[str], autocast: Callable) -> Any:
        """The teacher's outputs on the student's batch (labels dropped), without gradients, under `autocast`."""
        skip = {*label_names, "labels", "num_items_in_batch"}
        names = self._teacher_names
        batch = {k: v for k, v in inputs.items() if k not in skip and (names is None or k in names)}
        if self.settings.hidden_weight > 0:
            batch["output_hidden_states"] = True
        with torch.no_grad(), autocast():
            return self.teacher(**batch)

    # ------------------------------------------------------------------ the loss

    def kd_terms(self, student: Any, teacher: Any, inputs: dict[str, Any]) -> tuple[torch.Tensor, torch.Tensor]:
        """(sum, count) of the KD term over this micro-batch, for whichever logits the head produces."""
        temperature = self.settings.temperature
        attention_mask = inputs.get("attention_mask")
        if "start_logits" in student:  # QA: distributions over positions; padding is not a position
            keep = attention_mask.bool() if attention_mask is not None else None
            sums = [soft_kl(student[k], teacher[k], temperature, keep).sum() for k in ("start_logits", "end_logits")]
            count = student["start_logits"].shape[0]
            return (sums[0] + sums[1]) / 2, torch.tensor(count, device=sums[0].device)
        logits = student["logits"]
        return kd_sum_and_count(
            logits,
            teacher["logits"],
            temperature,
            labels=inputs.get("labels"),
            attention_mask=attention_mask if logits.dim() == 3 else None,
            shift=self.shift_labels,
        )

    def loss(
        self, task_loss: torch.Tensor, student: Any, teacher: Any, inputs: dict[str, Any], norm: Normalization
    ) -> torch.Tensor:
        """``(1 - α)·task + α·KD + β·hidden``, each term normalized like the task loss; records the parts."""
        settings = self.settings
        total, count = self.kd_terms(student, teacher, inputs)
        if norm.num_items is not None:
            kd = total / norm.num_items * norm.process_scale
        else:
            kd = total / count.clamp(min=1)
            kd = kd / norm.ga_steps if norm.scaled_for_ga else kd
        loss = (1 - settings.alpha) * task_loss + settings.alpha * kd.to(task_loss.dtype)
        parts = {"oto/task_loss": task_loss, "oto/distill_loss": kd}
        if settings.hidden_weight > 0:
            hidden = hidden_mse(
                student["hidden_states"], teacher["hidden_states"], self.layer_map, inputs.get("attention_mask")
            )
            hidden = hidden / norm.ga_steps if norm.scaled_for_ga else hidden
            loss = loss + settings.hidden_weight * hidden.to(task_loss.dtype)
            parts["oto/hidden_distill_loss"] = hidden
        for key, value in parts.items():  # as the Trainer reports its loss: per optimizer step
            value = value.detach().float() if norm.scaled_for_ga else value.detach().float() / norm.ga_steps
            self._sums[key] = self._sums.get(key, 0.0) + value
        return loss

    # ------------------------------------------------------------------ logs

    def on_train_begin(self, args, state, control, **kwargs):
        self._sums, self._last_step = {}, state.global_step

    def log_metrics(self, global_step: int, gather: Callable[[torch.Tensor], torch.Tensor]) -> dict[str, float]:
        """Mean per optimizer step since the last log, over all processes (`gather`), like the Trainer's loss."""
        steps = global_step - self._last_step
        if steps <= 0 or not self._sums:
            return {}
        metrics = {key: gather(value).mean().item() / steps for key, value in sorted(self._sums.items())}
        self._sums, self._last_step = {}, global_step
        return metrics


def distill_compute_loss(
    trainer: Any,
    model: torch.nn.Module,
    inputs: dict[str, Any],
    num_items_in_batch: torch.Tensor | int | None,
    task_compute_loss: Callable[..., tuple[torch.Tensor, Any]],
) -> tuple[torch.Tensor, Any]:
    """The training loss with distillation: the task loss from `task_compute_loss` (the Trainer's), mixed with the
    teacher's terms. Returns (loss, student outputs)."""
    distiller: Distiller = trainer.distiller
    targets = {k: inputs[k] for k in ("labels", "attention_mask") if k in inputs}  # the Trainer may pop labels
    teacher = distiller.teacher_outputs(inputs, trainer.label_names, trainer.accelerator.autocast)
    task_loss, outputs = task_compute_loss(
        model, distiller.student_inputs(inputs), return_outputs=True, num_items_in_batch=num_items_in_batch
    )
    check_problem_type(trainer.accelerator.unwrap_model(model))  # problem_type is set on the first forward
    return distiller.loss(task_loss, outputs, teacher, targets, normalization_for(trainer, num_items_in_batch)), outputs


def build_distiller(trainer: Any, teacher_model: torch.nn.Module | None) -> Distiller | None:
    """The trainer's `Distiller` from `teacher_model` or `oto_teacher` (refusing both), or None without a teacher."""
    args = trainer.args
    if teacher_model is not None and args.oto_teacher is not None:
        raise ValueError(
            f"both teacher_model and oto_teacher={args.oto_teacher!r} are given: pass exactly one teacher."
        )
    settings = resolve_settings(args, teacher_model is not None or args.oto_teacher is not None)
    if settings is None:
        return None
    if args.n_gpu > 1:
        raise NotImplementedError(
            "distillation does not run under torch.nn.DataParallel (several GPUs in one process): launch one process "
            "per GPU with torchrun or accelerate launch (DDP)."
        )
    student = trainer.accelerator.unwrap_model(trainer.model)
    if teacher_model is None:
        teacher_model = load_teacher(args.oto_teacher, student)
    return Distiller(teacher_model, student, settings, args.device)


__all__ = [
    "DistillSettings",
    "Distiller",
    "default_layer_map",
    "hidden_mse",
    "kd_sum_and_count",
    "soft_kl",
]
