"""Model classes of hf_oto slim models: stock transformers classes whose layers keep fewer heads and neurons.

Self-contained: this file imports only `torch`, `transformers` and its sibling `configuration_oto`, because
it is copied next to the weights of every saved slim model and loaded there with `trust_remote_code=True`.

``OTO<StockClass>`` (e.g. ``OTOBertForQuestionAnswering``) builds the stock model from the dense fields of
its config, then re-shapes each layer's projections to the per-layer counts in the config, before any
weight is loaded. Reading top to bottom:

1. `EmptyAttention`: stands in for an attention module whose layer keeps 0 heads.
2. `reshape_layers`: applies the per-layer counts to a freshly built stock model.
3. `staged_save` / `commit_staged`: crash-safe saving into a new or an existing folder.
4. `OTOSlimMixin`: strict loading (never re-initializes or ignores a tensor), verified and crash-safe saving.
5. `oto_model_class`: creates and caches one class per stock class.
"""

import contextlib
import copy
import json
import os
import re
import shutil
import uuid
import warnings

import torch
import transformers
from torch import nn

from .configuration_oto import (
    OTO_PREFIX,
    LayerConfig,
    is_conv1d,
    layer_projections,
    oto_config_class,
    oto_fields_problem,
    part_width,
    projection_features,
)

CONFIG_FIELDS = (
    "oto_num_attention_heads",
    "oto_num_key_value_heads",
    "oto_intermediate_sizes",
    "oto_layout",
    "oto_base_model_type",
    "oto_settings",
    "oto_report",
    "oto_staged_folder",
    "oto_kept_heads",
)
STAGED_POINTER = "oto_staged_folder"
"""config.json field present only while a save is being committed: the staging folder holding the new model."""
PUSH_OPTIONS = ("repo_id", "commit_message", "commit_description", "private", "create_pr", "revision")
STAGING_PREFIX = ".oto-save-"
TEMP_PREFIX = ".oto-tmp-"


class EmptyAttention(nn.Module):
    """Attention for a layer that keeps 0 heads: its output is what the zero heads produced, i.e. zeros.

    The original (now zero-width) projections stay as children so parameter names do not change. When the
    output projection lives inside the attention module (LLaMA, DistilBERT, ViT), zeros go through it, which
    yields its bias. A key/value cache still receives a 1-wide placeholder so its sequence length stays right.

    Instances are of a subclass that also derives from the replaced attention class (`empty_attention`), so
    transformers' ``output_attentions`` hooks, which match that class, still record this layer: its attention
    weights are a zero-head tensor ``(batch, 0, query_len, key_len)`` and ``attentions[i]`` stays layer i's.
    """

    def __init__(self, original: nn.Module, output_projection: str | None):
        nn.Module.__init__(self)  # not the replaced class's __init__: the children are the original's
        for name, child in original.named_children():
            self.add_module(name, child)
        self.output_projection = output_projection
        self.layer_idx = getattr(original, "layer_idx", None)

    def forward(self, hidden_states: torch.Tensor, *args, **kwargs):
        output = hidden_states.new_zeros(*hidden_states.shape[:-1], 0)
        if self.output_projection is not None:
            output = getattr(self, self.output_projection)(output)
        cache = next((kwargs[key] for key in ("cache", "past_key_values", "layer_past") if key in kwargs), None)
        key_length = hidden_states.shape[-2]
        if cache is not None and self.layer_idx is not None:
            cache = getattr(cache, "self_attention_cache", cache)
            placeholder = hidden_states.new_zeros(hidden_states.shape[0], 1, hidden_states.shape[-2], 1)
            keys, _ = cache.update(placeholder, placeholder, self.layer_idx)
            key_length = keys.shape[-2]
        weights = hidden_states.new_zeros(hidden_states.shape[0], 0, hidden_states.shape[-2], key_length)
        return output, weights


_EMPTY_CLASSES: dict = {}


def empty_attention(original: nn.Module, output_projection: str | None) -> EmptyAttention:
    """An `EmptyAttention` standing in for `original`, also an instance of `original`'s class."""
    base = type(original)
    if base not in _EMPTY_CLASSES:
        _EMPTY_CLASSES[base] = type(f"Empty{base.__name__}", (EmptyAttention, base), {"__module__": __name__})
    return _EMPTY_CLASSES[base](original, output_projection)


class OTOLoadError(ValueError):
    """A saved slim model's weights do not match its config."""


class ZeroInvarianceError(RuntimeError):
    """A slim model's outputs differ from the dense group-sparse model's; nothing was written."""


def _resize_projection(parent: nn.Module, path: str, in_features: int | None = None, out_features: int | None = None):
    """Replace the Linear or Conv1D at `path` by one of the given shape (same dtype, device and bias presence)."""
    owner_path, _, name = path.rpartition(".")
    owner = parent.get_submodule(owner_path) if owner_path else parent
    old = getattr(owner, name)
    old_in, old_out = projection_features(old)
    shape = (old_out if out_features is None else out_features, old_in if in_features is None else in_features)
    if (old_out, old_in) == shape:
        return
    device, dtype = old.weight.device, old.weight.dtype
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Initializing zero-element tensors")
        if is_conv1d(old):  # Conv1D(nf=out, nx=in); it always has a bias
            base = getattr(type(old), "_oto_base", type(old))
            with torch.device(device):
                new = (_zero_input_conv1d(base) if shape[1] == 0 else base)(shape[0], shape[1]).to(dtype)
        else:
            new = nn.Linear(shape[1], shape[0], bias=old.bias is not None, device=device, dtype=dtype)
    setattr(owner, name, new)


_ZERO_INPUT_CLASSES: dict = {}


def _zero_input_conv1d(base: type) -> type:
    """`Conv1D` for 0 inputs (0 heads or neurons kept), whose output is its bias (Conv1D cannot view (-1, 0))."""
    if base not in _ZERO_INPUT_CLASSES:
        forward = lambda self, x: x.new_zeros(*x.shape[:-1], self.weight.shape[1]) + self.bias  # noqa: E731
        attributes = {"forward": forward, "_oto_base": base, "__module__": __name__}
        _ZERO_INPUT_CLASSES[base] = type(f"ZeroInput{base.__name__}", (base,), attributes)
    return _ZERO_INPUT_CLASSES[base]


def _narrow_width_norm(norm: nn.Module, width: int, dense_width: int) -> None:
    """Give an RMS norm over a projection's full width (OLMo 2's ``q_norm``) `width` features, still exact.

    Removed heads contributed zeros to the dense mean square Σx²/dense_width. The slim norm sees `width`
    features, so its input is scaled by c = √(width/dense_width), making its mean square Σx²/dense_width again,
    and its output divided by c. (RMS norms only: a mean-centering norm would not be exact; the verification
    that guards every inferred spec refuses such a family.)"""
    if width == dense_width or norm.weight.shape[-1] == width:  # dense, or already narrowed (a task model's
        return  # stock __init__ may build its base model through the Auto classes, i.e. already reshaped)
    for name, parameter in list(norm.named_parameters(recurse=False)):
        setattr(norm, name, nn.Parameter(parameter.new_empty(width), requires_grad=parameter.requires_grad))
    if hasattr(norm, "normalized_shape"):  # nn.LayerNorm checks its weight against it
        norm.normalized_shape = (width,)
    if width == 0:  # the layer keeps no head: the norm is never called
        return
    scale = (width / dense_width) ** 0.5
    norm.register_forward_pre_hook(lambda module, args: (args[0] * scale, *args[1:]))
    norm.register_forward_hook(lambda module, args, output: output / scale)


def select_heads_hook(kept: list, inputs: dict):
    """A forward pre-hook keeping, of each per-head input (name -> positional index), the entries of the heads this
    layer kept (dim 1): inputs such as MPNet's ``position_bias`` are computed once for every head of the dense
    model and shared by all layers."""
    kept = list(kept)  # a tensor is made per call, on the input's device (models are built on the meta device)

    def select(tensor):
        return tensor.index_select(1, torch.tensor(kept, dtype=torch.long, device=tensor.device))

    def hook(module, args, kwargs):
        args = list(args)
        for name, position in inputs.items():
            if kwargs.get(name) is not None:
                kwargs[name] = select(kwargs[name])
            elif len(args) > position and args[position] is not None:
                args[position] = select(args[position])
        return tuple(args), kwargs

    return hook


def reshape_layers(model: nn.Module, config) -> None:
    """Re-shape every layer of a freshly built stock model to the per-layer counts of a slim config."""
    problem = oto_fields_problem(config.to_dict())
    if problem is not None:
        raise OTOLoadError(f"the slim config is not valid: {problem}")
    layout = config.oto_layout
    head_dim = layout["head_dim"]
    layers = model.base_model.get_submodule(layout["layers"])
    attention_path = layout["attention_module"]
    inner_prefix = attention_path + "."
    output_projection = layout["o"][len(inner_prefix) :] if layout["o"].startswith(inner_prefix) else None
    fields = layout.get("config_fields", {"num_heads": "num_attention_heads", "num_kv_heads": None})
    counts = zip(
        config.oto_num_attention_heads, config.oto_num_key_value_heads, config.oto_intermediate_sizes, strict=True
    )
    for index, (heads, kv_heads, width) in enumerate(counts):
        layer = layers[index]
        per_group = heads // kv_heads if kv_heads else 1
        norms = layout.get("width_norms", {})  # RMS norms over a projection's width: narrowed, not re-built
        for projections, groups in zip(layer_projections(layout), (kv_heads, width), strict=True):
            for path, side, parts in projections:
                size = sum(groups * part_width(kind, per_group, head_dim) for kind in parts)
                if path in norms:
                    _narrow_width_norm(layer.get_submodule(path), size, norms[path][1])
                else:
                    _resize_projection(layer, path, **{f"{side}_features": size})

        attention = layer.get_submodule(attention_path)
        quantities = {
            "num_heads": heads,
            "num_kv_heads": kv_heads,
            "num_kv_groups": heads // kv_heads if kv_heads else 0,
            "all_head_size": heads * head_dim,
        }
        for attribute, quantity in layout["attention_attrs"].items():
            setattr(attention, attribute, quantities[quantity])
        if getattr(attention, "config", None) is not None:
            overrides = {fields[key]: quantities[key] for key in ("num_heads", "num_kv_heads") if fields.get(key)}
            attention.config = LayerConfig(attention.config, **overrides)
        if heads and layout.get("per_head_inputs") and not getattr(attention, "_oto_selects_heads", False):
            kept = config.oto_kept_heads[index]
            attention.register_forward_pre_hook(select_heads_hook(kept, layout["per_head_inputs"]), with_kwargs=True)
            attention._oto_selects_heads = True
        if heads == 0 and not isinstance(attention, EmptyAttention):
            owner_path, _, name = attention_path.rpartition(".")
            owner = layer.get_submodule(owner_path) if owner_path else layer
            setattr(owner, name, empty_attention(attention, output_projection))


def _is_weights_file(name: str) -> bool:
    """A file transformers reads weights from (single file, shard or shard index)."""
    return name.endswith((".safetensors", ".bin")) or name in (
        "model.safetensors.index.json",
        "pytorch_model.bin.index.json",
    )


def _current_umask() -> int:
    """The process umask, read without changing it where /proc allows (changing it races with other threads)."""
    with contextlib.suppress(OSError, ValueError), open("/proc/self/status") as handle:
        for line in handle:
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _apply_default_modes(folder: str) -> None:
    """Give every entry of `folder` the mode a plain `open()` / `mkdir()` gives under the umask (0644 / 0755 with
    umask 022), as a stock `save_pretrained` does: safetensors writes 0600 and a private staging folder is 0700."""
    mask = _current_umask()
    for root, dirs, files in os.walk(folder):
        for name in dirs:
            os.chmod(os.path.join(root, name), 0o777 & ~mask)
        for name in files:
            path = os.path.join(root, name)
            if not os.path.islink(path):
                os.chmod(path, 0o666 & ~mask)


def _staged_pointer(folder: str) -> str | None:
    """The staging folder that `folder`'s config.json points at (see `commit_staged`), if it exists."""
    try:
        with open(os.path.join(folder, "config.json")) as handle:
            pointer = json.load(handle).get(STAGED_POINTER)
    except (OSError, ValueError, AttributeError):
        return None
    if not isinstance(pointer, str) or os.sep in pointer or not pointer.startswith(STAGING_PREFIX):
        return None
    return pointer if os.path.isfile(os.path.join(folder, pointer, "config.json")) else None


def remove_stale_staging(target: str, keep: str | None = None) -> None:
    """Remove what an interrupted save left inside `target`: staging folders (full weight copies) and temporary
    files, except the staging folder that config.json still points at, and `keep`."""
    referenced = _staged_pointer(target)
    for name in os.listdir(target):
        if name in (referenced, keep) or not name.startswith((STAGING_PREFIX, TEMP_PREFIX)):
            continue
        path = os.path.join(target, name)
        if os.path.isdir(path) and not os.path.islink(path):
            shutil.rmtree(path, ignore_errors=True)
        else:
            with contextlib.suppress(OSError):
                os.remove(path)


def _install(staging: str, target: str, name: str) -> None:
    """Atomically make `target/name` the staged file, leaving the staged copy in place (a hard link, or a copy
    where the filesystem has none) so that the staging folder stays a complete model until the end."""
    source, destination = os.path.join(staging, name), os.path.join(target, name)
    if os.path.isdir(destination) and not os.path.islink(destination):
        shutil.rmtree(destination)
    if os.path.isdir(source):
        os.replace(source, destination)
        return
    temporary = os.path.join(target, f"{TEMP_PREFIX}{uuid.uuid4().hex[:8]}-{name}")
    try:
        os.link(source, temporary)
    except OSError:
        shutil.copy2(source, temporary)
    os.replace(temporary, destination)


def _write_config_pointing_at(staging: str, target: str) -> None:
    """The commit: replace `target/config.json`, in one `os.replace`, by the new config plus a pointer to
    `staging`, which holds the whole new model."""
    with open(os.path.join(staging, "config.json")) as handle:
        config = json.load(handle)
    config[STAGED_POINTER] = os.path.basename(staging)
    temporary = os.path.join(target, f"{TEMP_PREFIX}{uuid.uuid4().hex[:8]}-config.json")
    with open(temporary, "w") as handle:
        json.dump(config, handle, indent=2, sort_keys=True)
        handle.write("\n")
    os.replace(temporary, os.path.join(target, "config.json"))


def commit_staged(staging: str, target: str, progress: dict | None = None) -> None:
    """Make the complete model folder `staging` (a fresh folder inside `target`) the model of `target`.

    `target` may be an existing folder with other content (a Trainer output_dir with checkpoints, an older
    model) or a mount point: it is never renamed or removed, and every rename stays inside it. The files
    that decide which model loads are config.json and the weights, two names that no single rename can
    switch together. So the switch goes through a pointer, and every state in between loads as exactly
    the old or the new model:

    1. the code files are installed (they load old and new configs alike) -- old model;
    2. **the switch**: one `os.replace` of config.json by the new config plus ``oto_staged_folder`` naming
       `staging`. From here `OTOSlimMixin.from_pretrained` loads config and weights from `staging`, which
       is complete and not modified until step 6 -- new model;
    3. stale weight files that the new save lacks are removed, the new ones installed (each file by an
       atomic replace of a hard link to the staged file) -- still read from `staging`: new model;
    4. the other files (generation config, tokenizer, card, plot) are installed -- new model;
    5. config.json without the pointer replaces the one with it: the top-level files alone are the new
       model -- new model;
    6. `staging` and anything stale are removed.

    A failure before step 2 leaves the old model (`staged_save` removes `staging`); at or after step 2 the
    new one (``progress["committed"]`` tells which). After a hard kill, the staging folder stays inside `target` (never a weight copy outside it)
    and the next save into `target` removes it, unless config.json still points at it.
    """
    names = sorted(os.listdir(staging))
    weights = [n for n in names if _is_weights_file(n)]
    # shard files before their index, so that a reader of the top level alone never meets a partial index
    weights.sort(key=lambda n: n.endswith(".index.json"))
    code = [n for n in names if n.endswith(".py")]
    others = [n for n in names if n not in weights and n not in code and n != "config.json"]
    _apply_default_modes(staging)
    for name in code:
        _install(staging, target, name)
    if "config.json" in names:
        _write_config_pointing_at(staging, target)
        if progress is not None:
            progress["committed"] = True
        new = set(weights)
        for name in os.listdir(target):
            if _is_weights_file(name) and name not in new and os.path.isfile(os.path.join(target, name)):
                os.remove(os.path.join(target, name))
    for name in weights + others:
        _install(staging, target, name)
    if "config.json" in names:
        _install(staging, target, "config.json")
    shutil.rmtree(staging, ignore_errors=True)
    remove_stale_staging(target)


def _remove_legacy_staging(target: str) -> None:
    """Remove the full-weight copies that hf_oto versions before staging-inside-the-target left in the parent
    folder when killed mid-save: ``.NAME.tmp-XXXXXXXX`` (save_pretrained) and ``.NAME.oto-XXXXXXXX`` (OTOTrainer)."""
    parent, name = os.path.split(target)
    legacy = re.compile(rf"\.{re.escape(name)}\.(tmp|oto)-[A-Za-z0-9_]{{8}}")
    with contextlib.suppress(OSError):
        for entry in os.listdir(parent):
            path = os.path.join(parent, entry)
            if legacy.fullmatch(entry) and os.path.isdir(path) and not os.path.islink(path):
                shutil.rmtree(path, ignore_errors=True)


@contextlib.contextmanager
def staged_save(target: str | os.PathLike):
    """Yield a fresh staging folder inside `target` to write a model folder into; on success, commit it to
    `target` with `commit_staged`. On failure before the commit, `target` is left as it was (a `target` that
    this call created is removed again)."""
    target = os.path.abspath(os.fspath(target))
    created = not os.path.exists(target)
    os.makedirs(target, exist_ok=True)
    remove_stale_staging(target)
    _remove_legacy_staging(target)
    staging = os.path.join(target, f"{STAGING_PREFIX}{uuid.uuid4().hex[:12]}")
    os.mkdir(staging)
    progress = {"committed": False}
    try:
        yield staging
        commit_staged(staging, target, progress)
    except BaseException:
        if not progress["committed"]:  # the old model stays
            shutil.rmtree(staging, ignore_errors=True)
            if created:
                shutil.rmtree(target, ignore_errors=True)
        raise


def auto_class_name(stock_class: type) -> str:
    """The Auto class that maps to `stock_class` (e.g. AutoModelForQuestionAnswering)."""
    from transformers.models.auto import modeling_auto

    preferred = [
        ("AutoModelForQuestionAnswering", "MODEL_FOR_QUESTION_ANSWERING_MAPPING_NAMES"),
        ("AutoModelForSequenceClassification", "MODEL_FOR_SEQUENCE_CLASSIFICATION_MAPPING_NAMES"),
        ("AutoModelForTokenClassification", "MODEL_FOR_TOKEN_CLASSIFICATION_MAPPING_NAMES"),
        ("AutoModelForMultipleChoice", "MODEL_FOR_MULTIPLE_CHOICE_MAPPING_NAMES"),
        ("AutoModelForMaskedLM", "MODEL_FOR_MASKED_LM_MAPPING_NAMES"),
        ("AutoModelForCausalLM", "MODEL_FOR_CAUSAL_LM_MAPPING_NAMES"),
        ("AutoModelForImageClassification", "MODEL_FOR_IMAGE_CLASSIFICATION_MAPPING_NAMES"),
        ("AutoModelForPreTraining", "MODEL_FOR_PRETRAINING_MAPPING_NAMES"),
        ("AutoModel", "MODEL_MAPPING_NAMES"),
    ]
    for auto_name, mapping_name in preferred:
        names = getattr(modeling_auto, mapping_name, {}).values()
        flat = {n for entry in names for n in (entry if isinstance(entry, (list, tuple)) else (entry,))}
        if stock_class.__name__ in flat:
            return auto_name
    return "AutoModel"


class OTOSlimMixin:
    """Behaviour shared by every slim class: re-shaping in `__init__`, strict loading, verified atomic saving."""

    _oto_base_class: type = None

    def __init__(self, config, *args, **kwargs):
        super().__init__(config, *args, **kwargs)
        reshape_layers(self, config)

    @classmethod
    def from_pretrained(cls, *args, **kwargs):
        """`PreTrainedModel.from_pretrained`, strict: a tensor missing from the checkpoint, left over in it, or of
        another shape than the per-layer config says raises `OTOLoadError` naming it; nothing is re-initialized.

        Loading another class than the folder was saved from (e.g. `AutoModel` on a question-answering folder)
        may leave out the saved class's task head and add modules that class never had (a new head, BERT's
        pooler), as in transformers; every tensor the saved class has must still be there. A folder whose
        save is being committed (config.json names a staging folder, see `commit_staged`) loads from there."""
        if kwargs.get("ignore_mismatched_sizes"):
            raise OTOLoadError(
                "ignore_mismatched_sizes=True would re-initialize pruned weights; hf_oto slim models refuse it. "
                "Load the folder as saved, or rebuild it with hf_oto.slim_model."
            )
        want_info = kwargs.pop("output_loading_info", False)
        args = list(args)
        location = args[0] if args else kwargs.get("pretrained_model_name_or_path")
        folder = os.fspath(location) if isinstance(location, (str, os.PathLike)) else None
        staged = _staged_pointer(folder) if folder is not None and os.path.isdir(folder) else None
        if staged is not None:
            if args:
                args[0] = os.path.join(folder, staged)
            else:
                kwargs["pretrained_model_name_or_path"] = os.path.join(folder, staged)
        # Load with mismatches allowed only to *collect* them: any mismatch raises below, and the partly
        # re-initialized model is discarded.
        try:
            model, info = super().from_pretrained(
                *args, output_loading_info=True, ignore_mismatched_sizes=True, **kwargs
            )
        except Exception as error:
            if type(error).__name__ != "SafetensorError" or folder is None:
                raise
            files = (
                [n for n in sorted(os.listdir(folder)) if n.endswith(".safetensors")] if os.path.isdir(folder) else []
            )
            names = ", ".join(os.path.join(folder, n) for n in files) or folder
            raise OTOLoadError(
                f"cannot read the weights in {names} ({error}): the file is truncated or corrupt. Save the model "
                "again, or copy / download the folder again."
            ) from None
        model.config.__dict__.pop(STAGED_POINTER, None)
        if staged is not None:
            model.name_or_path = folder
        problems = _loading_problems(model, info)
        if problems:
            raise OTOLoadError(
                "the saved weights do not match the slim model: "
                + "; ".join(problems)
                + ". The folder is corrupt, or its config.json belongs to other weights; re-save it with hf_oto."
            )
        return (model, info) if want_info else model

    @classmethod
    def _can_set_attn_implementation(cls) -> bool:
        """As the stock class: transformers decides by reading the class's module source, here this file."""
        return cls._oto_base_class._can_set_attn_implementation()

    @property
    def oto_reference(self) -> dict | None:
        """What `oto_verify` checks this model against: ``{"inputs", "outputs", "tolerance"}`` from the dense
        group-sparse model it was slimmed from (`hf_oto.slim_model`); None for a model loaded from a folder."""
        return getattr(self, "_oto_reference", None)

    def oto_verify(self) -> None:
        """Re-run the reference inputs recorded by `hf_oto.slim_model` and compare with the dense outputs."""
        reference = getattr(self, "_oto_reference", None)
        if reference is None:
            return
        was_training = self.training
        self.eval()
        try:
            with torch.no_grad():
                outputs = self(**reference["inputs"])
        finally:
            self.train(was_training)
        worst = max_output_difference(reference["outputs"], outputs)
        if not worst <= reference["tolerance"]:
            raise ZeroInvarianceError(
                f"the slim model's outputs differ from the dense group-sparse model's by {worst:.3g} "
                f"(relative tolerance {reference['tolerance']:.1g}); refusing to save. Its weights were changed after "
                "slimming, or a group counted as zero was not exactly zero. Re-run hf_oto.slim_model on the "
                "dense model, or pass verify=False to save anyway."
            )

    def save_pretrained(self, save_directory, *args, verify: bool = True, **kwargs):
        """Write the Hub-format slim folder: safetensors weights, the slim config with `auto_map`, and the
        self-contained `configuration_oto.py` / `modeling_oto.py`. The outputs are first checked against
        the dense model (when this model came from `hf_oto.slim_model`). Everything is written to a staging
        folder inside `save_directory` and committed by `staged_save`: a failure at any point leaves the
        folder loading as the old model or the new one, and the folder may be a mount point, the working
        directory, or a symlink. Files get the modes of a stock save under the umask."""
        if verify:
            self.oto_verify()
        if kwargs.get("safe_serialization") is False:
            raise ValueError("hf_oto slim models are saved as safetensors only; drop safe_serialization=False.")
        # Pushed after the commit, exactly the files of this save: transformers would push the staging folder,
        # under its name and before the AutoModel entry is added.
        push = kwargs.pop("push_to_hub", False)
        push_options = {key: kwargs.pop(key) for key in PUSH_OPTIONS if key in kwargs}
        with staged_save(save_directory) as staging:
            type(self).register_for_auto_class(auto_class_name(self._oto_base_class))
            type(self.config).register_for_auto_class()
            result = super().save_pretrained(staging, *args, **kwargs)
            _finish_config(staging, self)
            written = sorted(name for name in os.listdir(staging) if not name.startswith("."))
        if push:
            folder = os.path.abspath(os.fspath(save_directory))
            _push_folder(
                folder,
                written,
                push_options.pop("repo_id", None) or os.path.basename(folder),
                kwargs.get("token"),
                **push_options,
            )
        return result


def _push_folder(folder: str, files: list[str], repo_id: str, token, private=None, **upload_options) -> None:
    """Upload `files` of the committed `folder` to the Hub repo `repo_id` (created when absent)."""
    from transformers.utils.hub import hf_api

    api = hf_api()
    repo_id = api.create_repo(repo_id, private=private, token=token, exist_ok=True).repo_id
    upload_options.setdefault("commit_message", "Upload hf_oto slim model")
    api.upload_folder(repo_id=repo_id, folder_path=folder, allow_patterns=files, token=token, **upload_options)


def _loading_problems(model, info: dict) -> list[str]:
    """Every tensor of a load that disagrees with the model: shape mismatches, missing and unexpected keys."""
    problems = [
        f"{key} (checkpoint {tuple(saved)}, config expects {tuple(expected)})"
        for key, saved, expected in sorted(info.get("mismatched_keys", ()))
    ]
    missing, unexpected = set(info.get("missing_keys", ())), set(info.get("unexpected_keys", ()))
    saved_keys = _saved_class_keys(model)
    if saved_keys is not None:  # another class than the saved one: only the saved class's tensors must match
        prefix = f"{model.base_model_prefix}."
        missing = {key for key in missing if key.removeprefix(prefix) in saved_keys}
        unexpected = {key for key in unexpected if key.removeprefix(prefix) not in saved_keys}
    problems += [f"{key} (missing from the checkpoint)" for key in sorted(missing)]
    problems += [f"{key} (in the checkpoint, not in the model)" for key in sorted(unexpected)]
    return problems


def _saved_class_keys(model) -> set[str] | None:
    """The state-dict keys (without the base-model prefix) of the class the folder was saved from, when `model`
    is of another class; None when it is the same class or the saved class is unknown."""
    saved = (getattr(model.config, "architectures", None) or [None])[0]
    if not isinstance(saved, str) or saved == type(model).__name__ or not saved.startswith(OTO_PREFIX):
        return None
    stock = getattr(transformers, saved[len(OTO_PREFIX) :], None)
    if not (isinstance(stock, type) and issubclass(stock, transformers.PreTrainedModel)):
        return None
    with torch.device("meta"), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        reference = oto_model_class(stock)(copy.deepcopy(model.config))
    prefix = f"{reference.base_model_prefix}."
    return {key.removeprefix(prefix) for key in reference.state_dict()}


def _finish_config(folder: str, model) -> None:
    """Also map `AutoModel` to the slim base model, so the encoder alone loads from the folder; drop a staging
    pointer the config may have been loaded with."""
    path = os.path.join(folder, "config.json")
    with open(path) as handle:
        config = json.load(handle)
    config.pop(STAGED_POINTER, None)
    if model.base_model is not model:
        base = type(model.base_model)
        stock = getattr(base, "_oto_base_class", None) or base
        config.setdefault("auto_map", {}).setdefault("AutoModel", f"modeling_oto.{OTO_PREFIX}{stock.__name__}")
    with open(path, "w") as handle:
        json.dump(config, handle, indent=2, sort_keys=True)
        handle.write("\n")


def max_output_difference(expected, actual) -> float:
    """Largest difference between the floating tensors of two model outputs, each tensor's difference measured
    relative to its scale ``max(1, max|expected|)`` (inf on a shape change).

    Relative, because fp32 rounding grows with magnitude: hidden states of trained models reach 10 (MiniLM) to
    ~26,000 (SmolLM2's massive activations), where a slimmer matmul's summation order alone moves them by more
    than 1e-5, while removing a non-zero group moves some output by a sizable fraction of its scale. Scaling
    per tensor, not per row, keeps the check free of false alarms on such outliers; the logits and the first
    layers' hidden states, of moderate scale, still expose a wrongly removed group.
    """
    expected_tensors = [t for t in _tensors(expected) if t.is_floating_point()]
    actual_tensors = [t for t in _tensors(actual) if t.is_floating_point()]
    if len(expected_tensors) != len(actual_tensors):
        return float("inf")
    worst = 0.0
    for a, b in zip(expected_tensors, actual_tensors, strict=True):
        if a.shape != b.shape:
            return float("inf")
        if a.numel():
            a, b = a.float(), b.float().to(a.device)
            scale = max(1.0, a.abs().max().item())
            worst = max(worst, (a - b).abs().max().item() / scale)
    return worst


def _tensors(output) -> list:
    if torch.is_tensor(output):
        return [output]
    if hasattr(output, "to_tuple"):
        output = output.to_tuple()
    if isinstance(output, dict):
        output = list(output.values())
    if isinstance(output, (list, tuple)):
        return [t for item in output for t in _tensors(item)]
    return []


_MODEL_CLASSES: dict = {}


def oto_model_class(stock_class: type) -> type:
    """The slim class for a stock model class, e.g. BertForQuestionAnswering -> OTOBertForQuestionAnswering."""
    stock_class = getattr(stock_class, "_oto_base_class", None) or stock_class
    name = OTO_PREFIX + stock_class.__name__
    if name not in _MODEL_CLASSES:
        _MODEL_CLASSES[name] = type(
            name,
            (OTOSlimMixin, stock_class),
            {
                "config_class": oto_config_class(stock_class.config_class),
                "_oto_base_class": stock_class,
                "__module__": __name__,
                "__doc__": f"{stock_class.__name__} with per-layer head counts and FFN widths (hf_oto slim model).",
            },
        )
        _share_checkpoint_conversion(stock_class.__name__, name)
    return _MODEL_CLASSES[name]


def _share_checkpoint_conversion(stock_name: str, slim_name: str) -> None:
    """Give the slim class the stock class's checkpoint key renaming (e.g. ViTModel's ``encoder.layer.`` ->
    ``layers.``): transformers skips it for classes defined outside transformers, so `AutoModel` on a slim ViT
    folder (saved with legacy key names) would find none of its layer tensors."""
    try:
        from transformers import conversion_mapping
    except ImportError:  # transformers versions without weight conversion need none
        return
    mapping = conversion_mapping.get_checkpoint_conversion_mapping(stock_name)
    if mapping is not None and conversion_mapping.get_checkpoint_conversion_mapping(slim_name) is None:
        conversion_mapping.register_checkpoint_conversion_mapping(slim_name, mapping)


def __getattr__(name: str) -> type:
    """Resolve ``OTO<StockModel>`` names, as `auto_map` entries ask for them."""
    if name.startswith(OTO_PREFIX):
        stock_class = getattr(transformers, name[len(OTO_PREFIX) :], None)
        if isinstance(stock_class, type) and issubclass(stock_class, transformers.PreTrainedModel):
            return oto_model_class(stock_class)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
