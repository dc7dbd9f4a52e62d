"""Model classes of hf_oto slim models: stock transformers classes whose layers keep fewer heads and neurons.

Self-contained: this file imports only `torch`, `transformers` and its sibling `configuration_oto`, because
it is copied next to the weights of every saved slim model and loaded there with `trust_remote_code=True`.

``OTO<StockClass>`` (e.g. ``OTOBertForQuestionAnswering``) builds the stock model from the dense fields of
its config, then re-shapes each layer's projections to the per-layer counts in the config, before any
weight is loaded. Reading top to bottom:

1. `EmptyAttention`: stands in for an attention module whose layer keeps 0 heads.
2. `reshape_layers`: applies the per-layer counts to a freshly built stock model.
3. `OTOSlimMixin`: strict loading (never re-initializes a mismatched tensor), verified and atomic saving.
4. `oto_model_class`: creates and caches one class per stock class.
"""

import json
import os
import shutil
import tempfile
import warnings

import torch
import transformers
from torch import nn

from .configuration_oto import OTO_PREFIX, oto_config_class

CONFIG_FIELDS = (
    "oto_num_attention_heads",
    "oto_num_key_value_heads",
    "oto_intermediate_sizes",
    "oto_layout",
    "oto_base_model_type",
    "oto_settings",
    "oto_report",
)


class EmptyAttention(nn.Module):
    """Attention for a layer that keeps 0 heads: its output is what the zero heads produced, i.e. zeros.

    The original (now zero-width) projections stay as children so parameter names do not change. When the
    output projection lives inside the attention module (LLaMA, DistilBERT, ViT), zeros go through it, which
    yields its bias. A key/value cache still receives a 1-wide placeholder so its sequence length stays right.
    """

    def __init__(self, original: nn.Module, output_projection: str | None):
        super().__init__()
        for name, child in original.named_children():
            self.add_module(name, child)
        self.output_projection = output_projection
        self.layer_idx = getattr(original, "layer_idx", None)

    def forward(self, hidden_states: torch.Tensor, *args, **kwargs):
        output = hidden_states.new_zeros(*hidden_states.shape[:-1], 0)
        if self.output_projection is not None:
            output = getattr(self, self.output_projection)(output)
        cache = kwargs.get("cache", kwargs.get("past_key_values"))
        if cache is not None and self.layer_idx is not None:
            cache = getattr(cache, "self_attention_cache", cache)
            placeholder = hidden_states.new_zeros(hidden_states.shape[0], 1, hidden_states.shape[-2], 1)
            cache.update(placeholder, placeholder, self.layer_idx)
        return output, None


def _resize_linear(parent: nn.Module, path: str, in_features: int | None = None, out_features: int | None = None):
    """Replace the Linear at `path` by one of the given shape (same dtype, device and bias presence)."""
    owner_path, _, name = path.rpartition(".")
    owner = parent.get_submodule(owner_path) if owner_path else parent
    old = getattr(owner, name)
    shape = (
        old.out_features if out_features is None else out_features,
        old.in_features if in_features is None else in_features,
    )
    if (old.out_features, old.in_features) == shape:
        return
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Initializing zero-element tensors")
        new = nn.Linear(shape[1], shape[0], bias=old.bias is not None, device=old.weight.device, dtype=old.weight.dtype)
    setattr(owner, name, new)


def reshape_layers(model: nn.Module, config) -> None:
    """Re-shape every layer of a freshly built stock model to the per-layer counts of a slim config."""
    layout = config.oto_layout
    head_dim = layout["head_dim"]
    layers = model.base_model.get_submodule(layout["layers"])
    attention_path = layout["attention_module"]
    inner_prefix = attention_path + "."
    output_projection = layout["o"][len(inner_prefix) :] if layout["o"].startswith(inner_prefix) else None
    counts = zip(
        config.oto_num_attention_heads, config.oto_num_key_value_heads, config.oto_intermediate_sizes, strict=True
    )
    for index, (heads, kv_heads, width) in enumerate(counts):
        layer = layers[index]
        _resize_linear(layer, layout["q"], out_features=heads * head_dim)
        _resize_linear(layer, layout["k"], out_features=kv_heads * head_dim)
        _resize_linear(layer, layout["v"], out_features=kv_heads * head_dim)
        _resize_linear(layer, layout["o"], in_features=heads * head_dim)
        for path in layout["ffn_in"]:
            _resize_linear(layer, path, out_features=width)
        _resize_linear(layer, layout["ffn_out"], in_features=width)

        attention = layer.get_submodule(attention_path)
        quantities = {
            "num_heads": heads,
            "num_kv_heads": kv_heads,
            "num_kv_groups": heads // kv_heads if kv_heads else 0,
            "all_head_size": heads * head_dim,
        }
        for attribute, quantity in layout["attention_attrs"].items():
            setattr(attention, attribute, quantities[quantity])
        if heads == 0 and not isinstance(attention, EmptyAttention):
            owner_path, _, name = attention_path.rpartition(".")
            owner = layer.get_submodule(owner_path) if owner_path else layer
            setattr(owner, name, EmptyAttention(attention, output_projection))


class OTOLoadError(ValueError):
    """A saved slim model's weights do not match its config."""


class ZeroInvarianceError(RuntimeError):
    """A slim model's outputs differ from the dense group-sparse model's; nothing was written."""


def replace_directory(source: str, target: str) -> None:
    """Move the finished folder `source` to `target`.

    An absent or empty `target` is replaced by one atomic rename. An existing folder with other content
    (a Trainer output_dir holding checkpoints) gets each new file moved in with an atomic `os.replace`,
    after everything was written, and loses stale weight files that the new save does not contain.
    """
    target = os.path.abspath(target)
    if os.path.isdir(target) and not os.listdir(target):
        os.rmdir(target)
    if not os.path.exists(target):
        os.replace(source, target)
        return
    new_names = set(os.listdir(source))
    for name in os.listdir(target):
        stale_weights = name.endswith(".safetensors") or name in ("model.safetensors.index.json", "pytorch_model.bin")
        if stale_weights and name not in new_names:
            os.remove(os.path.join(target, name))
    for name in new_names:
        destination = os.path.join(target, name)
        if os.path.isdir(destination) and not os.path.islink(destination):
            shutil.rmtree(destination)
        os.replace(os.path.join(source, name), destination)
    shutil.rmtree(source, ignore_errors=True)


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
        """`PreTrainedModel.from_pretrained`, except that a tensor whose shape or presence disagrees with the
        per-layer config raises `OTOLoadError` naming it, instead of being silently re-initialized."""
        if kwargs.get("ignore_mismatched_sizes"):
            raise OTOLoadError(
                "ignore_mismatched_sizes=True would re-initialize pruned weights; hf_oto slim models refuse it. "
                "Load the folder as saved, or rebuild it with hf_oto.slim_model."
            )
        want_info = kwargs.pop("output_loading_info", False)
        # Load with mismatches allowed only to *collect* them: any mismatch raises below, and the partly
        # re-initialized model is discarded.
        model, info = super().from_pretrained(*args, output_loading_info=True, ignore_mismatched_sizes=True, **kwargs)
        layers_path = f"{model.config.oto_layout['layers']}."
        missing = sorted(key for key in info.get("missing_keys", ()) if layers_path in key)
        mismatched = sorted(info.get("mismatched_keys", ()))
        if mismatched or missing:
            details = [
                f"{key} (checkpoint {tuple(saved)}, config expects {tuple(expected)})"
                for key, saved, expected in mismatched
            ]
            details += [f"{key} (missing from the checkpoint)" for key in missing]
            raise OTOLoadError(
                "the saved weights do not match the slim config's per-layer heads / FFN widths: "
                + "; ".join(details)
                + ". The folder is corrupt, or its config.json belongs to other weights; re-save it with hf_oto."
            )
        return (model, info) if want_info else model

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
        the dense model (when this model came from `hf_oto.slim_model`); everything is written to a
        temporary folder that is renamed into place, so a failure never leaves a half-written folder."""
        if verify:
            self.oto_verify()
        if kwargs.get("safe_serialization") is False:
            raise ValueError("hf_oto slim models are saved as safetensors only; drop safe_serialization=False.")
        target = os.path.abspath(os.fspath(save_directory))
        parent = os.path.dirname(target)
        os.makedirs(parent, exist_ok=True)
        staging = tempfile.mkdtemp(prefix=f".{os.path.basename(target)}.tmp-", dir=parent)
        try:
            type(self).register_for_auto_class(auto_class_name(self._oto_base_class))
            type(self.config).register_for_auto_class()
            result = super().save_pretrained(staging, *args, **kwargs)
            _add_base_auto_model(staging, self)
            replace_directory(staging, target)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
        return result


def _add_base_auto_model(folder: str, model) -> None:
    """Also map `AutoModel` to the slim base model, so the encoder alone loads from the folder."""
    base = model.base_model
    if base is model:
        return
    path = os.path.join(folder, "config.json")
    with open(path) as handle:
        config = json.load(handle)
    config.setdefault("auto_map", {}).setdefault("AutoModel", f"modeling_oto.{OTO_PREFIX}{type(base).__name__}")
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
    return _MODEL_CLASSES[name]


def __getattr__(name: str) -> type:
    """Resolve ``OTO<StockModel>`` names, as `auto_map` entries ask for them."""
    if name.startswith(OTO_PREFIX):
        stock_class = getattr(transformers, name[len(OTO_PREFIX) :], None)
        if isinstance(stock_class, type) and issubclass(stock_class, transformers.PreTrainedModel):
            return oto_model_class(stock_class)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
