"""Configuration classes of hf_oto slim models.

Self-contained: this file imports only `transformers`, because it is copied next to the weights of every
saved slim model and loaded there with `trust_remote_code=True`, where hf_oto may not be installed.

A slim config is the stock config of its family (every dense architecture field unchanged) plus:

- `oto_num_attention_heads`: query heads kept, per layer
- `oto_num_key_value_heads`: key/value heads kept, per layer
- `oto_intermediate_sizes`: FFN neurons kept, per layer
- `oto_layout`: where heads and neurons live in a layer (written from `hf_oto.architectures`)
- `oto_base_model_type`: the stock `model_type` (e.g. ``"bert"``)
- `oto_settings`, `oto_report`: the OTO hyperparameters and the dense/slim accounting, for model cards

Its own `model_type` is ``"oto_" + base model_type``. Classes are created on first use, one per stock
config class: ``OTOBertConfig``, ``OTOLlamaConfig``, ... (also reachable as attributes of this module).
"""

import sys

import transformers

OTO_PREFIX = "OTO"
_CONFIG_CLASSES: dict = {}


def oto_config_class(base_class: type) -> type:
    """The slim config class for a stock config class (created once, then cached)."""
    base_class = getattr(base_class, "_oto_base_class", base_class)
    name = OTO_PREFIX + base_class.__name__
    if name not in _CONFIG_CLASSES:
        _CONFIG_CLASSES[name] = type(
            name,
            (base_class,),
            {
                "model_type": "oto_" + base_class.model_type,
                "_oto_base_class": base_class,
                "__module__": __name__,
                "__doc__": f"{base_class.__name__} with per-layer head counts and FFN widths (hf_oto slim model).",
            },
        )
    return _CONFIG_CLASSES[name]


def __getattr__(name: str) -> type:
    """Resolve ``OTO<StockConfig>`` names, as `auto_map` entries ask for them."""
    if name.startswith(OTO_PREFIX) and name.endswith("Config"):
        base_class = getattr(transformers, name[len(OTO_PREFIX) :], None)
        if isinstance(base_class, type):
            return oto_config_class(base_class)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


PER_LAYER_FIELDS = ("oto_num_attention_heads", "oto_num_key_value_heads", "oto_intermediate_sizes")
LAYOUT_KEYS = ("head_dim", "layers", "attention_module", "q", "k", "v", "o", "ffn_in", "ffn_out", "attention_attrs")
RESAVE = "re-save the model with hf_oto (hf_oto.slim_model(...).save_pretrained or OTOTrainer.save_model)"


def oto_fields_problem(values: dict) -> str | None:
    """What is wrong with the oto fields of a slim config (a dict, e.g. a parsed config.json), or None.

    The one check behind loading (`reshape_layers`), `hf_oto.load_slim` and `hf-oto inspect`: one sentence
    naming the field and what to do."""
    layout = values.get("oto_layout")
    if not isinstance(layout, dict):
        return f"oto_layout is missing or not an object (where heads and FFN neurons live in a layer); {RESAVE}"
    absent = [key for key in LAYOUT_KEYS if key not in layout]
    if absent:
        return f"oto_layout lacks {', '.join(absent)}; {RESAVE}"
    head_dim = layout["head_dim"]
    if not isinstance(head_dim, int) or isinstance(head_dim, bool) or head_dim <= 0:
        return f"oto_layout.head_dim must be a positive whole number, got {head_dim!r}; {RESAVE}"
    layers = values.get("num_hidden_layers", values.get("n_layers"))
    for field in PER_LAYER_FIELDS:
        counts = values.get(field)
        if not isinstance(counts, list) or not all(isinstance(c, int) and not isinstance(c, bool) for c in counts):
            return f"{field} must be a list of whole numbers, one per layer, got {counts!r}; {RESAVE}"
        if isinstance(layers, int) and len(counts) != layers:
            return (
                f"{field} has {len(counts)} entries but the model has {layers} layers (num_hidden_layers); "
                f"give one count per layer, or {RESAVE}"
            )
        negative = [(index, count) for index, count in enumerate(counts) if count < 0]
        if negative:
            index, count = negative[0]
            return f"{field}[{index}] is {count}, a negative width; counts kept per layer are 0 or more: {RESAVE}"
    for index, (heads, kv_heads) in enumerate(
        zip(values["oto_num_attention_heads"], values["oto_num_key_value_heads"])
    ):
        if (kv_heads == 0) != (heads == 0) or (kv_heads and heads % kv_heads):
            return (
                f"layer {index} keeps {heads} query heads for {kv_heads} key/value heads, which is not a whole "
                f"number of query heads per key/value head; {RESAVE}"
            )
    if layout.get("per_head_inputs"):
        kept = values.get("oto_kept_heads")
        heads = values["oto_num_attention_heads"]
        if not isinstance(kept, list) or [len(k) if isinstance(k, list) else None for k in kept] != heads:
            return f"oto_kept_heads must list each layer's kept head indices ({heads} of them per layer); {RESAVE}"
    return None


def layer_projections(layout: dict) -> tuple[list, list]:
    """(attention, ffn) projections of one layer, each ``(path, side, parts)``: `side` "out" when the groups are
    output rows (and bias entries), "in" when they are input columns; `parts` the kinds of the consecutive
    regions along that side, each region holding one equal chunk per group (`part_width`).

    Layouts saved before fused projections existed have no ``qkv`` key and only plain ``ffn_in`` paths."""
    qkv = layout.get("qkv")
    if qkv is None:
        attention = [(layout["q"], "out", ("q",)), (layout["k"], "out", ("kv",)), (layout["v"], "out", ("kv",))]
    elif layout.get("qkv_layout", "blocked") == "interleaved":
        attention = [(qkv, "out", ("qkv",))]
    else:
        attention = [(qkv, "out", ("q", "kv", "kv"))]
    attention += [(path, "out", ("q",)) for path in layout.get("per_head_rows", ())]
    for path, (kind, _) in layout.get("width_norms", {}).items():  # norms over the q or k width (OLMo 2)
        attention.append((path, "out", ("q",) if kind == "q" else ("kv",)))
    attention.append((layout["o"], "in", ("q",)))
    ffn = []
    for entry in layout["ffn_in"]:
        path, parts = (entry, 1) if isinstance(entry, str) else (entry["path"], entry["parts"])
        ffn.append((path, "out", ("ffn",) * parts))
    ffn.append((layout["ffn_out"], "in", ("ffn",)))
    return attention, ffn


def part_width(kind: str, per_group: int, head_dim: int) -> int:
    """Rows (or columns) one group owns in a region of `kind`: its query heads ("q"), one key or value head
    ("kv"), its interleaved query, key and value ("qkv"), or one FFN neuron ("ffn")."""
    return {"q": per_group * head_dim, "kv": head_dim, "qkv": (per_group + 2) * head_dim, "ffn": 1}[kind]


class LayerConfig:
    """One attention module's view of the model config: its own head counts, every other attribute read from (and
    written to) the shared config, live, so e.g. `set_attn_implementation` on the model still reaches the layer.

    Assigned to the `config` of every attention module that has one, for modules that read head counts from their
    config in `forward` (Phi-3: ``self.config.num_attention_heads``)."""

    def __init__(self, shared, **overrides):
        self.__dict__["_oto_shared"] = getattr(shared, "_oto_shared", shared)
        self.__dict__.update(overrides)

    def __getattr__(self, name: str):
        if name.startswith("__") or name == "_oto_shared":
            raise AttributeError(name)
        return getattr(self.__dict__["_oto_shared"], name)

    def __setattr__(self, name: str, value) -> None:
        if name in self.__dict__:
            self.__dict__[name] = value
        else:
            setattr(self._oto_shared, name, value)


def is_conv1d(module) -> bool:
    """Whether `module` is transformers' `Conv1D` (GPT-2): a Linear whose weight is stored as (in, out)."""
    utils = sys.modules.get("transformers.pytorch_utils")  # not loaded: no model has a Conv1D
    return utils is not None and isinstance(module, utils.Conv1D)


def projection_features(module) -> tuple[int, int]:
    """(in, out) features of an `nn.Linear` or a `Conv1D`."""
    rows, columns = module.weight.shape
    return (rows, columns) if is_conv1d(module) else (columns, rows)


def grouped_dim(module, side: str) -> int:
    """The weight dimension holding a projection's outputs (`side` "out") or inputs ("in")."""
    return int((side == "out") == is_conv1d(module))


def layer_counts(layer, layout: dict) -> tuple[int, int, int]:
    """(query heads, key/value heads, FFN neurons) of one layer, read from its projections' shapes."""
    head_dim = layout["head_dim"]
    heads = projection_features(layer.get_submodule(layout["o"]))[0] // head_dim
    if layout.get("qkv") is None:
        kv_heads = projection_features(layer.get_submodule(layout["k"]))[1] // head_dim
    else:
        kv_heads = heads // layout.get("queries_per_group", 1)
    return heads, kv_heads, projection_features(layer.get_submodule(layout["ffn_out"]))[0]
