"""``hf-oto check MODEL``: can hf_oto prune this model, and which groups would it find?

It reads the config (a local folder or a Hub id), builds the model on the meta device (no weights, no memory),
takes its hand-written spec or infers one, proves the inferred spec on a random copy (`hf_oto.verification`),
and prints the zero-invariant groups per layer, or the exact reason for refusing.
"""

from __future__ import annotations

import argparse
from typing import Any

EXIT_REFUSED = 1


def _model_class(config: Any, task: str | None) -> type:
    """The class to check: `task` (an Auto class or model class name), else the config's architecture, else the
    base model class."""
    import transformers

    if task:
        found = getattr(transformers, task, None)
        if found is None:
            raise ValueError(f"--task {task}: not a transformers class; pass e.g. AutoModelForCausalLM")
        return found._model_mapping[type(config)] if hasattr(found, "_model_mapping") else found
    for name in getattr(config, "architectures", None) or ():
        if isinstance(getattr(transformers, name, None), type):
            return getattr(transformers, name)
    return transformers.AutoModel._model_mapping[type(config)]


def meta_model(model: str, task: str | None = None) -> Any:
    """The model of a folder or Hub id built from its config alone on the meta device (no weights, no memory):
    enough to find and verify its groups. `task`: as for `_model_class`."""
    import torch
    import transformers

    config = transformers.AutoConfig.from_pretrained(model)
    model_class = _model_class(config, task)
    with torch.device("meta"):
        return model_class(config)


def check_model(model: str, task: str | None = None) -> tuple[bool, str]:
    """(whether every structure can be pruned, the report) for a model folder or Hub id."""
    from .accounting import model_shape
    from .architectures import get_spec
    from .errors import UnsupportedModelError
    from .groups import FFN, STRUCTURES

    meta = meta_model(model, task)
    config, model_class = meta.config, type(meta)
    header = f"{model}: {model_class.__name__} (model_type {config.model_type})"
    try:
        spec = get_spec(meta)
    except UnsupportedModelError as error:
        return False, f"{header}\nrefused: {error}"
    lines = [header, f"spec: {spec.origin} ({spec.name}); layers at {spec.layers}, attention {spec.attention_module}"]
    if spec.qkv is not None:
        lines.append(f"  {spec.qkv} is a fused q/k/v projection ({spec.qkv_layout}): each group owns its chunk of it")
    fused = [entry.path for entry in spec.ffn_in if not isinstance(entry, str)]
    lines += [f"  {path} fuses FFN inputs: each neuron owns one row of every part" for path in fused]
    for path, kind in spec.width_norms.items():
        lines.append(
            f"  {path} spans the full {kind} width: its weights join the head groups, the slim norm is rescaled"
        )
    for path in spec.per_head_rows:
        lines.append(f"  {path} rows are per head: they join the head groups")
    for name in spec.per_head_inputs:
        lines.append(f"  the {name} input is per head: each slim layer keeps its heads' entries")
    verified = {}
    if spec.inferred:
        from .verification import verify_spec

        for structure in STRUCTURES:
            try:
                verify_spec(meta, spec, [structure])
                verified[structure] = "verified on a random copy"
            except UnsupportedModelError as error:
                verified[structure] = f"refused: {error}"
    else:
        verified = dict.fromkeys(STRUCTURES, "hand-written spec, covered by hf_oto's tests")
    for structure in STRUCTURES:
        lines.append(f"{structure}: {verified[structure]}")
    shape = model_shape(meta, spec=spec)
    per_group = [h // k if k else 0 for h, k in zip(shape.heads, shape.kv_heads, strict=True)]
    unit = "heads" if set(per_group) <= {1} else f"kv groups of {max(per_group)} query heads"
    lines.append(f"  layer | attention {unit} | ffn neurons")
    for index, (kv, ffn) in enumerate(zip(shape.kv_heads, shape.ffn, strict=True)):
        lines.append(f"  {index:>5} | {kv:>{len(unit) + 10}} | {ffn}")
    total = sum(shape.kv_heads) + sum(shape.ffn)
    lines.append(f"{total} zero-invariant groups ({sum(shape.kv_heads)} attention, {sum(shape.ffn)} ffn)")
    ok = all(not text.startswith("refused") for text in verified.values())
    if not ok:
        usable = [s for s in STRUCTURES if not verified[s].startswith("refused")]
        lines.append(
            f"only {' and '.join(usable)} groups can be pruned: oto_prune={'ffn' if usable == [FFN] else 'heads'!r}"
            if usable
            else "no group can be pruned"
        )
    return ok, "\n".join(lines)


def check_command(args: argparse.Namespace) -> int:
    ok, report = check_model(args.model, args.task)
    print(report)
    return 0 if ok else EXIT_REFUSED


def add_check_parser(commands: Any) -> None:
    check = commands.add_parser("check", help="find and verify the zero-invariant groups of a model (no weights)")
    check.add_argument("model", help="a local model folder or a Hub id (only its config is read)")
    check.add_argument(
        "--task", default=None, help="the class to check, e.g. AutoModelForCausalLM (default: the config's)"
    )
    check.set_defaults(handler=check_command)


__all__ = ["add_check_parser", "check_model"]
