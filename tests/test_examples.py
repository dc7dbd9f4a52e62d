"""End-to-end runs of the example scripts as real processes, on tiny generated data with tiny models.

Each run trains with OTOTrainer to a target group sparsity, saves the slim model, reloads it, and writes
``eval_results.json``. The slim model is the trained group-sparse model with its zero groups removed, so
its metrics must equal the dense model's exactly.
"""

import json
import os
import random
import subprocess
import sys
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import pytest
import transformers
from conftest import load_script

from hf_oto.synthetic_qa import build_wordpiece_tokenizer, generate_squad, squad_texts, write_squad_splits

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false", "OMP_NUM_THREADS": "1"}
TRAIN_ARGS = [
    "--max_steps", "8", "--per_device_train_batch_size", "8", "--learning_rate", "1e-3",
    "--oto_target_group_sparsity", "0.3", "--report_to", "none", "--save_strategy", "no", "--seed", "0",
    "--do_train", "--do_eval",
]  # fmt: skip


@pytest.fixture(scope="module")
def assets(tmp_path_factory):
    """Synthetic SQuAD files, a WordPiece tokenizer built from them, and a tiny BERT config."""
    root = tmp_path_factory.mktemp("examples")
    train, validation = write_squad_splits(root / "squad", train_paragraphs=24, validation_paragraphs=4)
    tokenizer = build_wordpiece_tokenizer(squad_texts(generate_squad(24, seed=0)), vocab_size=600)
    tokenizer.save_pretrained(root / "tokenizer")
    transformers.BertConfig(
        vocab_size=len(tokenizer), hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=48,
        max_position_embeddings=128,
    ).save_pretrained(root / "config")  # fmt: skip
    return {"root": root, "train": train, "validation": validation}


def _run(script: str, *args: str) -> subprocess.CompletedProcess:
    result = subprocess.run(
        [sys.executable, str(EXAMPLES / script), *args], capture_output=True, text=True, env=ENV, timeout=300
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return result


def _check_slim_folder(output_dir: Path, auto_class) -> dict:
    config = json.loads((output_dir / "config.json").read_text())
    assert config["model_type"] == "oto_bert"
    assert (output_dir / "model.safetensors").is_file() and (output_dir / "modeling_oto.py").is_file()
    model = auto_class.from_pretrained(output_dir, trust_remote_code=True)
    heads = sum(config["oto_num_attention_heads"]) + sum(config["oto_intermediate_sizes"])
    assert heads < 2 * 4 + 2 * 48  # groups were removed
    assert sum(p.numel() for p in model.parameters()) == config["oto_report"]["params"][1]
    return config


def test_run_squad_end_to_end(assets):
    out = assets["root"] / "squad-out"
    _run(
        "run_squad.py",
        "--config_name", str(assets["root"] / "config"), "--tokenizer_name", str(assets["root"] / "tokenizer"),
        "--train_file", assets["train"], "--validation_file", assets["validation"],
        "--max_seq_length", "64", "--doc_stride", "24", "--max_eval_samples", "12",
        "--output_dir", str(out), *TRAIN_ARGS,
    )  # fmt: skip
    results = json.loads((out / "eval_results.json").read_text())
    assert results["eval_samples"] == 12
    for key in ("exact_match", "f1"):
        assert 0.0 <= results[f"eval_{key}"] <= 100.0
        assert results[f"slim_{key}"] == results[f"eval_{key}"]  # slim == group-sparse model
    assert results["params_slim"] < results["params_dense"]
    assert results["flops_per_token_slim"] < results["flops_per_token_dense"]
    predictions = json.loads((out / "eval_predictions.json").read_text())
    assert len(predictions) == 12
    _check_slim_folder(out, transformers.AutoModelForQuestionAnswering)
    assert transformers.AutoTokenizer.from_pretrained(out)("Who?")["input_ids"][0] == 2  # tokenizer saved ([CLS])


def test_run_glue_end_to_end_on_sst2_style_tsv(assets):
    rng = random.Random(0)
    data = assets["root"] / "sst2"
    data.mkdir()
    for name, rows in (("train.tsv", 64), ("dev.tsv", 16)):
        lines = ["label\tcontent"]
        for _ in range(rows):
            label = rng.randint(0, 1)
            word = rng.choice(["superb", "lovely", "fine"] if label else ["awful", "dull", "poor"])
            lines.append(f'{label}\tthe "film" is {word} , it \'s {rng.choice(["long", "short"])}')  # raw quotes
        (data / name).write_text("\n".join(lines) + "\n")
    out = assets["root"] / "glue-out"
    _run(
        "run_glue.py",
        "--config_name", str(assets["root"] / "config"), "--tokenizer_name", str(assets["root"] / "tokenizer"),
        "--train_file", str(data / "train.tsv"), "--validation_file", str(data / "dev.tsv"),
        "--max_seq_length", "32", "--output_dir", str(out), *TRAIN_ARGS,
    )  # fmt: skip
    results = json.loads((out / "eval_results.json").read_text())
    assert results["eval_samples"] == 16
    for key in ("accuracy", "f1"):
        assert 0.0 <= results[f"eval_{key}"] <= 1.0
        assert results[f"slim_{key}"] == pytest.approx(results[f"eval_{key}"])
    assert results["params_slim"] < results["params_dense"]
    config = _check_slim_folder(out, transformers.AutoModelForSequenceClassification)
    assert config["id2label"] == {"0": "0", "1": "1"}


def _load_example(name: str):
    return load_script(EXAMPLES / f"{name}.py")


def test_run_glue_column_guessing_for_pairs_and_singles():
    run_glue = _load_example("run_glue")
    args = run_glue.DataArguments(train_file="x.csv")
    assert run_glue.text_columns(args, ["sentence1", "sentence2", "label"]) == ("sentence1", "sentence2")
    assert run_glue.text_columns(args, ["label", "content"]) == ("content", None)
    assert run_glue.text_columns(args, ["question", "sentence", "label", "idx"]) == ("question", "sentence")
    assert run_glue.text_columns(args, ["premise", "hypothesis", "label"]) == ("premise", "hypothesis")
    explicit = run_glue.DataArguments(train_file="x.csv", sentence1_column="a", sentence2_column="b")
    assert run_glue.text_columns(explicit, ["a", "b", "label"]) == ("a", "b")
    with pytest.raises(ValueError, match="not in the data"):
        run_glue.text_columns(explicit, ["a", "label"])
    with pytest.raises(ValueError, match="regression"):
        run_glue.DataArguments(task_name="stsb")


def test_run_clm_end_to_end_on_a_text_file(assets):
    squad = generate_squad(40, seed=5)
    contexts = [p["context"] for a in squad["data"] for p in a["paragraphs"]]
    (assets["root"] / "train.txt").write_text("\n".join(contexts[:32]))
    (assets["root"] / "val.txt").write_text("\n".join(contexts[32:]))
    transformers.LlamaConfig(
        vocab_size=600, hidden_size=32, intermediate_size=48, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, max_position_embeddings=64,
    ).save_pretrained(assets["root"] / "llama")  # fmt: skip
    out = assets["root"] / "clm-out"
    _run(
        "run_clm.py",
        "--config_name", str(assets["root"] / "llama"), "--tokenizer_name", str(assets["root"] / "tokenizer"),
        "--train_file", str(assets["root"] / "train.txt"), "--validation_file", str(assets["root"] / "val.txt"),
        "--block_size", "32", "--output_dir", str(out), *TRAIN_ARGS,
    )  # fmt: skip
    results = json.loads((out / "eval_results.json").read_text())
    assert results["perplexity_slim"] == pytest.approx(results["perplexity_group_sparse"], rel=1e-4)
    assert results["perplexity_group_sparse"] < results["perplexity_before"]  # it trained
    assert results["params_slim"] < results["params_dense"]
    config = json.loads((out / "config.json").read_text())
    assert config["model_type"] == "oto_llama"
    model = transformers.AutoModelForCausalLM.from_pretrained(out, trust_remote_code=True)
    assert sum(p.numel() for p in model.parameters()) == results["params_slim"]
