"""`import hf_oto` is cheap: it imports none of transformers' heavy modules, yet registers the slim Auto
classes and the "question-answering" pipeline, which are built on first use. Each check runs in a fresh
interpreter, since the test process has long imported everything."""

import json
import os
import subprocess
import sys
import textwrap

import pytest
import transformers
from conftest import tiny_model

import hf_oto

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(hf_oto.__file__)))

# What `import hf_oto` used to import, for seconds: the Trainer and datasets, the pipelines package, the
# modeling base (and the LLaMA config, which pulls in torch.distributed.tensor through transformers' validators);
# HSPG's FSDP2 support must not import torch.distributed.tensor either.
HEAVY_MODULES = (
    "torch.distributed.tensor",
    "datasets",
    "transformers.trainer",
    "transformers.pipelines",
    "transformers.modeling_utils",
    "transformers.utils.type_validators",
    "transformers.models.llama.configuration_llama",
    "transformers.models.bert.modeling_bert",
    "hf_oto.trainer",
    "hf_oto.pipelines",
)


def run_fresh(code: str) -> str:
    """Run `code` in a new interpreter that imports this checkout's hf_oto; returns stdout's last line."""
    result = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        capture_output=True,
        text=True,
        env={**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": ROOT},
        cwd="/",
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout.strip().splitlines()[-1]


def save_slim(folder, model_type: str, model_class, tokenizer=None) -> None:
    dense = tiny_model(model_type, model_class)
    groups = hf_oto.build_groups(dense)
    groups.zero_([0, 1, len(groups) - 1])
    slim, _ = hf_oto.slim_model(dense, groups)
    slim.save_pretrained(folder)
    if tokenizer is not None:
        tokenizer.save_pretrained(folder)


def test_import_hf_oto_imports_no_heavy_module():
    loaded = run_fresh(f"""
        import json, sys
        import hf_oto
        assert hf_oto.__file__.startswith({ROOT!r}), hf_oto.__file__
        print(json.dumps([m for m in {HEAVY_MODULES!r} if m in sys.modules]))
    """)
    assert json.loads(loaded) == []


def test_lazy_names_resolve():
    assert hf_oto.OTOTrainer.__module__ == "hf_oto.trainer"
    assert hf_oto.QuestionAnsweringPipeline.__module__ == "hf_oto.pipelines"
    assert {"OTOTrainer", "OTOTrainingArguments", "QuestionAnsweringPipeline"} <= set(dir(hf_oto))
    with pytest.raises(AttributeError, match="no_such_name"):
        hf_oto.no_such_name  # noqa: B018


@pytest.mark.parametrize(
    "model_type,model_class,auto,built_module",
    [
        ("bert", transformers.BertForQuestionAnswering, "AutoModelForQuestionAnswering", "bert.modeling_bert"),
        ("llama", transformers.LlamaForCausalLM, "AutoModelForCausalLM", "llama.modeling_llama"),
        ("vit", transformers.ViTForImageClassification, "AutoModelForImageClassification", "vit.modeling_vit"),
    ],
)
def test_auto_classes_build_the_slim_class_on_first_lookup(tmp_path, model_type, model_class, auto, built_module):
    """After `import hf_oto`, AutoConfig and the Auto model class load a slim folder without trust_remote_code;
    only the family that was looked up has its modeling file imported."""
    save_slim(tmp_path / "slim", model_type, model_class)
    others = [f"transformers.models.{m}" for m in ("bert.modeling_bert", "llama.modeling_llama", "vit.modeling_vit")]
    others.remove(f"transformers.models.{built_module}")
    names = run_fresh(f"""
        import json, sys
        import hf_oto, transformers
        config = transformers.AutoConfig.from_pretrained({str(tmp_path / "slim")!r})
        assert "transformers.models.{built_module}" not in sys.modules
        model = transformers.{auto}.from_pretrained({str(tmp_path / "slim")!r})
        assert not [m for m in {others!r} if m in sys.modules], "imported another family's modeling file"
        print(json.dumps([type(config).__name__, type(model).__module__, type(model).__name__]))
    """)
    config_name, module, name = json.loads(names)
    assert config_name == f"OTO{model_class.config_class.__name__}"
    assert module == "hf_oto.modeling_oto" and name.startswith("OTO")


@pytest.mark.parametrize("pipelines_first", [False, True], ids=["hf_oto-first", "transformers.pipelines-first"])
def test_question_answering_pipeline_is_registered_either_import_order(tmp_path, tiny_tokenizer, pipelines_first):
    save_slim(tmp_path / "slim", "bert", transformers.BertForQuestionAnswering, tiny_tokenizer)
    first = "transformers.pipelines" if pipelines_first else "json"
    answer = run_fresh(f"""
        import {first}
        import hf_oto
        import json, transformers
        qa = transformers.pipeline("question-answering", model={str(tmp_path / "slim")!r})
        context = "alice was born in paris in 1984."
        answer = qa(question="where was alice born?", context=context)
        assert answer["answer"] and answer["answer"] == context[answer["start"] : answer["end"]], answer
        print(json.dumps([type(qa).__module__, answer["answer"]]))
    """)
    assert json.loads(answer)[0] == "hf_oto.pipelines"
