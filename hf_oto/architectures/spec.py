"""The declarative description of one model family: where its attention heads and FFN neurons live.

A spec names module paths and config fields only. Everything else in hf_oto (grouping, slimming, the
saved config, the self-contained modeling file) is driven by it, so adding a family means adding a spec.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

# Quantities a spec may bind to a module attribute when a layer is reshaped (see `attention_attrs`).
LAYER_QUANTITIES = ("num_heads", "num_kv_heads", "num_kv_groups", "all_head_size")


@dataclass(frozen=True)
class ArchitectureSpec:
    """Where the zero-invariant structures of one model family live.

    Paths are dotted attribute paths. `layers` is relative to `model.base_model`; every other path is
    relative to one layer of that list.
    """

    name: str
    """Family name shown to users, e.g. ``"bert"``."""
    model_types: tuple[str, ...]
    """`config.model_type` values this spec covers."""
    layers: str
    """Path of the `nn.ModuleList` of transformer layers, from `model.base_model`."""
    attention_module: str
    """The module that computes attention heads; replaced by an empty stand-in when a layer keeps 0 heads."""
    q: str
    k: str
    v: str
    o: str
    """Output projection of the attention block (its input columns are grouped per head)."""
    ffn_in: tuple[str, ...]
    """Projections whose output rows are FFN neurons (up, and gate for gated MLPs)."""
    ffn_out: str
    """Projection whose input columns are FFN neurons (down)."""
    num_heads_field: str = "num_attention_heads"
    num_kv_heads_field: str | None = None
    """Config field for the number of key/value heads (GQA); None for plain multi-head attention."""
    intermediate_field: str = "intermediate_size"
    hidden_field: str = "hidden_size"
    num_layers_field: str = "num_hidden_layers"
    attention_attrs: dict[str, str] = field(default_factory=dict)
    """Attributes of `attention_module` that cache a head count, mapped to one of `LAYER_QUANTITIES`."""

    def head_dim(self, config: Any) -> int:
        """Per-head width: `config.head_dim` when the family has one, else hidden size / heads."""
        explicit = getattr(config, "head_dim", None)
        if isinstance(explicit, int) and explicit > 0:
            return explicit
        return getattr(config, self.hidden_field) // getattr(config, self.num_heads_field)

    def num_kv_heads(self, config: Any) -> int:
        if self.num_kv_heads_field is None:
            return getattr(config, self.num_heads_field)
        value = getattr(config, self.num_kv_heads_field, None)
        return value if value is not None else getattr(config, self.num_heads_field)

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
            "ffn_in": list(self.ffn_in),
            "ffn_out": self.ffn_out,
            "head_dim": self.head_dim(config),
            "attention_attrs": dict(self.attention_attrs),
        }
