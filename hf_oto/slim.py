"""Physical slimming: remove every all-zero group, account for params and FLOPs, and prove exactness.

`slim_model` builds the slim class of `modeling_oto` from a slim config (meta device, no allocation),
then assigns it the dense weights with zero groups sliced away. Before returning it checks that the slim
model's outputs equal the dense group-sparse model's on random inputs, and it records those inputs and
outputs on the slim model so that `save_pretrained` can check again before writing.
"""

from __future__ import annotations

import copy

import torch
from torch import nn

from .accounting import SlimReport, model_shape
from .architectures import ArchitectureSpec, base_model_type, get_spec
from .configuration_oto import grouped_dim, layer_projections, oto_config_class, part_width
from .groups import ATTENTION, FFN, GroupSet, build_groups
from .modeling_oto import (
    CONFIG_FIELDS,
    ZeroInvarianceError,
    max_output_difference,
    oto_model_class,
)

DEFAULT_VERIFY_TOLERANCE = 1e-5


def reference_inputs(model: nn.Module, batch: int = 2, seq_len: int = 16, seed: int = 0) -> dict[str, torch.Tensor]:
    """Seeded random inputs for the zero-invariance check (token ids with padding, or pixels)."""
    generator = torch.Generator().manual_seed(seed)
    config = model.config
    parameter = next(model.parameters())
    if getattr(model, "main_input_name", "input_ids") == "pixel_values":
        size = config.image_size
        pixels = torch.randn(batch, config.num_channels, size, size, generator=generator)
        return {"pixel_values": pixels.to(parameter.device, parameter.dtype)}
    seq_len = min(seq_len, getattr(config, "max_position_embeddings", seq_len))
    if getattr(config, "pad_token_id", None) is None and type(model).__name__.endswith("ForSequenceClassification"):
        batch = 1  # decoder classifiers refuse batches without a pad token
    input_ids = torch.randint(0, config.vocab_size, (batch, seq_len), generator=generator)
    attention_mask = torch.ones_like(input_ids)
    attention_mask[-1, seq_len - seq_len // 4 :] = 0
    if type(model).__name__.endswith("ForMultipleChoice"):  # (batch, choices, seq_len)
        input_ids, attention_mask = input_ids.unsqueeze(1).repeat(1, 2, 1), attention_mask.unsqueeze(1).repeat(1, 2, 1)
    return {"input_ids": input_ids.to(parameter.device), "attention_mask": attention_mask.to(parameter.device)}


def default_tolerance(model: nn.Module) -> float:
    """Relative tolerance of the slim-vs-dense check: 1e-5 in float32, 5e-2 in half precision."""
    dtype = next(model.parameters()).dtype
    return DEFAULT_VERIFY_TOLERANCE if dtype in (torch.float32, torch.float64) else 5e-2


def _run(model: nn.Module, inputs: dict[str, torch.Tensor]):
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            return model(**inputs)
    finally:
        model.train(was_training)


def _kept_indices(groups: GroupSet, num_layers: int) -> tuple[list[torch.Tensor], list[torch.Tensor], list[int]]:
    """Per layer: kept KV-group indices, kept FFN neuron indices, and query heads per KV group."""
    zero = groups.zero_norm_mask().cpu()
    kept_kv = [torch.zeros(0, dtype=torch.long) for _ in range(num_layers)]
    kept_ffn = [torch.zeros(0, dtype=torch.long) for _ in range(num_layers)]
    per_group = [1] * num_layers
    for block, (start, end) in zip(groups.blocks, groups.block_ranges(), strict=True):
        kept = torch.nonzero(~zero[start:end]).flatten()
        if block.structure == ATTENTION:
            kept_kv[block.layer] = kept
            per_group[block.layer] = block.queries_per_group
        elif block.structure == FFN:
            kept_ffn[block.layer] = kept
    return kept_kv, kept_ffn, per_group


def _rows(kept: torch.Tensor, width: int) -> torch.Tensor:
    """Row indices of the kept chunks, each `width` rows wide."""
    return (kept[:, None] * width + torch.arange(width)).flatten()


def _slice_layer_state(
    state: dict, prefix: str, layer: nn.Module, layout: dict, kept_kv, per_group, kept_ffn
) -> set[str]:
    """Slice one layer's projections in `state` (in place) down to the kept heads and neurons.

    Every projection of `configuration_oto.layer_projections` keeps, in each of its regions, the chunks of the kept
    groups (rows of a Linear's weight, columns of a Conv1D's, and bias entries; or input columns). Returns the
    keys it replaced (with new, sliced tensors)."""
    replaced = set()
    widths = {kind: part_width(kind, per_group, layout["head_dim"]) for kind in ("q", "kv", "qkv", "ffn")}
    for projections, kept in zip(layer_projections(layout), (kept_kv, kept_ffn), strict=True):
        for path, side, parts in projections:
            module = layer.get_submodule(path)
            features = module.weight.shape[grouped_dim(module, side)]  # a norm's 1-D weight too (width_norms)
            dense_groups = features // sum(widths[kind] for kind in parts)
            pieces, offset = [], 0
            for kind in parts:
                pieces.append(offset + _rows(kept, widths[kind]))
                offset += dense_groups * widths[kind]
            index = torch.cat(pieces)
            leaves = [("weight", grouped_dim(module, side))] + ([("bias", 0)] if side == "out" else [])
            for leaf, dim in leaves:
                key = f"{prefix}.{path}.{leaf}"
                if key in state:
                    state[key] = state[key].index_select(dim, index.to(state[key].device))
                    replaced.add(key)
    return replaced


def _check_groups_belong_to(groups: GroupSet, model: nn.Module) -> None:
    """Refuse a GroupSet built from another model: its zero groups say nothing about `model`'s weights."""
    if not isinstance(groups, GroupSet):
        raise TypeError(f"groups must be the GroupSet of build_groups(model), got {type(groups).__name__}.")
    own = {id(parameter) for parameter in model.parameters()}
    foreign = [parameter for parameter in groups.params() if id(parameter) not in own]
    if foreign:
        raise ValueError(
            f"groups were built from another model ({len(foreign)} of its {len(groups.params())} grouped tensors are "
            "not this model's parameters); pass groups=build_groups(model) for the model you slim, or omit groups."
        )


def slim_config_for(model: nn.Module, spec: ArchitectureSpec, heads, kv_heads, ffn, settings: dict | None = None):
    """The slim config: the dense config's fields unchanged plus the per-layer counts and layout."""
    values = model.config.to_dict()
    for key in ("model_type", "architectures", "auto_map", "transformers_version", *CONFIG_FIELDS):
        values.pop(key, None)
    config_class = oto_config_class(type(model.config))
    config = config_class(
        **values,
        oto_num_attention_heads=list(heads),
        oto_num_key_value_heads=list(kv_heads),
        oto_intermediate_sizes=list(ffn),
        oto_layout=spec.layout(model.config),
        oto_base_model_type=base_model_type(model.config),
        oto_settings=dict(settings or getattr(model.config, "oto_settings", None) or {}),
    )
    config._attn_implementation = model.config._attn_implementation
    config.architectures = [oto_model_class(type(model)).__name__]
    return config


def slim_model(
    model: nn.Module,
    groups: GroupSet | None = None,
    *,
    seq_len: int = 128,
    verify: bool = True,
    tolerance: float | None = None,
    settings: dict | None = None,
) -> tuple[nn.Module, SlimReport]:
    """A physically smaller copy of `model` with every all-zero group removed, and its `SlimReport`.

    Args:
        model: a supported model whose pruned groups are exactly zero. It is not modified.
        groups: its `GroupSet` (built with `build_groups(model)` when omitted).
        seq_len: sequence length at which FLOPs per token are reported.
        verify: compare every layer's hidden states and the outputs of the slim and dense models on random
            inputs; raise `ZeroInvarianceError` if they differ by more than `tolerance`.
        tolerance: largest difference allowed, relative to each output's scale ``max(1, max|output|)``
            (default: 1e-5 for float32 models, 5e-2 for half precision).
        settings: OTO hyperparameters recorded in the slim config (for model cards and `hf-oto inspect`).
    """
    groups = groups if groups is not None else build_groups(model)
    _check_groups_belong_to(groups, model)
    spec = groups.spec or get_spec(model)  # the spec the groups were built with (verification tries candidates)
    layout = spec.layout(model.config)
    layers = model.base_model.get_submodule(spec.layers)
    kept_kv, kept_ffn, per_group = _kept_indices(groups, len(layers))

    name_prefix = f"{model.base_model_prefix}." if model.base_model is not model else ""
    state = dict(model.state_dict())
    sliced: set[str] = set()
    for index in range(len(layers)):
        prefix = f"{name_prefix}{spec.layers}.{index}"
        sliced |= _slice_layer_state(
            state, prefix, layers[index], layout, kept_kv[index], per_group[index], kept_ffn[index]
        )
    state = {key: (value if key in sliced else value.clone()) for key, value in state.items()}

    heads = [len(k) * g for k, g in zip(kept_kv, per_group, strict=True)]
    config = slim_config_for(model, spec, heads, [len(k) for k in kept_kv], [len(k) for k in kept_ffn], settings)
    if spec.per_head_inputs:  # the slim layers pick their heads' entries of inputs shared by all layers
        config.oto_kept_heads = [_rows(k, g).tolist() for k, g in zip(kept_kv, per_group, strict=True)]
    with torch.device("meta"):
        slim = oto_model_class(type(model))(config)
    slim.load_state_dict(state, strict=True, assign=True)
    for name, buffer in model.named_buffers():
        if name not in state:
            owner, _, leaf = name.rpartition(".")
            slim.get_submodule(owner)._buffers[leaf] = buffer.clone()
    slim.tie_weights()
    if getattr(model, "generation_config", None) is not None:
        slim.generation_config = copy.deepcopy(model.generation_config)
    on_meta = [n for n, t in [*slim.named_parameters(), *slim.named_buffers()] if t.is_meta]
    if on_meta:
        raise RuntimeError(f"slim_model left tensors unassigned: {on_meta[:5]}; this is a bug in hf_oto.")
    slim.train(model.training)

    report = SlimReport(seq_len, model_shape(model, seq_len, spec), model_shape(slim, seq_len, spec))
    if verify:
        tolerance = default_tolerance(model) if tolerance is None else tolerance
        # Every layer's hidden states are compared, not only the final outputs: a small head can hide a change.
        inputs = {**reference_inputs(model), "output_hidden_states": True}
        expected = _run(model, inputs)
        report.max_output_diff = max_output_difference(expected, _run(slim, inputs))
        if not report.max_output_diff <= tolerance:
            raise ZeroInvarianceError(
                f"slimming changed the outputs by {report.max_output_diff:.3g} (relative tolerance {tolerance:.1g}). "
                f"A group of {type(model).__name__} that looked zero is not zero-invariant; please report this bug."
            )
        slim._oto_reference = {"inputs": inputs, "outputs": expected, "tolerance": tolerance}
    slim.config.oto_report = report.to_config()
    return slim, report
