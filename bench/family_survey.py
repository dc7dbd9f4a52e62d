"""How far spec inference carries: try every causal-LM and masked-LM model type of the installed transformers.

For each `model_type` with a causal-LM (else a base-model) class, build a tiny random model from its config
class (hidden 32, 3 layers, 4 heads of 8, 2 key/value heads, FFN 48, vocabulary 128), then ask hf_oto for its
groups: a hand-written spec, or an inferred one that `hf_oto.verification` proves on a random copy. Each
type ends in one of:

- ``verified``: heads and FFN neurons both proven zero-invariant (or hand-written);
- ``ffn only`` / ``heads only``: the other structure was refused (the reason is printed);
- ``refused``: hf_oto names why (MoE, encoder-decoder, no match, not zero-invariant);
- ``not built``: the tiny config could not be built or run with these sizes (vision/audio/multimodal models,
  configs with other size fields): nothing is claimed either way.

Usage: ``python bench/family_survey.py [--types llama gpt2 ...] [--json out.json]`` (offline; a few minutes).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import signal
import warnings

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402
import transformers  # noqa: E402
from transformers.models.auto import configuration_auto, modeling_auto  # noqa: E402

import hf_oto  # noqa: E402
from hf_oto.groups import STRUCTURES  # noqa: E402

TINY = dict(
    hidden_size=32,
    num_hidden_layers=3,
    num_attention_heads=4,
    num_key_value_heads=2,
    head_dim=8,
    intermediate_size=48,
    vocab_size=128,
    max_position_embeddings=64,
    pad_token_id=0,
    bos_token_id=1,
    eos_token_id=2,
)
SECONDS_PER_TYPE = 180
MEMORY_LIMIT_BYTES = 8 << 30
"""Address space of the survey process: one model type once built a 21 GB model from the tiny sizes."""


def _tiny_model(model_type: str):
    config_class = configuration_auto.CONFIG_MAPPING[model_type]
    try:
        config = config_class(**TINY)
    except (TypeError, AttributeError, ValueError):  # e.g. head_dim is a read-only property: derive it instead
        config = config_class(**{k: v for k, v in TINY.items() if k not in ("head_dim", "num_key_value_heads")})
    for mapping in (modeling_auto.MODEL_FOR_CAUSAL_LM_MAPPING_NAMES, modeling_auto.MODEL_MAPPING_NAMES):
        name = mapping.get(model_type)
        if isinstance(name, (list, tuple)):
            name = name[0]
        if name and hasattr(transformers, name):
            model = getattr(transformers, name)(config).eval()
            with torch.no_grad():  # it must run at these sizes, or nothing is claimed
                model(input_ids=torch.randint(3, 128, (1, 8)))
            return model
    raise LookupError("no text model class")


def survey_one(model_type: str) -> tuple[str, str]:
    """(verdict, detail) for one model type."""
    try:
        model = _tiny_model(model_type)
    except Exception as error:  # noqa: BLE001 - any failure to build means "not built", with its reason
        return "not built", " ".join(str(error).split())[:160] or type(error).__name__
    usable, reasons = [], []
    for structure in STRUCTURES:
        try:
            hf_oto.build_groups(model, prune=[structure])
            usable.append(structure)
        except hf_oto.UnsupportedModelError as error:
            reasons.append(" ".join(str(error).split())[:240])
        except Exception as error:  # noqa: BLE001 - an unexpected crash is a finding, reported as refused
            reasons.append(f"{type(error).__name__}: {' '.join(str(error).split())[:200]}")
    spec = hf_oto.get_spec(model) if usable else None
    origin = f"{spec.origin}, {type(model).__name__}" if spec else type(model).__name__
    if len(usable) == 2:
        return "verified", origin
    if usable == ["ffn"]:
        return "ffn only", f"{origin}: {reasons[0]}"
    if usable == ["attention"]:
        return "heads only", f"{origin}: {reasons[0]}"
    return "refused", reasons[0]


def _timeout(signum, frame):
    raise TimeoutError(f"took more than {SECONDS_PER_TYPE} s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--types", nargs="*", default=None, help="model types (default: every causal-LM / masked-LM type)"
    )
    parser.add_argument("--json", default=None, help="write {model_type: [verdict, detail]} here")
    args = parser.parse_args()
    # a type whose tiny config still builds a huge model must fail here, not take the machine's memory
    resource.setrlimit(resource.RLIMIT_AS, (MEMORY_LIMIT_BYTES, MEMORY_LIMIT_BYTES))
    warnings.filterwarnings("ignore")
    transformers.logging.set_verbosity_error()
    torch.set_num_threads(1)
    text_types = {*modeling_auto.MODEL_FOR_CAUSAL_LM_MAPPING_NAMES, *modeling_auto.MODEL_FOR_MASKED_LM_MAPPING_NAMES}
    types = args.types or sorted(t for t in text_types if t in configuration_auto.CONFIG_MAPPING_NAMES)
    results: dict[str, tuple[str, str]] = {}
    signal.signal(signal.SIGALRM, _timeout)
    for model_type in types:
        try:
            signal.alarm(SECONDS_PER_TYPE)
            results[model_type] = survey_one(model_type)
            signal.alarm(0)
        except (TimeoutError, MemoryError) as error:
            signal.alarm(0)
            results[model_type] = ("not built", f"{type(error).__name__}: {error}")
        print(f"{model_type:28} {results[model_type][0]:10} {results[model_type][1]}", flush=True)
    counts: dict[str, list[str]] = {}
    for model_type, (verdict, _) in results.items():
        counts.setdefault(verdict, []).append(model_type)
    print(f"\ntransformers {transformers.__version__}, {len(results)} model types")
    for verdict, names in counts.items():
        print(f"{verdict}: {len(names)}: {', '.join(names)}")
    if args.json:
        with open(args.json, "w") as handle:
            json.dump(results, handle, indent=1)


if __name__ == "__main__":
    main()
