"""Spec inference: an `ArchitectureSpec` read off a model's own module tree and config.

For a family without a hand-written spec, the layer stack is the `nn.ModuleList` of ``num_hidden_layers``
blocks inside `model.base_model`. In its first block:

- the query/key/value projections are the projections (`nn.Linear` or GPT-2-style `Conv1D`) named like
  ``q_proj`` / ``query`` / ``q_lin`` / ``q``, whose output widths are ``heads·head_dim`` and
  ``kv_heads·head_dim`` (head counts from the config, read through its ``attribute_map``); or one fused
  projection (``qkv_proj``, ``Wqkv``, ``c_attn``, ``query_key_value``...) ``(heads + 2·kv_heads)·head_dim``
  wide, whose row order (blocked ``[Q | K | V]`` or interleaved per head) cannot be read off the shapes: both
  candidates are tried on a random copy and the one that verifies is kept (`candidate_specs`);
- the output projection is the one of the same attention block whose input width is ``heads·head_dim``;
- the FFN is the remaining projections: those mapping the hidden size to the FFN width (up, and gate when
  gated; a fused gate/up twice as wide), and the one mapping it back (down).

An inferred spec is a *guess*. `hf_oto.verification` proves it numerically on a random copy of the model before
any group of it is used; nothing here is trusted on its own. Inference only refuses what it can name:
encoder-decoder models, mixture-of-experts models, and layers whose projections it cannot match.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from torch import nn
from transformers.pytorch_utils import Conv1D

from ..errors import UnsupportedModelError
from .spec import ArchitectureSpec, Fused

PROJECTION_NAMES = {
    "q": ("q_proj", "query", "q_lin", "q", "query_proj", "wq"),
    "k": ("k_proj", "key", "k_lin", "k", "key_proj", "wk"),
    "v": ("v_proj", "value", "v_lin", "v", "value_proj", "wv"),
}
"""Leaf names of separate query/key/value projections across transformers' families."""
FUSED_QKV_NAMES = ("qkv_proj", "wqkv", "c_attn", "query_key_value", "qkv", "in_proj", "w_pack")
"""Leaf names of fused query/key/value projections."""
MOE_CONFIG_FIELDS = ("num_local_experts", "num_experts", "n_routed_experts", "moe_num_experts", "num_experts_per_tok")
MOE_MODULE_NAMES = ("experts", "block_sparse_moe")
HEAD_COUNT_FIELDS = ("head_dim", "attention_head_size", "d_kv", "kv_channels")
"""Config fields that may give the per-head width when it is not hidden_size / num_attention_heads."""


def _leaf(path: str) -> str:
    return path.rpartition(".")[2].lower()


def _parent(path: str) -> str:
    return path.rpartition(".")[0]


def _config_int(config: Any, name: str) -> int | None:
    value = getattr(config, name, None)
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else None


def refusal_reason(model: nn.Module) -> str | None:
    """Why a model is outside what hf_oto prunes (encoder-decoder, mixture of experts), or None."""
    config = model.config
    if getattr(config, "is_encoder_decoder", False):
        return (
            f"{config.model_type} is an encoder-decoder model; hf_oto prunes encoder-only and decoder-only "
            "transformers (cross-attention groups are not supported)"
        )
    moe = [name for name in MOE_CONFIG_FIELDS if (_config_int(config, name) or 0) > 1]
    moe += [name for name, _ in model.named_modules() if _leaf(name) in MOE_MODULE_NAMES][:1]
    if moe:
        return (
            f"{config.model_type} is a mixture-of-experts (MoE) model ({moe[0]}); pruning expert FFN neurons is not "
            "supported yet"
        )
    return None


def find_layers(base: nn.Module, num_layers: int) -> str | None:
    """Path (from `base`) of the ModuleList of `num_layers` transformer blocks: the largest such list."""
    best, best_size = None, 0
    for path, module in base.named_modules():
        if isinstance(module, nn.ModuleList) and len(module) == num_layers and path:
            size = sum(p.numel() for p in module.parameters())
            if size > best_size:
                best, best_size = path, size
    return best


def _projections(layer: nn.Module) -> dict[str, tuple[int, int]]:
    """Every projection of a layer, path -> (input width, output width): Linears and GPT-2's Conv1D."""
    found = {}
    for path, module in layer.named_modules():
        if isinstance(module, nn.Linear):
            found[path] = (module.in_features, module.out_features)
        elif isinstance(module, Conv1D):  # weight stored as (in, out)
            found[path] = (module.weight.shape[0], module.nf)
    return found


def _pick(candidates: list[str], names: tuple[str, ...], what: str, where: str) -> str:
    named = [path for path in candidates if _leaf(path) in names]
    chosen = named or candidates
    if len(chosen) != 1:
        raise UnsupportedModelError(
            f"could not infer the {what} of {where}: candidates {chosen or 'none'}; describe the family with a "
            "hand-written ArchitectureSpec in hf_oto/architectures/"
        )
    return chosen[0]


def _head_dim_field(config: Any, q_width: int, heads: int, hidden: int) -> str | None:
    """The config field giving the per-head width, or None when it is hidden / heads."""
    for name in HEAD_COUNT_FIELDS:
        if _config_int(config, name) == q_width // heads:
            return name
    if hidden // heads == q_width // heads:
        return None
    raise UnsupportedModelError(
        f"{config.model_type}: the query projection is {q_width} wide for {heads} heads, and no config field "
        f"({', '.join(HEAD_COUNT_FIELDS)}) gives its head width {q_width // heads}"
    )


def _attention_attrs(attention: nn.Module, heads: int, kv_heads: int, head_dim: int) -> dict[str, str]:
    """Attributes of the attention module caching a head count, mapped to the quantity they hold.

    Only integer attributes whose *name* says heads or groups are considered (never ``head_dim``), and the value
    must match: ``num_key_value_groups`` = heads / kv heads, ``all_head_size`` = heads · head_dim, and so on."""
    found: dict[str, str] = {}
    for name, value in vars(attention).items():
        lower = name.lower()
        if name.startswith("_") or not isinstance(value, int) or isinstance(value, bool):
            continue
        if "dim" in lower or ("head_size" in lower and "all" not in lower):
            continue
        if "group" in lower and value == heads // max(kv_heads, 1):
            found[name] = "num_kv_groups"
        elif ("key_value" in lower or "kv" in lower) and value == kv_heads:
            found[name] = "num_kv_heads"
        elif "all_head" in lower and value == heads * head_dim:
            found[name] = "all_head_size"
        elif "head" in lower and value == heads:
            found[name] = "num_heads"
    return found


def _width_norms(
    attention: nn.Module, projections: tuple[str, ...], prefix: str, widths: dict[str, int], head_dim: int
) -> tuple[dict[str, str], str | None]:
    """Norms inside the attention block over the full query or key width (path -> ``"q"``/``"k"``), and why heads
    are not zero-invariant when some other parameter there spans such a width (None when none does).

    A per-head-dim norm (Qwen3, Gemma 3) spans `head_dim` only and needs nothing. A 1-D weight over all heads'
    features (OLMo 2's ``q_norm``/``k_norm``) is a width norm, matched to q or k by its width, else by its name."""
    inside = {path[len(prefix) + 1 :] for path in projections if path.startswith(prefix + ".")}
    norms: dict[str, str] = {}
    for name, module in attention.named_modules():
        if not name or name in inside:
            continue
        for leaf, parameter in module.named_parameters(recurse=False):
            width = parameter.shape[-1] if parameter.dim() else 0
            if width == head_dim or width not in widths.values():
                continue
            kinds = [kind for kind, w in widths.items() if w == width]
            if len(kinds) > 1:
                kinds = [kind for kind in kinds if _leaf(name).startswith(kind) or (kind == "q" and "query" in name)]
            if parameter.dim() != 1 or len(kinds) != 1:
                return {}, (
                    f"heads are not pruned: {prefix}.{name}.{leaf} spans the full projection width ({width} = all "
                    "heads' features) in a way hf_oto cannot keep exact when heads are removed"
                )
            norms[f"{prefix}.{name}"] = kinds[0]
    return norms, None


def _attention(config: Any, sizes: dict[str, tuple[int, int]], heads: int, hidden: int, where: str) -> dict[str, Any]:
    """The attention projections of a layer: separate q/k/v, or one fused qkv (then no row layout yet)."""
    paths = list(sizes)
    separate = all(any(_leaf(p) in PROJECTION_NAMES[kind] for p in paths) for kind in ("q", "k", "v"))
    if separate:
        q, k, v = (_pick(paths, PROJECTION_NAMES[kind], f"{kind} projection", where) for kind in ("q", "k", "v"))
        q_width = sizes[q][1]
        if q_width % heads:
            raise UnsupportedModelError(
                f"{where}: query projection {q} is {q_width} wide, not a multiple of {heads} heads"
            )
        head_dim = q_width // heads
        kv_heads, kv_rest = divmod(sizes[k][1], head_dim)
        if kv_rest or not kv_heads or heads % kv_heads or sizes[v][1] != sizes[k][1]:
            raise UnsupportedModelError(
                f"{where}: key/value projections {k}, {v} do not hold whole heads of {head_dim}"
            )
        return dict(q=q, k=k, v=v, qkv=None, head_dim=head_dim, kv_heads=kv_heads)
    head_dim = next((_config_int(config, f) for f in HEAD_COUNT_FIELDS if _config_int(config, f)), hidden // heads)
    widths = {(heads + 2 * kv) * head_dim: kv for kv in (_config_int(config, "num_key_value_heads"), heads) if kv}
    fused = [p for p in paths if sizes[p][0] == hidden and sizes[p][1] in widths]
    qkv = _pick(fused, FUSED_QKV_NAMES, "fused query/key/value projection", where)
    return dict(q=None, k=None, v=None, qkv=qkv, head_dim=head_dim, kv_heads=widths[sizes[qkv][1]])


def candidate_specs(model: nn.Module) -> list[ArchitectureSpec]:
    """Unverified specs for `model`'s family, read off its first layer (see the module docstring): one, or for a
    fused query/key/value projection one per possible row layout, most common first.

    Raises `UnsupportedModelError` naming what could not be matched."""
    config = model.config
    reason = refusal_reason(model)
    if reason:
        raise UnsupportedModelError(f"hf_oto cannot prune this model: {reason}.")
    base = model.base_model
    num_layers = _config_int(config, "num_hidden_layers")
    heads = _config_int(config, "num_attention_heads")
    hidden = _config_int(config, "hidden_size")
    if None in (num_layers, heads, hidden):
        raise UnsupportedModelError(
            f"{config.model_type}: its config has no num_hidden_layers / num_attention_heads / hidden_size (nor an "
            "attribute_map to them); describe the family with a hand-written ArchitectureSpec"
        )
    layers_path = find_layers(base, num_layers)
    if layers_path is None:
        raise UnsupportedModelError(
            f"{config.model_type}: found no list of {num_layers} layers in {type(base).__name__}"
        )
    layer = base.get_submodule(layers_path)[0]
    where = f"{config.model_type} layer 0 ({type(layer).__name__})"
    sizes = _projections(layer)
    paths = list(sizes)
    found = _attention(config, sizes, heads, hidden, where)
    head_dim, kv_heads = found["head_dim"], found["kv_heads"]
    q_width = heads * head_dim
    inputs = tuple(p for p in (found["q"], found["k"], found["v"], found["qkv"]) if p)
    block = inputs[0].split(".")[0]
    o_candidates = [p for p in paths if p not in inputs and p.split(".")[0] == block and sizes[p][0] == q_width]
    o = _pick(o_candidates, ("o_proj", "out_proj", "out_lin", "o", "dense", "wo", "c_proj"), "output projection", where)
    rest = [path for path in paths if path.split(".")[0] != block]
    down_candidates = [p for p in rest if sizes[p][1] == hidden and sizes[p][0] != hidden]
    ffn_out = _pick(
        down_candidates,
        ("down_proj", "fc2", "dense", "lin2", "w2", "wo", "c_proj", "dense_4h_to_h", "fc_out"),
        "FFN down projection",
        where,
    )
    width = sizes[ffn_out][0]
    ffn_in = tuple(
        p if sizes[p][1] == width else Fused(p, 2)
        for p in rest
        if sizes[p][0] == hidden and sizes[p][1] in (width, 2 * width)
    )
    if not ffn_in:
        raise UnsupportedModelError(f"{where}: no FFN input projection maps {hidden} to {width} like {ffn_out}'s input")
    attention_module = _parent(inputs[0])
    attention = layer.get_submodule(attention_module)
    per_head_rows = tuple(
        path
        for path in paths
        if found["q"]
        and path.startswith(attention_module + ".")
        and path not in (*inputs, o)
        and sizes[path] == (hidden, q_width)
    )
    width_norms, refusal = _width_norms(
        attention, (*inputs, o, *per_head_rows), attention_module, {"q": q_width, "k": kv_heads * head_dim}, head_dim
    )
    grouped_query = kv_heads != heads and _config_int(config, "num_key_value_heads") == kv_heads
    kv_field = "num_key_value_heads" if grouped_query else None
    spec = ArchitectureSpec(
        name=config.model_type,
        model_types=(config.model_type,),
        layers=layers_path,
        attention_module=attention_module,
        q=found["q"],
        k=found["k"],
        v=found["v"],
        qkv=found["qkv"],
        o=o,
        ffn_in=ffn_in,
        ffn_out=ffn_out,
        num_kv_heads_field=kv_field,
        head_dim_field=_head_dim_field(config, q_width, heads, hidden),
        attention_attrs=_attention_attrs(attention, heads, kv_heads, head_dim),
        per_head_rows=per_head_rows,
        width_norms=width_norms,
        head_pruning_refusal=refusal,
        inferred=True,
    )
    if not found["qkv"] or kv_heads != heads:
        return [spec]
    return [spec, dataclasses.replace(spec, qkv_layout="interleaved")]
