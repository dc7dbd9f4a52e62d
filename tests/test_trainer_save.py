"""OTOTrainer.save_model (issue 4): the slim Hub folder, tokenizer, model card and plot; equal metrics of the dense
and reloaded slim model; saving refuses non-zero-invariant slimming and never leaves a half-written folder;
bad input fails at construction with a message that says what to change."""

import logging
import math
import os
import re

import pytest
import torch
import transformers
import yaml
from safetensors.torch import load_file
from test_trainer import NUM_GROUPS, accuracy, make_args, make_dataset, make_model

import hf_oto
from hf_oto import OTOTrainer, UnsupportedModelError, ZeroInvarianceError
from hf_oto.groups import GroupSet

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
SLIM_FILES = {
    "config.json",
    "model.safetensors",
    "configuration_oto.py",
    "modeling_oto.py",
    "README.md",
    "oto_layers.png",
    "training_args.json",
}


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """One 16-step run to 40% group sparsity with an evaluation every 8 steps, shared by the save tests.

    It is trained without a tokenizer; tests that need one set `processing_class` (only saving reads it)."""
    args = make_args(
        tmp_path_factory.mktemp("trained") / "out",
        max_steps=16,
        eval_strategy="steps",
        eval_steps=8,
        logging_steps=8,
        oto_target_group_sparsity=0.4,
    )
    trainer = OTOTrainer(
        model=make_model(),
        args=args,
        train_dataset=make_dataset(),
        eval_dataset=make_dataset(32, seed=1),
        compute_metrics=accuracy,
    )
    trainer.train()
    assert int(trainer.hspg.zero_mask().sum()) == math.floor(0.4 * NUM_GROUPS)
    return trainer


def front_matter(card: str) -> dict:
    assert card.startswith("---\n")
    return yaml.safe_load(card.split("---\n", 2)[1])


def test_save_model_writes_slim_hub_folder(trained, tiny_tokenizer, tmp_path, monkeypatch):
    """The folder holds the slim weights and config, the code files, the card, the plot, the tokenizer: nothing
    dense, nothing left in staging. It reloads to the dense model's outputs."""
    monkeypatch.setattr(trained, "processing_class", tiny_tokenizer)
    run = tmp_path / "run"  # tiny_tokenizer keeps its vocab.txt in tmp_path itself
    out = run / "slim"
    trained.save_model(str(out))
    tiny_tokenizer.save_pretrained(run / "tokenizer_only")
    tokenizer_files = set(os.listdir(run / "tokenizer_only"))
    assert "tokenizer.json" in tokenizer_files
    assert set(os.listdir(out)) == SLIM_FILES | tokenizer_files
    assert sorted(os.listdir(run)) == ["slim", "tokenizer_only"], "staging folder left behind"

    config = (out / "config.json").read_text()
    assert '"model_type": "oto_bert"' in config and "modeling_oto.OTOBertForSequenceClassification" in config
    slim_config = transformers.AutoConfig.from_pretrained(out)
    report = trained.hspg.sparsity_report()
    zero_heads = [row.get("attention", {}).get("zero_query_heads", 0) for row in report["per_layer"]]
    zero_ffn = [row.get("ffn", {}).get("zero_neurons", 0) for row in report["per_layer"]]
    assert slim_config.oto_num_attention_heads == [4 - z for z in zero_heads]
    assert slim_config.oto_intermediate_sizes == [24 - z for z in zero_ffn]
    weights = load_file(out / "model.safetensors")
    assert sum(t.numel() for t in weights.values()) == trained.slim_report.slim.params
    assert trained.slim_report.slim.params < trained.slim_report.dense.params
    for layer, width in enumerate(slim_config.oto_intermediate_sizes):
        assert weights[f"bert.encoder.layer.{layer}.intermediate.dense.weight"].shape == (width, 32)

    png = (out / "oto_layers.png").read_bytes()
    assert png.startswith(PNG_SIGNATURE) and png[12:16] == b"IHDR"
    import matplotlib.image

    image = matplotlib.image.imread(out / "oto_layers.png")
    assert image.ndim == 3 and image.shape[0] > 100 and image.shape[1] > 100

    slim = transformers.AutoModelForSequenceClassification.from_pretrained(out)
    assert type(slim).__name__ == "OTOBertForSequenceClassification"
    inputs = {"input_ids": torch.tensor(make_dataset(8, seed=5)["input_ids"])}
    dense = trained.model.eval()
    with torch.no_grad():
        assert (slim(**inputs).logits - dense(**inputs).logits).abs().max() <= 1e-5
    tokenizer = transformers.AutoTokenizer.from_pretrained(out)
    text = "alice was born in paris"
    assert tokenizer(text)["input_ids"] == tiny_tokenizer(text)["input_ids"]


def test_model_card(trained, tmp_path, monkeypatch):
    """README.md: YAML metadata, OTO hyperparameters, params/FLOPs dense → slim, per-layer table, plot, eval
    metrics and loading instructions with and without hf_oto; create_model_card() re-renders it (never the
    Trainer's generic card) with the metadata it is given."""
    monkeypatch.setattr(trained.args, "output_dir", str(tmp_path / "card"))
    monkeypatch.setattr(trained.model.config, "_name_or_path", "hf-oto-tests/tiny-bert")
    trained.save_model()
    trained.create_model_card(
        dataset_tags="glue", dataset="GLUE SST-2", tags="text-classification", language="en", license="apache-2.0"
    )
    folder = tmp_path / "card"
    card = (folder / "README.md").read_text()
    metadata = front_matter(card)
    report, config = trained.slim_report, transformers.AutoConfig.from_pretrained(folder)

    assert metadata["library_name"] == "transformers"
    assert metadata["base_model"] == "hf-oto-tests/tiny-bert"
    assert {"hf-oto", "pruning", "structured-pruning", "text-classification"} <= set(metadata["tags"])
    assert metadata["datasets"] == ["glue"]  # the Hub id (dataset_tags), not the pretty name
    assert metadata["language"] == "en" and metadata["license"] == "apache-2.0"
    evaluation = [log for log in trained.state.log_history if "eval_accuracy" in log][-1]
    assert {"accuracy", "loss"} <= set(metadata["metrics"])
    logged = {m["name"]: m["value"] for m in metadata["model-index"][0]["results"][0]["metrics"]}
    assert logged["eval_accuracy"] == evaluation["eval_accuracy"] and logged["eval_loss"] == evaluation["eval_loss"]

    for key, value in trained.args.oto_settings().items():
        assert f"| `{key}` | `{value}` |" in card
    d, s = report.dense, report.slim
    assert f"| parameters | {d.params:,} | {s.params:,} | {s.params / d.params:.1%} |" in card
    assert f"| FLOPs per token (seq len 128) | {d.flops_per_token:,} | {s.flops_per_token:,} |" in card
    assert s.params < d.params and s.flops_per_token < d.flops_per_token
    for layer in range(3):
        heads = config.oto_num_attention_heads[layer]
        row = f"| {layer} | {heads}/4 | {heads}/4 | {config.oto_intermediate_sizes[layer]}/24 |"
        assert row in card
    assert "](oto_layers.png)" in card and (folder / "oto_layers.png").read_bytes().startswith(PNG_SIGNATURE)
    assert f"| eval_accuracy | {evaluation['eval_accuracy']:.4g} |" in card
    assert "Base model: `hf-oto-tests/tiny-bert`" in card
    assert "import hf_oto\nfrom transformers import AutoModelForSequenceClassification" in card
    assert 'AutoModelForSequenceClassification.from_pretrained("card")' in card
    assert 'AutoModelForSequenceClassification.from_pretrained("card", trust_remote_code=True)' in card
    assert "More information needed" not in card and "fine-tuned version of" not in card  # Trainer's card


def test_card_title_is_the_saved_folder_name(trained, tmp_path, monkeypatch):
    """Saved to another folder than output_dir (as `hf-oto demo` does), the card is titled with the folder it
    is in, never with the Trainer's working folder."""
    monkeypatch.setattr(trained.args, "output_dir", str(tmp_path / "trainer"))
    trained.save_model(str(tmp_path / "my-slim-model"))
    card = (tmp_path / "my-slim-model" / "README.md").read_text()
    assert "\n# my-slim-model\n" in card and "# trainer" not in card
    assert 'from_pretrained("my-slim-model")' in card


def test_card_without_evaluation_or_base_model(tmp_path):
    """Before any training or evaluation: no metrics in the metadata, no base_model for a model built from a
    config, and the card says no evaluation ran. Saving works before train() too."""
    trainer = OTOTrainer(model=make_model(), args=make_args(tmp_path / "out"), train_dataset=make_dataset())
    trainer.save_model()
    card = (tmp_path / "out" / "README.md").read_text()
    metadata = front_matter(card)
    assert "metrics" not in metadata and "model-index" not in metadata and "base_model" not in metadata
    assert "No evaluation was run during training." in card
    assert trainer.slim_report.slim.params == trainer.slim_report.dense.params  # nothing zero yet


def test_evaluate_dense_equals_reloaded_slim(trained, tmp_path):
    """trainer.evaluate() on the dense group-sparse model and a stock Trainer on the slim model reloaded from disk
    give the same metrics."""
    dense_metrics = trained.evaluate()
    trained.save_model(str(tmp_path / "slim"))
    slim = transformers.AutoModelForSequenceClassification.from_pretrained(tmp_path / "slim")
    assert sum(p.numel() for p in slim.parameters()) < sum(p.numel() for p in trained.model.parameters())
    evaluator = transformers.Trainer(
        model=slim,
        args=make_args(tmp_path / "eval", cls=transformers.TrainingArguments),
        eval_dataset=make_dataset(32, seed=1),
        compute_metrics=accuracy,
    )
    slim_metrics = evaluator.evaluate()
    assert slim_metrics["eval_accuracy"] == dense_metrics["eval_accuracy"]
    assert slim_metrics["eval_loss"] == pytest.approx(dense_metrics["eval_loss"], abs=1e-6)


def test_dense_save_when_oto_save_slim_is_false(tmp_path):
    args = make_args(tmp_path / "out", oto_save_slim=False)
    OTOTrainer(model=make_model(), args=args, train_dataset=make_dataset()).save_model()
    config = (tmp_path / "out" / "config.json").read_text()
    assert '"model_type": "bert"' in config and not (tmp_path / "out" / "modeling_oto.py").exists()


# ---------------------------------------------------------------------------------------------- failing saves


def _first_nonzero_group(groups: GroupSet) -> int:
    norms = groups.norms()
    return int(torch.argmax(torch.where(groups.prunable_mask(), norms, torch.zeros_like(norms))))


@pytest.mark.parametrize("fault", ["nonzero_group_counted_as_zero", "weights_changed_after_slimming"])
def test_zero_invariance_failure_refuses_to_save(trained, tmp_path, monkeypatch, fault):
    """If the slim model's outputs differ from the dense model's, save_model raises ZeroInvarianceError and writes
    nothing: the check inside slim_model, and the one save_pretrained repeats just before writing."""
    if fault == "nonzero_group_counted_as_zero":
        real_zero_mask = GroupSet.zero_norm_mask

        def zero_mask(self):
            mask = real_zero_mask(self)
            mask[_first_nonzero_group(self)] = True  # a group with weights, claimed to be zero
            return mask

        monkeypatch.setattr(GroupSet, "zero_norm_mask", zero_mask)
        match = "slimming changed the outputs"
    else:
        real_slim_model = hf_oto.trainer.slim_model

        def slim_model(*args, **kwargs):
            slim, report = real_slim_model(*args, **kwargs)
            with torch.no_grad():  # e.g. a hook or a callback that touches the model between check and write
                slim.classifier.bias += 0.01
            return slim, report

        monkeypatch.setattr(hf_oto.trainer, "slim_model", slim_model)
        match = "refusing to save"
    with pytest.raises(ZeroInvarianceError, match=match):
        trained.save_model(str(tmp_path / "slim"))
    assert os.listdir(tmp_path) == [], "a (partial) output folder was written"


def _snapshot(folder) -> dict[str, bytes]:
    return {
        os.path.relpath(os.path.join(root, name), folder): open(os.path.join(root, name), "rb").read()
        for root, _, files in os.walk(folder)
        for name in files
    }


def test_interrupted_save_leaves_no_partial_folder(trained, tmp_path, monkeypatch):
    """A crash while the weights are written (simulated in transformers' safetensors writer) leaves no new folder,
    no staging folder, and an existing output folder byte-for-byte as it was."""
    existing = tmp_path / "existing"
    trained.save_model(str(existing))
    (existing / "checkpoint-3").mkdir()
    (existing / "checkpoint-3" / "notes.txt").write_text("keep me")
    before = _snapshot(existing)
    assert "model.safetensors" in before and "README.md" in before

    def crash(*args, **kwargs):
        raise OSError("simulated crash: disk full")

    monkeypatch.setattr(transformers.modeling_utils, "safe_save_file", crash)
    with torch.no_grad():  # a different model than the one already saved
        trained.model.classifier.bias += 1.0
    try:
        with pytest.raises(OSError, match="simulated crash"):
            trained.save_model(str(existing))
        with pytest.raises(OSError, match="simulated crash"):
            trained.save_model(str(tmp_path / "fresh"))
    finally:
        with torch.no_grad():
            trained.model.classifier.bias -= 1.0
    assert _snapshot(existing) == before
    assert sorted(os.listdir(tmp_path)) == ["existing"]


def test_missing_tokenizer_saves_model_and_warns(trained, tmp_path, monkeypatch, caplog):
    monkeypatch.setattr(trained, "processing_class", None)
    with caplog.at_level(logging.WARNING, logger="hf_oto.trainer"):
        trained.save_model(str(tmp_path / "slim"))
    assert set(os.listdir(tmp_path / "slim")) == SLIM_FILES
    warnings = [r for r in caplog.records if r.name == "hf_oto.trainer" and r.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert "without" in warnings[0].getMessage() and "processing_class=" in warnings[0].getMessage()


# ---------------------------------------------------------------------------------------------- bad input


def test_unsupported_model_is_refused_with_the_reason(tmp_path):
    config = transformers.MixtralConfig(
        vocab_size=97,
        hidden_size=16,
        intermediate_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=1,
        num_local_experts=2,
        num_experts_per_tok=1,
    )
    model = transformers.MixtralForCausalLM(config)
    with pytest.raises(UnsupportedModelError) as error:
        OTOTrainer(model=model, args=make_args(tmp_path), train_dataset=make_dataset())
    message = str(error.value)
    assert "mixtral" in message and "mixture-of-experts" in message


def test_nothing_prunable_after_unprunable_layers(tmp_path):
    args = make_args(tmp_path, oto_prune="heads", oto_unprunable_layers=[0, 1, 2])
    with pytest.raises(ValueError, match="nothing is prunable") as error:
        OTOTrainer(model=make_model(), args=args, train_dataset=make_dataset())
    assert "Remove layers from oto_unprunable_layers or widen oto_prune" in str(error.value)
    # with one layer left prunable, the same settings are fine
    args = make_args(tmp_path, oto_prune="heads", oto_unprunable_layers=[0, 2])
    OTOTrainer(model=make_model(), args=args, train_dataset=make_dataset())


def test_unprunable_layer_out_of_range(tmp_path):
    args = make_args(tmp_path, oto_unprunable_layers=[1, 5])
    with pytest.raises(ValueError, match=r"unprunable_layers \[5\] out of range.*3 layers \(0-2\)"):
        OTOTrainer(model=make_model(), args=args, train_dataset=make_dataset())


def test_target_that_would_remove_every_group_of_a_type(tmp_path):
    """oto_prune="both" asks to keep some heads and some neurons. At 0.99, HSPG's per-structure quotas would
    zero all 12 heads (11.88 rounds up with the leftover group). The suggested maximum in the message is accepted."""
    args = make_args(tmp_path, oto_target_group_sparsity=0.99)
    with pytest.raises(ValueError, match="oto_target_group_sparsity=0.99") as error:
        OTOTrainer(model=make_model(), args=args, train_dataset=make_dataset())
    message = str(error.value)
    assert "every prunable group of the model's attention heads" in message
    suggested = float(re.search(r"Lower it to at most (\d+\.\d+)", message).group(1))
    assert math.floor(suggested * NUM_GROUPS) <= NUM_GROUPS - 2
    args = make_args(tmp_path, oto_target_group_sparsity=suggested)
    OTOTrainer(model=make_model(), args=args, train_dataset=make_dataset())


def test_accepted_high_target_keeps_a_group_of_every_structure(tmp_path):
    """oto_prune="both" at 95% passes the check above, so training must keep at least one head and one FFN
    neuron: HSPG's per-structure quotas (11 of 12 heads, 68 of 72 neurons) guarantee it."""
    args = make_args(tmp_path, max_steps=12, oto_target_group_sparsity=0.95)
    trainer = OTOTrainer(model=make_model(), args=args, train_dataset=make_dataset())
    trainer.train()
    report = trainer.hspg.sparsity_report()
    assert report["zero_groups"] == math.floor(0.95 * NUM_GROUPS)
    assert report["zero_heads"] < 12 and report["zero_ffn_neurons"] < 72


def test_empty_dataset(tmp_path):
    empty = make_dataset().select([])
    with pytest.raises(ValueError, match="train_dataset has 0 examples"):
        OTOTrainer(model=make_model(), args=make_args(tmp_path), train_dataset=empty)


def test_plain_training_arguments_are_refused(tmp_path):
    args = make_args(tmp_path, cls=transformers.TrainingArguments)
    with pytest.raises(TypeError, match="OTOTrainingArguments"):
        OTOTrainer(model=make_model(), args=args, train_dataset=make_dataset())
