"""Shared fixtures: tiny models of every supported family, built from configs (no downloads)."""

import importlib.util
import os
import subprocess
import sys
import textwrap

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import pytest  # noqa: E402
import torch  # noqa: E402
import transformers  # noqa: E402

TINY = dict(
    vocab_size=97,
    hidden_size=32,
    num_hidden_layers=3,
    num_attention_heads=4,
    intermediate_size=24,
    max_position_embeddings=64,
)

SPECIAL_TOKENS = {"pad_token_id": 0, "bos_token_id": 1, "eos_token_id": 2}
GQA = {"num_key_value_heads": 2, **SPECIAL_TOKENS}

# model_type -> (config class, extra kwargs)
TINY_CONFIGS = {
    "bert": (transformers.BertConfig, {}),
    "roberta": (transformers.RobertaConfig, {"pad_token_id": 1}),
    "electra": (transformers.ElectraConfig, {"embedding_size": 16}),
    "xlm-roberta": (transformers.XLMRobertaConfig, {"pad_token_id": 1}),
    "distilbert": (transformers.DistilBertConfig, {}),
    "llama": (transformers.LlamaConfig, {"num_key_value_heads": 2}),
    "mistral": (transformers.MistralConfig, {"num_key_value_heads": 2}),
    "qwen2": (transformers.Qwen2Config, {"num_key_value_heads": 2}),
    "vit": (transformers.ViTConfig, {"image_size": 8, "patch_size": 4}),
    # families without a hand-written spec (inferred and verified), each with the feature that makes it differ
    "qwen3": (transformers.Qwen3Config, {**GQA, "head_dim": 8}),  # per-head-dim q_norm/k_norm
    "gemma2": (transformers.Gemma2Config, {**GQA, "head_dim": 8, "sliding_window": 4}),  # soft-capping, sliding
    "gemma3_text": (
        transformers.Gemma3TextConfig,
        {**GQA, "head_dim": 8, "sliding_window": 4, "layer_types": ["sliding_attention", "full_attention"] * 2},
    ),
    "granite": (  # multipliers
        transformers.GraniteConfig,
        {
            **GQA,
            "embedding_multiplier": 2.0,
            "residual_multiplier": 0.5,
            "attention_multiplier": 0.3,
            "logits_scaling": 2.0,
        },
    ),
    "smollm3": (transformers.SmolLM3Config, {**GQA, "no_rope_layers": [1, 0, 1, 1]}),  # a NoPE layer
    "starcoder2": (transformers.Starcoder2Config, GQA),  # plain MLP with biases
    "olmo2": (transformers.Olmo2Config, GQA),  # q_norm/k_norm over the full projection width
    "phi": (transformers.PhiConfig, {**SPECIAL_TOKENS, "partial_rotary_factor": 0.5}),  # parallel blocks
    "deberta-v2": (  # relative positions with separate position projections
        transformers.DebertaV2Config,
        {"relative_attention": True, "pos_att_type": ["p2c", "c2p"], "share_att_key": False, "position_buckets": 8},
    ),
    "mpnet": (transformers.MPNetConfig, {}),  # relative position bias shared by all layers
}
INFERRED_FAMILIES = ["qwen3", "gemma2", "gemma3_text", "granite", "smollm3", "starcoder2", "olmo2", "phi", "deberta-v2"]
# Families with fused projections (tests/test_fused_families.py); kept apart so test_slim's grid stays as it was.
FUSED_CONFIGS = {
    "gpt2": (transformers.GPT2Config, {"n_inner": 24}),
    "gpt_neox": (transformers.GPTNeoXConfig, {}),
    "phi3": (transformers.Phi3Config, {"num_key_value_heads": 2, "pad_token_id": 0}),
    "modernbert": (
        transformers.ModernBertConfig,
        dict(
            pad_token_id=0,
            bos_token_id=1,
            eos_token_id=2,
            cls_token_id=1,
            sep_token_id=2,
            global_attn_every_n_layers=2,
            local_attention=8,
        ),
    ),
}
DISTILBERT_NAMES = {
    "hidden_size": "dim",
    "num_hidden_layers": "n_layers",
    "num_attention_heads": "n_heads",
    "intermediate_size": "hidden_dim",
}


def tiny_config(model_type: str, attn_implementation: str = "eager", **overrides):
    config_class, extra = {**TINY_CONFIGS, **FUSED_CONFIGS}[model_type]
    values = {**TINY, **extra, **overrides}
    if model_type == "distilbert":
        values = {DISTILBERT_NAMES.get(k, k): v for k, v in values.items()}
    if model_type == "vit":
        values.pop("vocab_size"), values.pop("max_position_embeddings")
    if isinstance(values.get("layer_types"), list):
        values["layer_types"] = values["layer_types"][: values["num_hidden_layers"]]
    if isinstance(values.get("no_rope_layers"), list):
        values["no_rope_layers"] = values["no_rope_layers"][: values["num_hidden_layers"]]
    config = config_class(**values)
    config._attn_implementation = attn_implementation
    return config


def tiny_model(model_type: str, model_class=None, attn_implementation: str = "eager", seed: int = 0, **overrides):
    """A randomly initialized tiny model in eval mode; `model_class` defaults to the base model."""
    torch.manual_seed(seed)
    config = tiny_config(model_type, attn_implementation, **overrides)
    if model_class is None:
        model_class = transformers.AutoModel._model_mapping[type(config)]
    if attn_implementation == "sdpa" and not model_class._supports_sdpa:
        pytest.skip(f"{model_class.__name__} has no sdpa attention in transformers (eager only)")
    model = model_class(config).eval()
    with torch.no_grad():  # non-trivial biases so that bias-only paths are exercised
        for name, parameter in model.named_parameters():
            if name.endswith("bias"):
                parameter.normal_(0, 0.1)
    return model


REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run_fresh(code: str, *, hf_oto_importable: bool) -> subprocess.CompletedProcess:
    """Run `code` in a fresh interpreter: with this checkout's hf_oto (not whichever one is installed), or unable
    to import any hf_oto."""
    prelude = "" if hf_oto_importable else "import sys\nsys.modules['hf_oto'] = None\n"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1", "PYTHONPATH": REPO if hf_oto_importable else ""}
    return subprocess.run(
        [sys.executable, "-c", prelude + textwrap.dedent(code)],
        capture_output=True,
        text=True,
        env=env,
        cwd="/",
        timeout=300,
    )


def load_script(path: str | os.PathLike):
    """Import a script that is not in a package (an example, a bench or helper script) as a module of its stem's
    name; registered in sys.modules, where dataclasses look their module up."""
    name = os.path.splitext(os.path.basename(path))[0]
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def one_thread():
    """The CI machine is shared: one intra-op thread keeps small tests fast and deterministic."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def tiny_tokenizer(tmp_path):
    """A BERT WordPiece tokenizer over a small vocabulary, written to a temp folder (offline)."""
    words = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    words += "the a of in is was who where what when born lives paris rome alice bob city year works as baker".split()
    words += list("abcdefghijklmnopqrstuvwxyz0123456789.,?")
    vocab = tmp_path / "vocab.txt"
    vocab.write_text("\n".join(words) + "\n")
    tokenizer = transformers.BertTokenizerFast(vocab_file=str(vocab))
    return tokenizer
