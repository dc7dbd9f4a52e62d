"""Parameters and FLOPs: the one home of the cost formulas, and the dense-vs-slim report built on them.

FLOPs per token count every `nn.Linear` (2·in·out, task heads included) plus the attention matmuls (QKᵀ and AV:
4·seq_len·heads·head_dim per layer). Embedding lookups and norms are not counted. The same two formulas give a
model's cost (`model_shape`) and the cost that zero groups remove during training (`removed_costs`).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch import nn

from .architectures import ArchitectureSpec, get_spec
from .configuration_oto import is_conv1d, layer_counts, projection_features
from .groups import ATTENTION, GroupSet


def linear_flops(weights: float) -> float:
    """FLOPs per token of linear layers holding `weights` matrix entries: one multiply and one add each."""
    return 2 * weights


def attention_flops(seq_len: int, heads: float, head_dim: int) -> float:
    """FLOPs per token of the attention matmuls (QKᵀ and AV) of `heads` query heads at `seq_len`."""
    return 4 * seq_len * heads * head_dim


def kept_ratio(kept: float, total: float) -> float:
    """`kept / total`, or 0.0 when there was nothing (`total == 0`)."""
    return kept / total if total else 0.0


def format_kept(kept: float, total: float) -> str:
    """`kept / total` as a percentage with one decimal, or "n/a" when there was nothing."""
    return f"{kept_ratio(kept, total):.1%}" if total else "n/a"


@dataclass
class ModelShape:
    """Per-layer structure and cost of one model: what `SlimReport` compares before and after."""

    heads: list[int]
    kv_heads: list[int]
    ffn: list[int]
    params: int
    non_embedding_params: int
    flops_per_token: int


def model_shape(model: nn.Module, seq_len: int = 128, spec: ArchitectureSpec | None = None) -> ModelShape:
    """Heads, KV heads and FFN width per layer, parameter counts, and FLOPs per token at `seq_len`."""
    spec = spec or get_spec(model)
    layout = spec.layout(model.config)
    head_dim = layout["head_dim"]
    layers = model.base_model.get_submodule(spec.layers)
    heads, kv_heads, ffn = (list(column) for column in zip(*(layer_counts(layer, layout) for layer in layers)))
    params = sum(p.numel() for p in model.parameters())
    embedding = sum(p.numel() for m in model.modules() if isinstance(m, nn.Embedding) for p in m.parameters(False))
    linear = sum(
        linear_flops(math.prod(projection_features(m)))
        for m in model.modules()
        if isinstance(m, nn.Linear) or is_conv1d(m)
    )
    attention = sum(attention_flops(seq_len, h, head_dim) for h in heads)
    return ModelShape(heads, kv_heads, ffn, params, params - embedding, linear + attention)


def removed_costs(groups: GroupSet, zero: torch.Tensor, seq_len: int) -> tuple[float, float]:
    """Parameters and FLOPs per token that the groups marked in `zero` (a bool mask over `groups`) remove.

    Per-block constants times the zero count of each block, so there is no per-group loop."""
    params = flops = 0.0
    for block, (start, end) in zip(groups.blocks, groups.block_ranges(), strict=True):
        count = float(zero[start:end].sum())
        if not count:
            continue
        weights = sum(p.numel for p in block.slices if p.param.dim() == 2) / block.num_groups
        params += count * block.group_size
        flops += linear_flops(count * weights)
        if block.structure == ATTENTION:
            head_dim = block.head_dim or block.slices[0].size // (block.num_groups * block.queries_per_group)
            flops += attention_flops(seq_len, count * block.queries_per_group, head_dim)
    return params, flops


@dataclass(frozen=True)
class CostRow:
    """One dense → slim figure of a `SlimReport` (parameters, non-embedding parameters, FLOPs per token)."""

    label: str
    dense: int
    slim: int

    @property
    def kept(self) -> str:
        return format_kept(self.slim, self.dense)


@dataclass(frozen=True)
class LayerRow:
    """One layer's structure kept, as (slim, dense) counts; dense counts are None when unknown."""

    layer: int
    heads: tuple[int, int | None]
    kv_heads: tuple[int, int | None]
    ffn: tuple[int, int | None]

    @staticmethod
    def fraction(pair: tuple[int, int | None]) -> str:
        """ "kept/dense", or only "kept" when the dense count is unknown."""
        return f"{pair[0]}/{pair[1]}" if pair[1] is not None else str(pair[0])


@dataclass
class SlimReport:
    """Dense vs slim accounting, returned by `slim_model`. FLOPs are per token at `seq_len`.

    `rows()` and `layer_rows()` are what every rendering formats (`str(report)`, the model card, `hf-oto
    inspect`); `to_config()` / `from_config()` store it in and read it back from a slim model's config.
    """

    seq_len: int
    dense: ModelShape
    slim: ModelShape
    max_output_diff: float | None = None
    """Largest slim-vs-dense output difference, relative to each output's scale (see `max_output_difference`);
    None when the slim model was not checked."""

    @property
    def params_kept_ratio(self) -> float:
        return kept_ratio(self.slim.params, self.dense.params)

    @property
    def non_embedding_params_kept_ratio(self) -> float:
        return kept_ratio(self.slim.non_embedding_params, self.dense.non_embedding_params)

    @property
    def flops_kept_ratio(self) -> float:
        return kept_ratio(self.slim.flops_per_token, self.dense.flops_per_token)

    def rows(self) -> list[CostRow]:
        """Parameters, non-embedding parameters and FLOPs per token, dense and slim."""
        d, s = self.dense, self.slim
        return [
            CostRow("parameters", d.params, s.params),
            CostRow("non-embedding parameters", d.non_embedding_params, s.non_embedding_params),
            CostRow(f"FLOPs per token (seq len {self.seq_len})", d.flops_per_token, s.flops_per_token),
        ]

    def layer_rows(self) -> list[LayerRow]:
        """Heads, key/value heads and FFN neurons kept, per layer."""
        d, s = self.dense, self.slim
        return [
            LayerRow(i, (s.heads[i], d.heads[i]), (s.kv_heads[i], d.kv_heads[i]), (s.ffn[i], d.ffn[i]))
            for i in range(len(s.heads))
        ]

    def metrics(self) -> dict[str, float]:
        """Flat dense/slim figures for `eval_results.json`-style metric files."""
        return {
            "params_dense": self.dense.params,
            "params_slim": self.slim.params,
            "params_kept_ratio": self.params_kept_ratio,
            "non_embedding_params_kept_ratio": self.non_embedding_params_kept_ratio,
            "flops_per_token_dense": self.dense.flops_per_token,
            "flops_per_token_slim": self.slim.flops_per_token,
            "flops_kept_ratio": self.flops_kept_ratio,
        }

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data.update(
            params_kept_ratio=self.params_kept_ratio,
            non_embedding_params_kept_ratio=self.non_embedding_params_kept_ratio,
            flops_kept_ratio=self.flops_kept_ratio,
        )
        return data

    def to_config(self) -> dict[str, Any]:
        """The `oto_report` entry of the slim config (the slim per-layer counts are the config's own fields)."""
        d, s = self.dense, self.slim
        return {
            "seq_len": self.seq_len,
            "params": [d.params, s.params],
            "non_embedding_params": [d.non_embedding_params, s.non_embedding_params],
            "flops_per_token": [d.flops_per_token, s.flops_per_token],
            "dense_heads": d.heads,
            "dense_kv_heads": d.kv_heads,
            "dense_ffn": d.ffn,
            "max_output_diff": self.max_output_diff,
        }

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> SlimReport | None:
        """The report recorded in a slim config (a `config.json` dict), or None when it records none."""
        report = config.get("oto_report") or {}
        needed = ("seq_len", "params", "non_embedding_params", "flops_per_token", "dense_heads", "dense_ffn")
        if any(key not in report for key in needed):
            return None
        heads = list(config["oto_num_attention_heads"])
        kv_heads = list(config["oto_num_key_value_heads"])
        ffn = list(config["oto_intermediate_sizes"])
        dense_kv = report.get("dense_kv_heads") or list(report["dense_heads"])

        def shape(index: int, layer_heads, layer_kv, layer_ffn) -> ModelShape:
            return ModelShape(
                list(layer_heads),
                list(layer_kv),
                list(layer_ffn),
                report["params"][index],
                report["non_embedding_params"][index],
                report["flops_per_token"][index],
            )

        return cls(
            seq_len=report["seq_len"],
            dense=shape(0, report["dense_heads"], dense_kv, report["dense_ffn"]),
            slim=shape(1, heads, kv_heads, ffn),
            max_output_diff=report.get("max_output_diff"),
        )

    def __str__(self) -> str:
        lines = [f"{row.label:<30}{row.dense:>14,} -> {row.slim:>14,}  ({row.kept} kept)" for row in self.rows()]
        lines.append("layer | heads kept | kv heads kept | ffn neurons kept")
        for row in self.layer_rows():
            lines.append(
                f"{row.layer:>5} | {LayerRow.fraction(row.heads):>10} | {LayerRow.fraction(row.kv_heads):>13} | "
                f"{LayerRow.fraction(row.ffn):>16}"
            )
        return "\n".join(lines)


__all__ = [
    "CostRow",
    "LayerRow",
    "ModelShape",
    "SlimReport",
    "attention_flops",
    "format_kept",
    "kept_ratio",
    "linear_flops",
    "model_shape",
    "removed_costs",
]
