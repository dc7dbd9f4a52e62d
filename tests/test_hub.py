"""Hub format: the saved slim folder, reloading in fresh processes (with and without hf_oto), pipelines,
strict loading, verified and atomic writes."""

import ast
import json
import os
import sys

import pytest
import torch
import transformers
from conftest import run_fresh, tiny_model
from safetensors.torch import load_file

import hf_oto
from hf_oto import OTOLoadError, ZeroInvarianceError

HERE = os.path.dirname(os.path.abspath(__file__))


def slim_folder(tmp_path, family="bert", model_class=transformers.BertForQuestionAnswering, tokenizer=None):
    dense = tiny_model(family, model_class)
    groups = hf_oto.build_groups(dense)
    groups.zero_([0, 1, 2, 3, 5, 9, len(groups) - 1])  # all heads of layer 0 plus a few neurons
    slim, report = hf_oto.slim_model(dense, groups)
    folder = tmp_path / "slim"
    slim.save_pretrained(folder)
    if tokenizer is not None:
        tokenizer.save_pretrained(folder)
    return dense, slim, folder


def test_folder_contents_and_config(tmp_path):
    dense, slim, folder = slim_folder(tmp_path)
    names = set(os.listdir(folder))
    assert {"model.safetensors", "config.json", "configuration_oto.py", "modeling_oto.py"} <= names
    assert not any(n.endswith((".bin", ".pt", ".pth", ".pkl")) for n in names)
    assert not any(n.startswith(".") for n in os.listdir(tmp_path)), "temporary folder left behind"
    config = json.loads((folder / "config.json").read_text())
    assert config["model_type"] == "oto_bert"
    assert config["architectures"] == ["OTOBertForQuestionAnswering"]
    assert config["auto_map"]["AutoConfig"] == "configuration_oto.OTOBertConfig"
    assert config["auto_map"]["AutoModelForQuestionAnswering"] == "modeling_oto.OTOBertForQuestionAnswering"
    dense_config = dense.config.to_dict()
    for key in ("hidden_size", "num_attention_heads", "intermediate_size", "num_hidden_layers", "vocab_size"):
        assert config[key] == dense_config[key]  # dense architecture fields unchanged
    assert config["oto_num_attention_heads"] == [0, 4, 4]
    assert config["oto_num_key_value_heads"] == [0, 4, 4]
    assert config["oto_intermediate_sizes"] == [22, 24, 23]
    weights = load_file(folder / "model.safetensors")
    assert weights["bert.encoder.layer.1.intermediate.dense.weight"].shape == (24, 32)
    assert weights["bert.encoder.layer.0.intermediate.dense.weight"].shape == (22, 32)
    assert weights["bert.encoder.layer.0.attention.self.query.weight"].shape == (0, 32)


def test_code_files_import_only_torch_and_transformers(tmp_path):
    _, _, folder = slim_folder(tmp_path)
    for name in ("configuration_oto.py", "modeling_oto.py"):
        tree = ast.parse((folder / name).read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                roots = {alias.name.split(".")[0] for alias in node.names}
            elif isinstance(node, ast.ImportFrom):
                roots = {"<relative>"} if node.level else {node.module.split(".")[0]}
            else:
                continue
            assert roots <= {"torch", "transformers", "<relative>", *sys.stdlib_module_names}, (
                name,
                roots,
            )


LOAD_AND_COMPARE = """
import torch, transformers
model = transformers.{auto}.from_pretrained({folder!r}{extra}).eval()
inputs = torch.load({inputs!r}, weights_only=True)
with torch.no_grad():
    out = model(**inputs)
torch.save([t for t in out.to_tuple() if torch.is_tensor(t)], {result!r})
print(type(model).__module__, type(model).__name__)
"""


def dense_outputs(dense, tmp_path):
    inputs = {"input_ids": torch.randint(0, 97, (2, 10)), "attention_mask": torch.ones(2, 10, dtype=torch.long)}
    torch.save(inputs, tmp_path / "inputs.pt")
    with torch.no_grad():
        return [t for t in dense(**inputs).to_tuple() if torch.is_tensor(t)]


@pytest.mark.parametrize("block_hf_oto", [True, False], ids=["stock-transformers-trust-remote-code", "import-hf_oto"])
@pytest.mark.parametrize(
    "family,model_class,auto",
    [
        ("bert", transformers.BertForQuestionAnswering, "AutoModelForQuestionAnswering"),
        ("llama", transformers.LlamaForCausalLM, "AutoModelForCausalLM"),
    ],
)
def test_reload_in_fresh_process(tmp_path, family, model_class, auto, block_hf_oto):
    dense, _, folder = slim_folder(tmp_path, family, model_class)
    expected = dense_outputs(dense, tmp_path)
    code = LOAD_AND_COMPARE.format(
        auto=auto,
        folder=str(folder),
        extra=", trust_remote_code=True" if block_hf_oto else "",
        inputs=str(tmp_path / "inputs.pt"),
        result=str(tmp_path / "result.pt"),
    )
    if block_hf_oto:
        code = (
            "try:\n    import hf_oto\n    raise SystemExit('hf_oto importable')\nexcept ImportError:\n    pass\n" + code
        )
    else:
        code = "import hf_oto\n" + code
    result = run_fresh(code, hf_oto_importable=not block_hf_oto)
    assert result.returncode == 0, result.stderr[-3000:]
    module = result.stdout.split()[0]
    if block_hf_oto:
        assert module.startswith("transformers_modules"), module  # the copied code, not an installed package
    else:
        assert module == "hf_oto.modeling_oto"
    actual = torch.load(tmp_path / "result.pt", weights_only=True)
    assert len(actual) == len(expected)
    for e, a in zip(expected, actual):
        assert (e - a).abs().max().item() <= 1e-5


def test_load_slim_in_process(tmp_path):
    dense, _, folder = slim_folder(tmp_path)
    model = hf_oto.load_slim(folder).eval()
    assert type(model).__name__ == "OTOBertForQuestionAnswering"
    expected = dense_outputs(dense, tmp_path)
    inputs = torch.load(tmp_path / "inputs.pt", weights_only=True)
    with torch.no_grad():
        actual = [t for t in model(**inputs).to_tuple() if torch.is_tensor(t)]
    for e, a in zip(expected, actual):
        assert (e - a).abs().max().item() <= 1e-5
    base = transformers.AutoModel.from_pretrained(folder)
    assert type(base).__name__ == "OTOBertModel"


def test_text_classification_pipeline_on_reloaded_slim_model(tmp_path, tiny_tokenizer):
    _, _, folder = slim_folder(
        tmp_path, model_class=transformers.BertForSequenceClassification, tokenizer=tiny_tokenizer
    )
    classify = transformers.pipeline("text-classification", model=str(folder), tokenizer=str(folder))
    (prediction,) = classify("bob works as a baker in rome")
    assert prediction["label"] in {"LABEL_0", "LABEL_1"} and 0 <= prediction["score"] <= 1


def test_question_answering_pipeline_on_reloaded_slim_model(tmp_path, tiny_tokenizer):
    """transformers 5.23+ removed its QA pipeline; `import hf_oto` registers an extractive one under that name."""
    _, _, folder = slim_folder(tmp_path, tokenizer=tiny_tokenizer)
    code = f"""
import hf_oto, transformers, json
qa = transformers.pipeline("question-answering", model={str(folder)!r})
context = "alice was born in paris in 1984."
answer = qa(question="where was alice born?", context=context)
assert answer["answer"] == context[answer["start"]:answer["end"]] and answer["answer"], answer
print(json.dumps(answer))
"""
    result = run_fresh(code, hf_oto_importable=True)
    assert result.returncode == 0, result.stderr[-3000:]
    answer = json.loads(result.stdout.strip().splitlines()[-1])
    assert 0 <= answer["score"] <= 1


def test_mismatched_weights_raise_naming_the_tensor(tmp_path):
    _, _, folder = slim_folder(tmp_path)
    config = json.loads((folder / "config.json").read_text())
    config["oto_intermediate_sizes"][1] = 20
    (folder / "config.json").write_text(json.dumps(config))
    with pytest.raises(OTOLoadError, match=r"bert\.encoder\.layer\.1\.intermediate\.dense\.weight"):
        transformers.AutoModelForQuestionAnswering.from_pretrained(folder)
    with pytest.raises(OTOLoadError, match="ignore_mismatched_sizes"):
        transformers.AutoModelForQuestionAnswering.from_pretrained(folder, ignore_mismatched_sizes=True)


def test_missing_layer_tensor_raises(tmp_path):
    from safetensors.torch import save_file

    _, _, folder = slim_folder(tmp_path)
    weights = load_file(folder / "model.safetensors")
    del weights["bert.encoder.layer.2.output.dense.weight"]
    save_file(weights, folder / "model.safetensors", metadata={"format": "pt"})
    with pytest.raises(OTOLoadError, match=r"layer\.2\.output\.dense\.weight \(missing"):
        hf_oto.load_slim(folder)


def test_load_slim_rejects_a_dense_folder(tmp_path):
    dense = tiny_model("bert")
    dense.save_pretrained(tmp_path / "dense")
    with pytest.raises(OTOLoadError, match="not an hf_oto slim model"):
        hf_oto.load_slim(tmp_path / "dense")
    with pytest.raises(OTOLoadError, match="no config.json"):
        hf_oto.load_slim(tmp_path)


def test_save_refuses_when_outputs_differ(tmp_path):
    dense = tiny_model("bert", transformers.BertForSequenceClassification)
    groups = hf_oto.build_groups(dense)
    groups.zero_([0, 1])
    slim, _ = hf_oto.slim_model(dense, groups)
    with torch.no_grad():
        slim.bert.encoder.layer[1].intermediate.dense.weight[0, 0] += 1.0
    with pytest.raises(ZeroInvarianceError, match="refusing to save"):
        slim.save_pretrained(tmp_path / "out")
    assert not (tmp_path / "out").exists()
    assert os.listdir(tmp_path) == []


def test_interrupted_save_leaves_nothing(tmp_path, monkeypatch):
    dense = tiny_model("bert")
    slim, _ = hf_oto.slim_model(dense)

    def crash(*args, **kwargs):
        raise KeyboardInterrupt("simulated crash while writing weights")

    monkeypatch.setattr(transformers.modeling_utils, "safe_save_file", crash)
    with pytest.raises(KeyboardInterrupt):
        slim.save_pretrained(tmp_path / "out")
    assert os.listdir(tmp_path) == []


def test_save_into_existing_output_dir_keeps_other_files(tmp_path):
    dense = tiny_model("bert")
    slim, _ = hf_oto.slim_model(dense)
    out = tmp_path / "out"
    (out / "checkpoint-10").mkdir(parents=True)
    (out / "model-00001-of-00002.safetensors").write_text("stale")
    slim.save_pretrained(out)
    names = set(os.listdir(out))
    assert "checkpoint-10" in names and "model.safetensors" in names
    assert "model-00001-of-00002.safetensors" not in names
