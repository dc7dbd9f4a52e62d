"""Numerical proof that a spec's groups are zero-invariant for a model class, before any group is used.

An inferred spec (`hf_oto.architectures.inference`) is a guess read off module names and shapes. Before
`build_groups` hands out its groups, `verify_spec` builds a *random* copy of the model (its class and config,
cut to a few layers), zeroes a random subset of the groups of each structure plus one whole layer's worth,
slims the copy and compares every layer's hidden states and the outputs with the dense copy. Any difference
beyond 1e-5 (relative to each output's scale, the check `slim_model` makes) refuses the family with an
`UnsupportedModelError` naming the structure, the first layer that differs, the difference and what to do.

The verdict is cached per model class and structure, so the check runs once per process.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable
from typing import Any

import torch
from torch import nn

from .architectures import ArchitectureSpec
from .errors import UnsupportedModelError
from .groups import ATTENTION, FFN, STRUCTURES, GroupSet, build_groups_with_spec
from .modeling_oto import max_output_difference
from .slim import DEFAULT_VERIFY_TOLERANCE, reference_inputs, slim_model

VERIFY_LAYERS = 3
"""Layers of the random copy: one loses every group of the structure, the others a random subset."""
VERIFY_VOCAB = 512
"""Vocabulary of the random copy (embeddings are not grouped, so a small one proves the same)."""
ADVICE = {
    ATTENTION: 'prune FFN neurons only: OTOTrainingArguments(oto_prune="ffn") or build_groups(model, prune=["ffn"])',
    FFN: 'prune attention heads only: OTOTrainingArguments(oto_prune="heads") or build_groups(model, prune=["attention"])',
}
_VERDICTS: dict[tuple[type, str], str | None] = {}
"""(model class, structure) -> None when verified, else the refusal message."""


def _cut_config(config: Any) -> Any:
    """A copy of `config` with at most `VERIFY_LAYERS` layers (per-layer lists cut alike) and a small vocabulary."""
    config = copy.deepcopy(config)
    layers = config.num_hidden_layers
    kept = min(layers, VERIFY_LAYERS)
    for name, value in list(vars(config).items()):
        if isinstance(value, list) and len(value) == layers and not name.startswith("oto_"):
            setattr(config, name, value[:kept])
    config.num_hidden_layers = kept
    vocab = getattr(config, "vocab_size", None)
    if isinstance(vocab, int) and vocab > VERIFY_VOCAB:
        config.vocab_size = VERIFY_VOCAB
        for name in ("pad_token_id", "bos_token_id", "eos_token_id", "sep_token_id", "cls_token_id", "mask_token_id"):
            value = getattr(config, name, None)
            if isinstance(value, int) and value >= VERIFY_VOCAB:
                setattr(config, name, VERIFY_VOCAB - 1)
    return config


def random_copy(model: nn.Module, seed: int = 0) -> nn.Module:
    """A float32 CPU model of `model`'s class with random weights and a cut-down config (see `_cut_config`)."""
    torch.manual_seed(seed)
    config = _cut_config(model.config)
    copy_ = type(model)(config).float().eval()
    for parameter in copy_.parameters():  # families that initialize some projections to zero (e.g. GPT-2's
        with torch.no_grad():  # scaled c_proj) must not hide a wrong group behind an all-zero weight
            parameter.add_(torch.randn_like(parameter) * 0.02)
    return copy_


def _zero_pattern(groups: GroupSet, structure: str, generator: torch.Generator) -> list[int]:
    """Every group of `structure` in one layer, and a random half (at least one, not all) in the others."""
    chosen: list[int] = []
    blocks = [(b, r) for b, r in zip(groups.blocks, groups.block_ranges(), strict=True) if b.structure == structure]
    whole = 0 if structure == ATTENTION else len(blocks) - 1
    for position, (block, (start, end)) in enumerate(blocks):
        if position == whole:
            chosen += range(start, end)
            continue
        count = max(1, block.num_groups // 2) if block.num_groups > 1 else 0
        picks = torch.randperm(block.num_groups, generator=generator)[:count]
        chosen += [start + int(i) for i in picks]
    return chosen


def _first_difference(expected: Any, actual: Any) -> tuple[str, float]:
    """Where the slim outputs first differ: ``("layer i", diff)`` from the hidden states, else the outputs."""
    for index, (a, b) in enumerate(zip(expected.hidden_states or (), actual.hidden_states or (), strict=False)):
        difference = max_output_difference(a, b)
        if difference > DEFAULT_VERIFY_TOLERANCE:
            return (f"after layer {index - 1}" if index else "at the embeddings"), difference
    return "in the final outputs", max_output_difference(expected, actual)


def check_structure(model: nn.Module, spec: ArchitectureSpec, structure: str) -> str | None:
    """None if zeroing groups of `structure` and slimming leaves a random copy's outputs unchanged, else why not."""
    where = f"{type(model).__name__} ({spec.origin} spec)"
    probe = random_copy(model)
    try:
        groups = build_groups_with_spec(probe, spec, prune=(structure,))
        groups.zero_(_zero_pattern(groups, structure, torch.Generator().manual_seed(0)))
        inputs = {**reference_inputs(probe), "output_hidden_states": True}
        with torch.no_grad():
            expected = probe(**inputs)
            slim, _ = slim_model(probe, groups, verify=False)
            actual = slim.eval()(**inputs)
    except Exception as error:  # any failure to slim or run is a refusal, reported in one line
        text = " ".join(str(error).split())  # one line, whatever the exception
        return f"{where}: removing {structure} groups fails ({type(error).__name__}: {text[:400]})"
    place, difference = _first_difference(expected, actual)
    if difference <= DEFAULT_VERIFY_TOLERANCE:
        return None
    return (
        f"{where}: the {structure} groups are not zero-invariant: removing them changed the outputs {place} by "
        f"{difference:.3g} (relative tolerance {DEFAULT_VERIFY_TOLERANCE:g})"
    )


def verify_spec(model: nn.Module, spec: ArchitectureSpec, structures: Iterable[str] = STRUCTURES) -> None:
    """Raise `UnsupportedModelError` unless every structure's groups of `spec` are proven zero-invariant on a random
    copy of `model`'s class. Cached per class and structure."""
    problems = []
    for structure in structures:
        key = (type(model), structure)
        if key not in _VERDICTS:
            refusal = spec.head_pruning_refusal if structure == ATTENTION else None
            _VERDICTS[key] = (
                f"{type(model).__name__}: {refusal}" if refusal else check_structure(model, spec, structure)
            )
        if _VERDICTS[key] is not None:
            problems.append((structure, _VERDICTS[key]))
    if not problems:
        return
    failed = {structure for structure, _ in problems}
    advice = ADVICE[problems[0][0]] if len(failed) == 1 and len(set(structures)) > 1 else "it cannot be pruned as is"
    raise UnsupportedModelError(
        "; ".join(message for _, message in problems) + f". What you can do: {advice}; or describe the family with "
        "a hand-written ArchitectureSpec in hf_oto/architectures/."
    )


def verdicts(model: nn.Module) -> dict[str, str | None]:
    """The cached verdict per structure for `model`'s class (None: verified), for ``hf-oto check``."""
    return {structure: _VERDICTS.get((type(model), structure)) for structure in (ATTENTION, FFN)}
