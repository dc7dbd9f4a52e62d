"""The declarative description of one model family: where its attention heads and FFN neurons live.

A spec names module paths and config fields only. Everything else in hf_oto (grouping, slimming, the
saved config, the self-contained modeling file) is driven by it, so adding a family means adding a spec.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

QKV_LAYOUTS = ("blocked", "interleaved")


@dataclass(frozen=True)
class Fused:
    """A fused projection whose output rows are `parts` equal, consecutive regions, one row per group in each.

    ``Fused("mlp.gate_up_proj", 2)`` is Phi-3's ``[gate: I | up: I]``: FFN neuron j owns row j of the gate
    region and row j of the up region (and the matching bias entries)."""

    path: str
    parts: int

    def to_json(self) -> dict[str, Any]:
        return {"path": self.path, "parts": self.parts}


# Quantities a spec may bind to a module attribute when a layer is reshaped (see `attention_attrs`).
LAYER_QUANTITIES = ("num_heads", "num_kv_heads", "num_kv_groups", "all_head_size")


@dataclass(frozen=True)
class ArchitectureSpec:
    """Where the zero-invariant structures of one model family live.

    Paths are dotted attribute paths. `layers` is relative to `model.base_model`; every other path is
    relative to one layer of that list. A projection may be an `nn.Linear` or transformers' `Conv1D` (GPT-2,
    weight stored transposed): which one is detected at run time.

    Attention projections are either separate (`q`, `k`, `v`) or one fused `qkv` whose output rows are laid out
    as `qkv_layout` says:

    - ``"blocked"``: ``[Q: heads·head_dim | K: kv_heads·head_dim | V: kv_heads·head_dim]`` (GPT-2's ``c_attn``,
      Phi-3's ``qkv_proj`` with GQA, ModernBERT's ``Wqkv``): three regions, a group owns one chunk of each;
    - ``"interleaved"``: ``[head 0: q, k, v | head 1: q, k, v | ...]`` (GPT-NeoX's ``query_key_value``): one
      contiguous chunk of ``3·head_dim`` rows per head (multi-head attention only).

    An `ffn_in` entry is a path, or a `Fused` projection holding several row regions (gate and up).
    """

    name: str
    """Family name shown to users, e.g. ``"bert"``."""
    model_types: tuple[str, ...]
    """`config.model_type` values this spec covers."""
    layers: str
    """Path of the `nn.ModuleList` of transformer layers, from `model.base_model`."""
    attention_module: str
    """The module that computes attention heads; replaced by an empty stand-in when a layer keeps 0 heads."""
    q: str | None = None
    k: str | None = None
    v: str | None = None
    o: str = ""
    """Output projection of the attention block (its input columns are grouped per head)."""
    ffn_in: tuple[str | Fused, ...] = ()
    """Projections whose output rows are FFN neurons (up, and gate for gated MLPs), plain or `Fused`."""
    ffn_out: str = ""
    """Projection whose input columns are FFN neurons (down)."""
    qkv: str | None = None
    """Fused query/key/value projection, instead of `q`, `k`, `v`."""
    qkv_layout: str = "blocked"
    """How `qkv`'s output rows are ordered: ``"blocked"`` or ``"interleaved"`` (see the class docstring)."""
    num_heads_field: str = "num_attention_heads"
    num_kv_heads_field: str | None = None
    """Config field for the number of key/value heads (GQA); None for plain multi-head attention."""
    intermediate_field: str = "intermediate_size"
    hidden_field: str = "hidden_size"
    num_layers_field: str = "num_hidden_layers"
    attention_attrs: dict[str, str] = field(default_factory=dict)
    """Attributes of `attention_module` that cache a head count, mapped to one of `LAYER_QUANTITIES`."""
    per_head_rows: tuple[str, ...] = ()
    """Further projections whose output rows are per query head, grouped and sliced like `q` (DeBERTa-v2's
    ``pos_key_proj`` / ``pos_query_proj`` when it does not share the attention keys)."""
    per_head_inputs: dict[str, int] = field(default_factory=dict)
    """Forward arguments of `attention_module` holding one entry per head along dim 1 (name -> position among
    the positional arguments), computed outside the layer and shared by all layers (MPNet's relative
    ``position_bias``). The slim model keeps each layer's heads' entries; zeroing a head needs nothing of them."""
    width_norms: dict[str, str] = field(default_factory=dict)
    """RMS norms inside the attention block over the full query (``"q"``) or key (``"k"``) projection width
    (OLMo 2's ``q_norm`` / ``k_norm``), path -> kind. Their weights join the head groups; the slim model rescales
    their input so that the mean square still runs over the dense width (removed heads contributed zeros)."""
    head_dim_field: str | None = "head_dim"
    """Config field giving the per-head width when the family has one (else hidden size / heads)."""
    head_pruning_refusal: str | None = None
    """Why this family's heads are not zero-invariant groups (they are then never pruned), or None."""
    inferred: bool = False
    """True for a spec read off the model by `architectures.inference` (used only once verified)."""
    fixed_head_dim: int | None = None
    """Per-head width recorded in a slim model's layout (`from_layout`); None: read from the config."""

    @property
    def origin(self) -> str:
        """``"hand-written"`` or ``"inferred"``, as `GroupSet` and ``hf-oto check`` print it."""
        return "inferred" if self.inferred else "hand-written"

    def __post_init__(self) -> None:
        separate = (self.q, self.k, self.v)
        if (self.qkv is None) == all(path is None for path in separate) or (self.qkv is None and None in separate):
            raise ValueError(f"spec {self.name!r}: give either q, k and v, or one fused qkv.")
        if self.qkv_layout not in QKV_LAYOUTS:
            raise ValueError(f"spec {self.name!r}: qkv_layout must be one of {QKV_LAYOUTS}, not {self.qkv_layout!r}.")
        if self.qkv_layout == "interleaved" and self.num_kv_heads_field is not None:
            raise ValueError(f"spec {self.name!r}: an interleaved qkv holds one key/value head per query head.")
        if not (self.o and self.ffn_in and self.ffn_out):
            raise ValueError(f"spec {self.name!r}: o, ffn_in and ffn_out are required.")

    def head_dim(self, config: Any) -> int:
        """Per-head width: the config's `head_dim_field` when the family has one, else hidden size / heads."""
        if self.fixed_head_dim is not None:
            return self.fixed_head_dim
        explicit = getattr(config, self.head_dim_field, None) if self.head_dim_field else None
        if isinstance(explicit, int) and explicit > 0:
            return explicit
        return getattr(config, self.hidden_field) // getattr(config, self.num_heads_field)

    def num_kv_heads(self, config: Any) -> int:
        if self.num_kv_heads_field is None:
            return getattr(config, self.num_heads_field)
        value = getattr(config, self.num_kv_heads_field, None)
        return value if value is not None else getattr(config, self.num_heads_field)

    def dense_width(self, config: Any, kind: str) -> int:
        """The dense query (``"q"``) or key/value (``"k"``) projection width."""
        heads = getattr(config, self.num_heads_field) if kind == "q" else self.num_kv_heads(config)
        return heads * self.head_dim(config)

    @classmethod
    def from_layout(cls, model_type: str, layout: dict[str, Any]) -> ArchitectureSpec:
        """The spec a slim config's `oto_layout` (see `layout`) describes: how slim models of inferred families
        are grouped and accounted without re-running inference on their reshaped layers."""
        return cls(
            name=layout.get("family", model_type),
            model_types=(model_type,),
            layers=layout["layers"],
            attention_module=layout["attention_module"],
            q=layout["q"],
            k=layout["k"],
            v=layout["v"],
            o=layout["o"],
            ffn_in=tuple(e if isinstance(e, str) else Fused(e["path"], e["parts"]) for e in layout["ffn_in"]),
            qkv=layout.get("qkv"),
            qkv_layout=layout.get("qkv_layout", "blocked"),
            num_heads_field=layout.get("config_fields", {}).get("num_heads") or "num_attention_heads",
            num_kv_heads_field=layout.get("config_fields", {}).get("num_kv_heads"),
            ffn_out=layout["ffn_out"],
            attention_attrs=dict(layout["attention_attrs"]),
            per_head_rows=tuple(layout.get("per_head_rows", ())),
            per_head_inputs=dict(layout.get("per_head_inputs", {})),
            width_norms={path: kind for path, (kind, _) in layout.get("width_norms", {}).items()},
            head_dim_field=None,
            fixed_head_dim=layout["head_dim"],
            inferred=bool(layout.get("inferred", False)),
        )

    def layout(self, config: Any) -> dict[str, Any]:
        """Plain-JSON description of this family for one config, stored in the slim model's config.

        The self-contained modeling file reshapes layers from this dictionary alone, so a saved model
        loads without hf_oto installed.
        """
        return {
            "family": self.name,
            "layers": self.layers,
            "attention_module": self.attention_module,
            "q": self.q,
            "k": self.k,
            "v": self.v,
            "o": self.o,
            "ffn_in": [entry.to_json() if isinstance(entry, Fused) else entry for entry in self.ffn_in],
            "ffn_out": self.ffn_out,
            "head_dim": self.head_dim(config),
            "attention_attrs": dict(self.attention_attrs),
            "qkv": self.qkv,
            "qkv_layout": self.qkv_layout,
            "queries_per_group": getattr(config, self.num_heads_field) // self.num_kv_heads(config),
            "config_fields": {"num_heads": self.num_heads_field, "num_kv_heads": self.num_kv_heads_field},
            "per_head_rows": list(self.per_head_rows),
            "per_head_inputs": dict(self.per_head_inputs),
            "width_norms": {path: [kind, self.dense_width(config, kind)] for path, kind in self.width_norms.items()},
            "inferred": self.inferred,
        }
