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
