"""Issue 15 A/B and issue 17.2: strict loading of every tensor, crash-safe saving into existing folders, mount
points, the working directory and symlinks, base-model loading of every family, attentions of empty layers,
file modes under the umask, and one-line messages for broken folders. Reloads run in fresh processes."""

import errno
import json
import os
import shutil
import subprocess

import pytest
import torch
import transformers
from conftest import FUSED_CONFIGS, REPO, TINY_CONFIGS, run_fresh, tiny_model
from hub_stub import FAKE_TOKEN, loopback_hub
from safetensors.torch import load_file, save_file

import hf_oto
from hf_oto import OTOLoadError, UnsupportedModelError
from hf_oto.cli import main
from hf_oto.modeling_oto import STAGED_POINTER, STAGING_PREFIX, TEMP_PREFIX

TASK_CLASS = {
    "bert": transformers.BertForQuestionAnswering,
    "roberta": transformers.RobertaForSequenceClassification,
    "electra": transformers.ElectraForTokenClassification,
    "xlm-roberta": transformers.XLMRobertaForMaskedLM,
    "distilbert": transformers.DistilBertForQuestionAnswering,
    "llama": transformers.LlamaForCausalLM,
    "mistral": transformers.MistralForSequenceClassification,
    "qwen2": transformers.Qwen2ForCausalLM,
    "vit": transformers.ViTForImageClassification,
    "qwen3": transformers.Qwen3ForCausalLM,
    "gemma2": transformers.Gemma2ForSequenceClassification,
    "gemma3_text": transformers.Gemma3ForCausalLM,
    "granite": transformers.GraniteForCausalLM,
    "smollm3": transformers.SmolLM3ForCausalLM,  # its QA head names the base model "transformer": no AutoModel
    "starcoder2": transformers.Starcoder2ForTokenClassification,
    "olmo2": transformers.Olmo2ForCausalLM,
    "phi": transformers.PhiForSequenceClassification,
    "deberta-v2": transformers.DebertaV2ForQuestionAnswering,
    "mpnet": transformers.MPNetForMaskedLM,
    "gpt2": transformers.GPT2LMHeadModel,
    "gpt_neox": transformers.GPTNeoXForSequenceClassification,
    "phi3": transformers.Phi3ForCausalLM,
    "modernbert": transformers.ModernBertForQuestionAnswering,
}


def slim_of(family="bert", model_class=transformers.BertForQuestionAnswering, zero=(0, 1, 2, 3, 5), seed=0):
    """A slim model of `family` with some groups zeroed (the first four: all heads of layer 0), and its dense model."""
    dense = tiny_model(family, model_class, seed=seed)
    groups = hf_oto.build_groups(dense)
    groups.zero_(list(zero))
    slim, _ = hf_oto.slim_model(dense, groups)
    return dense, slim


def inputs_for(model, seed=0):
    generator = torch.Generator().manual_seed(seed)
    if model.main_input_name == "pixel_values":
        return {"pixel_values": torch.randn(2, 3, 8, 8, generator=generator)}
    return {"input_ids": torch.randint(0, 97, (2, 7), generator=generator)}


def first_output(model, inputs) -> torch.Tensor:
    with torch.no_grad():
        return model.eval()(**inputs)[0]


# Loads each folder of a JSON list with trust_remote_code (no hf_oto) and writes its first output, or the error.
LOAD_EACH = """
import torch, transformers
folders, auto, inputs_path, result_path = {args!r}
inputs = torch.load(inputs_path, weights_only=True)
results = {{}}
for folder in folders:
    try:
        model = getattr(transformers, auto).from_pretrained(folder, trust_remote_code=True).eval()
        with torch.no_grad():
            results[folder] = model(**inputs)[0]
    except Exception as error:
        results[folder] = f"{{type(error).__name__}}: {{error}}"
torch.save(results, result_path)
"""


def load_each_fresh(tmp_path, folders, inputs, auto="AutoModelForQuestionAnswering") -> dict:
    """Load every folder in ONE fresh process without hf_oto; folder -> first output tensor, or the error text."""
    torch.save(inputs, tmp_path / "inputs.pt")
    args = ([str(f) for f in folders], auto, str(tmp_path / "inputs.pt"), str(tmp_path / "results.pt"))
    result = run_fresh(LOAD_EACH.format(args=args), hf_oto_importable=False)
    assert result.returncode == 0, result.stderr[-3000:]
    return torch.load(tmp_path / "results.pt", weights_only=False)


# ---------------------------------------------------------------------------------------- A.1 strict loading


def _drop(key):
    def edit(weights):
        del weights[key]

    return edit


def _add_unexpected(weights):
    weights["bert.extra.weight"] = torch.zeros(3)


CORRUPTIONS = {
    "word-embeddings-missing": (_drop("bert.embeddings.word_embeddings.weight"), "bert.embeddings.word_embeddings"),
    "position-embeddings-missing": (
        _drop("bert.embeddings.position_embeddings.weight"),
        "bert.embeddings.position_embeddings",
    ),
    "task-head-missing": (_drop("qa_outputs.weight"), "qa_outputs.weight"),
    "final-layernorm-missing": (_drop("bert.embeddings.LayerNorm.bias"), "bert.embeddings.LayerNorm.bias"),
    "unexpected-tensor": (_add_unexpected, "bert.extra.weight (in the checkpoint, not in the model)"),
}


@pytest.fixture(scope="module")
def corrupt_folders(tmp_path_factory):
    root = tmp_path_factory.mktemp("corrupt")
    _, slim = slim_of()
    slim.save_pretrained(root / "good")
    folders = {}
    for name, (edit, _) in CORRUPTIONS.items():
        folder = root / name
        shutil.copytree(root / "good", folder)
        weights = load_file(folder / "model.safetensors")
        edit(weights)
        save_file(weights, folder / "model.safetensors", metadata={"format": "pt"})
        folders[name] = folder
    return folders


@pytest.mark.parametrize("case", list(CORRUPTIONS))
def test_load_slim_refuses_any_missing_or_unexpected_tensor(corrupt_folders, case):
    with pytest.raises(OTOLoadError, match="do not match") as error:
        hf_oto.load_slim(corrupt_folders[case])
    assert CORRUPTIONS[case][1] in str(error.value) and "\n" not in str(error.value)


def test_trust_remote_code_refuses_any_missing_or_unexpected_tensor(corrupt_folders, tmp_path):
    """The copied modeling file, in a process that cannot import hf_oto, refuses the same folders."""
    results = load_each_fresh(tmp_path, corrupt_folders.values(), {"input_ids": torch.randint(0, 97, (1, 5))})
    for case, folder in corrupt_folders.items():
        outcome = results[str(folder)]
        assert isinstance(outcome, str) and outcome.startswith("OTOLoadError"), (case, outcome)
        assert CORRUPTIONS[case][1] in outcome, (case, outcome)


# ---------------------------------------------------------------------------------------- A.5 base models


def _task_folder(tmp_path, family):
    """A slim folder saved from `family`'s task model, and the dense base model's output on `inputs_for`."""
    dense, slim = slim_of(family, TASK_CLASS[family], zero=(0, 1, 2, 3))
    slim.save_pretrained(tmp_path / family)
    return tmp_path / family, dense, first_output(dense.base_model, inputs_for(dense))


@pytest.mark.parametrize("family", list(TASK_CLASS))
def test_automodel_loads_the_base_model(tmp_path, family):
    """`AutoModel` on a folder saved from a task model (ViT's legacy key names included) is the slim base model
    with the dense base model's outputs."""
    folder, dense, expected = _task_folder(tmp_path, family)
    base = transformers.AutoModel.from_pretrained(folder)
    assert type(base).__name__ == f"OTO{type(dense.base_model).__name__}"
    torch.testing.assert_close(first_output(base, inputs_for(dense)), expected, atol=1e-5, rtol=0)


def test_automodel_loads_every_base_model_in_a_process_without_hf_oto(tmp_path):
    """The same through trust_remote_code and the copied code, in one fresh process that cannot import hf_oto."""
    saved = {family: _task_folder(tmp_path, family) for family in TASK_CLASS}
    text = [folder for family, (folder, _, _) in saved.items() if family != "vit"]
    results = load_each_fresh(tmp_path, text, inputs_for(tiny_model("bert")), auto="AutoModel")
    results |= load_each_fresh(tmp_path, [saved["vit"][0]], inputs_for(tiny_model("vit")), auto="AutoModel")
    for family, (folder, _, expected) in saved.items():
        outcome = results[str(folder)]
        assert torch.is_tensor(outcome), (family, outcome)
        torch.testing.assert_close(outcome, expected, atol=1e-5, rtol=0)


def test_base_model_folder_loads_a_task_model_with_a_new_head(tmp_path):
    """Loading another class than the saved one may add a head the folder never had (as in transformers)."""
    _, slim = slim_of("bert", transformers.BertModel)
    slim.save_pretrained(tmp_path / "base")
    model = transformers.AutoModelForSequenceClassification.from_pretrained(tmp_path / "base")
    assert type(model).__name__ == "OTOBertForSequenceClassification"


# ---------------------------------------------------------------------------------------- A.2 crash safety


def _tree(folder) -> dict[str, bytes]:
    return {
        os.path.relpath(os.path.join(root, name), folder): open(os.path.join(root, name), "rb").read()
        for root, _, files in os.walk(folder)
        for name in files
    }


MUTATIONS = ("replace", "rename", "link", "remove", "unlink", "mkdir", "chmod")


class StepCounter:
    """Patches the filesystem calls a save makes; raises OSError at call number `fail_at` (counting from 0)."""

    def __init__(self, monkeypatch, fail_at=None):
        self.calls = 0
        self.fail_at = fail_at
        for name in MUTATIONS:
            monkeypatch.setattr(os, name, self._wrap(getattr(os, name)))

    def _wrap(self, function):
        def wrapped(*args, **kwargs):
            step, self.calls = self.calls, self.calls + 1
            if step == self.fail_at:
                raise OSError(errno.EIO, f"injected failure at step {step} ({function.__name__})")
            return function(*args, **kwargs)

        return wrapped


@pytest.fixture(scope="module")
def old_and_new(tmp_path_factory):
    """An existing output_dir (old slim model, tokenizer-less, plus a checkpoint) and a different new model."""
    root = tmp_path_factory.mktemp("old_new")
    dense_old, old = slim_of(zero=(0, 1, 2, 3, 5), seed=0)
    dense_new, new = slim_of(zero=(4, 6, 9, 30, 31), seed=1)
    old.save_pretrained(root / "old")
    (root / "old" / "checkpoint-10").mkdir()
    (root / "old" / "checkpoint-10" / "trainer_state.json").write_text('{"step": 10}')
    inputs = inputs_for(dense_old)
    return root / "old", new, inputs, first_output(dense_old, inputs), first_output(dense_new, inputs)


def test_save_failing_at_any_step_leaves_the_old_or_the_new_model(old_and_new, tmp_path, monkeypatch):
    """Inject an OSError at every filesystem step of a save into an existing output_dir; each folder then loads
    (fresh process, no hf_oto) as exactly the old or the new model, keeps its checkpoint, and the next save
    leaves no staging or temporary entry behind."""
    old_folder, new, inputs, old_output, new_output = old_and_new
    probe = tmp_path / "probe"
    shutil.copytree(old_folder, probe)
    with monkeypatch.context() as patch:
        counter = StepCounter(patch)
        new.save_pretrained(probe)
    steps = counter.calls
    assert steps >= 10, steps
    folders, raised = [], []
    for step in range(steps):
        folder = tmp_path / f"step{step}"
        shutil.copytree(old_folder, folder)
        with monkeypatch.context() as patch:
            StepCounter(patch, fail_at=step)
            try:
                new.save_pretrained(folder)
                raised.append(False)  # a failure the save tolerates (e.g. makedirs on an existing folder)
            except OSError as error:
                assert "injected failure" in str(error)
                raised.append(True)
        folders.append(folder)
    results = load_each_fresh(tmp_path, folders, inputs)
    outcomes = []
    for step, folder in enumerate(folders):
        output = results[str(folder)]
        assert torch.is_tensor(output), (step, output)
        is_old = torch.allclose(output, old_output, atol=1e-5)
        is_new = torch.allclose(output, new_output, atol=1e-5)
        assert is_old != is_new, f"step {step}: neither the old nor the new model"
        assert is_new or raised[step], f"step {step}: the save returned, yet the folder holds the old model"
        outcomes.append("new" if is_new else "old")
        assert (folder / "checkpoint-10" / "trainer_state.json").read_text() == '{"step": 10}'
        assert not any(n.startswith(".") for n in os.listdir(tmp_path)), "a copy was left outside the folder"
    failed = [outcome for outcome, failure in zip(outcomes, raised) if failure]
    # failures before the switch keep the old model, failures after it the new one
    assert "old" in failed and "new" in failed and failed == sorted(failed, reverse=True), outcomes
    for folder in folders[:3] + folders[-3:]:  # the next save cleans what the failed one left
        new.save_pretrained(folder)
        leftovers = [n for n in os.listdir(folder) if n.startswith((STAGING_PREFIX, TEMP_PREFIX))]
        assert leftovers == [] and STAGED_POINTER not in json.loads((folder / "config.json").read_text())


KILL_DURING_SAVES = """
import os, signal, sys, torch
sys.path.insert(0, {tests!r})
torch.set_num_threads(1)
from test_load_save_safety import slim_of
_, new = slim_of(zero=(4, 6, 9, 30, 31), seed=1)
for kill_at, folder in {plan!r}:
    child = os.fork()
    if child == 0:  # the saving process, SIGKILLed (no except/finally, no cleanup) at its kill_at-th rename
        calls, real_replace = [0], os.replace
        def replace(*args, **kwargs):
            if calls[0] == kill_at:
                os.kill(os.getpid(), signal.SIGKILL)
            calls[0] += 1
            return real_replace(*args, **kwargs)
        os.replace = replace
        new.save_pretrained(folder)
        os._exit(0)
    _, status = os.waitpid(child, 0)
    assert os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL, (kill_at, status)
print("killed", len({plan!r}))
"""
KILL_POINTS = {0: "code file", 1: "code file", 2: "the switch", 3: "weights", 4: "final config"}


def test_hard_kill_during_save(old_and_new, tmp_path):
    """SIGKILL a real saving process at each rename of a save into an existing folder: every folder loads (fresh
    process) as the old or the new model, the full-weight copy a kill leaves is inside the folder (nothing in
    the parent), and the next save removes it."""
    old_folder, new, inputs, old_output, new_output = old_and_new
    plan = []
    for kill_at in KILL_POINTS:
        folder = tmp_path / "runs" / f"killed-at-{kill_at}"
        shutil.copytree(old_folder, folder)
        plan.append((kill_at, str(folder)))
    result = run_fresh(KILL_DURING_SAVES.format(tests=os.path.join(REPO, "tests"), plan=plan), hf_oto_importable=True)
    assert result.returncode == 0 and "killed 5" in result.stdout, result.stderr[-3000:]
    assert sorted(os.listdir(tmp_path / "runs")) == sorted(os.path.basename(f) for _, f in plan)
    results = load_each_fresh(tmp_path, [f for _, f in plan], inputs)
    outcomes = {}
    for kill_at, folder in plan:
        output = results[folder]
        assert torch.is_tensor(output), (KILL_POINTS[kill_at], output)
        is_old, is_new = torch.allclose(output, old_output, atol=1e-5), torch.allclose(output, new_output, atol=1e-5)
        assert is_old != is_new, f"killed at {KILL_POINTS[kill_at]}: neither the old nor the new model"
        outcomes[kill_at] = "new" if is_new else "old"
        assert any(n.startswith(STAGING_PREFIX) for n in os.listdir(folder)), "the kill left no staging folder"
        new.save_pretrained(folder)
        assert not any(n.startswith((STAGING_PREFIX, TEMP_PREFIX)) for n in os.listdir(folder))
        torch.testing.assert_close(first_output(hf_oto.load_slim(folder), inputs), new_output, atol=1e-5, rtol=0)
    # killed before the switch completes: old; after it: new
    assert outcomes == {0: "old", 1: "old", 2: "old", 3: "new", 4: "new"}, outcomes


def test_next_save_removes_copies_that_older_versions_left_in_the_parent(tmp_path):
    """Before staging moved inside the target, a killed save left ``.NAME.tmp-*`` / ``.NAME.oto-*`` full copies
    next to it; the next save removes them (and nothing else)."""
    _, slim = slim_of()
    for leftover in (".out.tmp-ab12cd34", ".out.oto-x_9y8z7w"):
        (tmp_path / leftover).mkdir()
        (tmp_path / leftover / "model.safetensors").write_bytes(b"0" * 64)
    (tmp_path / ".other.tmp-ab12cd34").mkdir()  # another folder's: not ours to remove
    slim.save_pretrained(tmp_path / "out")
    assert sorted(os.listdir(tmp_path)) == [".other.tmp-ab12cd34", "out"]


# ---------------------------------------------------------------------------------------- A.3 / A.4 targets


def _fake_mount_point(monkeypatch, target, empty_errno):
    """Make `target` behave like a mount point: it cannot be removed (EBUSY) and nothing can be renamed onto it
    or across it from outside (EBUSY when empty, EXDEV otherwise)."""
    target = os.path.realpath(target)
    real_rename, real_replace, real_rmdir = os.rename, os.replace, os.rmdir

    def guard(function):
        def wrapped(source, destination, *args, **kwargs):
            source_real, destination_real = os.path.realpath(source), os.path.realpath(destination)
            if target in (source_real, destination_real):
                raise OSError(empty_errno if not os.listdir(target) else errno.EXDEV, "mount point", destination)
            inside = [p.startswith(target + os.sep) for p in (source_real, destination_real)]
            if inside[0] != inside[1]:
                raise OSError(errno.EXDEV, "Invalid cross-device link", destination)
            return function(source, destination, *args, **kwargs)

        return wrapped

    def rmdir(path, *args, **kwargs):
        if os.path.realpath(path) == target:
            raise OSError(errno.EBUSY, "Device or resource busy", path)
        return real_rmdir(path, *args, **kwargs)

    monkeypatch.setattr(os, "rename", guard(real_rename))
    monkeypatch.setattr(os, "replace", guard(real_replace))
    monkeypatch.setattr(os, "rmdir", rmdir)


@pytest.mark.parametrize("content", ["empty", "with-checkpoints"])
def test_save_into_a_mount_point(tmp_path, monkeypatch, content):
    dense, slim = slim_of()
    mount = tmp_path / "volume"
    mount.mkdir()
    if content == "with-checkpoints":
        (mount / "checkpoint-1").mkdir()
    _fake_mount_point(monkeypatch, mount, errno.EBUSY)
    slim.save_pretrained(mount)
    monkeypatch.undo()
    assert (mount / "model.safetensors").is_file() and not any(n.startswith(".") for n in os.listdir(mount))
    inputs = inputs_for(dense)
    torch.testing.assert_close(
        first_output(hf_oto.load_slim(mount), inputs), first_output(dense, inputs), atol=1e-5, rtol=0
    )


def test_save_into_a_real_tmpfs_mount(tmp_path):
    """Where the test may mount (root with CAP_SYS_ADMIN), a real tmpfs mount point as the target."""
    mount = tmp_path / "volume"
    mount.mkdir()
    if (
        shutil.which("mount") is None
        or subprocess.run(["mount", "-t", "tmpfs", "tmpfs", str(mount)], capture_output=True).returncode
    ):
        pytest.skip("cannot mount a tmpfs here")
    try:
        dense, slim = slim_of()
        slim.save_pretrained(mount)
        inputs = inputs_for(dense)
        torch.testing.assert_close(
            first_output(hf_oto.load_slim(mount), inputs), first_output(dense, inputs), atol=1e-5, rtol=0
        )
    finally:
        subprocess.run(["umount", str(mount)], check=False)


def test_save_into_the_working_directory_keeps_it(tmp_path, monkeypatch):
    dense, slim = slim_of()
    workdir = tmp_path / "work"
    workdir.mkdir()
    monkeypatch.chdir(workdir)
    before = os.stat(".").st_ino
    slim.save_pretrained(".")
    assert os.stat(".").st_ino == before == os.stat(workdir).st_ino, "the working directory was replaced"
    assert os.path.isfile("model.safetensors") and os.path.isfile(workdir / "config.json")


def test_save_through_a_symlink_to_an_empty_folder(tmp_path):
    dense, slim = slim_of()
    (tmp_path / "real").mkdir()
    os.symlink(tmp_path / "real", tmp_path / "link")
    slim.save_pretrained(tmp_path / "link")
    assert os.path.islink(tmp_path / "link") and (tmp_path / "real" / "model.safetensors").is_file()
    inputs = inputs_for(dense)
    torch.testing.assert_close(
        first_output(hf_oto.load_slim(tmp_path / "link"), inputs), first_output(dense, inputs), atol=1e-5, rtol=0
    )


# ---------------------------------------------------------------------------------------- issue 17.2 modes


@pytest.mark.parametrize("umask", [0o022, 0o027])
@pytest.mark.parametrize("existing", [False, True], ids=["new-folder", "existing-folder"])
def test_modes_follow_the_umask(tmp_path, umask, existing):
    _, slim = slim_of()
    target = tmp_path / "slim"
    previous = os.umask(umask)
    try:
        if existing:
            target.mkdir()
        slim.save_pretrained(target)
    finally:
        os.umask(previous)
    assert oct(os.stat(target).st_mode & 0o777) == oct(0o777 & ~umask)
    for name in os.listdir(target):
        assert oct(os.stat(target / name).st_mode & 0o777) == oct(0o666 & ~umask), name


# ---------------------------------------------------------------------------------------- A.7 attentions


@pytest.mark.parametrize("family", ["bert", "distilbert", "llama", "vit"])
def test_attentions_stay_aligned_with_layers(family):
    """Layer 0 keeps no head: `attentions[0]` is a zero-head tensor and `attentions[i]` is still layer i's."""
    dense, slim = slim_of(family, None, zero=(0, 1, 2, 3) if family not in ("llama",) else (0, 1))
    inputs = inputs_for(dense)
    with torch.no_grad():
        expected = dense.eval()(**inputs, output_attentions=True).attentions
        actual = slim.eval()(**inputs, output_attentions=True).attentions
    assert len(actual) == len(expected) == 3
    assert actual[0].shape == (*expected[0].shape[:1], 0, *expected[0].shape[2:])
    for layer in (1, 2):
        torch.testing.assert_close(actual[layer], expected[layer], atol=1e-5, rtol=0)


# ---------------------------------------------------------------------------------------- A.6 demo checks


TINY_BERT = dict(vocab_size=50, hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=8)


@pytest.mark.parametrize(
    "case, extra, message",
    [
        ("no-tokenizer", [], "no tokenizer"),
        ("short-positions", ["--max_seq_length", "128"], "max_position_embeddings is 32, below --max_seq_length 128"),
    ],
)
def test_demo_refuses_a_model_before_any_work(tmp_path, tiny_tokenizer, capsys, case, extra, message):
    folder = tmp_path / case
    config = transformers.BertConfig(**TINY_BERT, max_position_embeddings=32 if case == "short-positions" else 512)
    transformers.BertForQuestionAnswering(config).save_pretrained(folder)
    if case != "no-tokenizer":
        tiny_tokenizer.save_pretrained(folder)
    capsys.readouterr()
    status = main(["demo", "--model", str(folder), "--output_dir", str(tmp_path / "out"), *extra])
    err = capsys.readouterr().err
    assert status == 2 and err.count("\n") == 1 and message in err, err
    assert not (tmp_path / "out").exists(), "work started before the check"


# ---------------------------------------------------------------------------------------- B: one-line messages


def _edit_config(field, value):
    def edit(config):
        if value is _DELETE:
            del config[field]
        else:
            config[field] = value(config[field]) if callable(value) else value

    return edit


_DELETE = object()
BAD_CONFIGS = {
    "list-too-long": (
        _edit_config("oto_intermediate_sizes", lambda v: [*v, 24]),
        "has 4 entries but the model has 3 layers",
    ),
    "list-too-short": (
        _edit_config("oto_num_attention_heads", lambda v: v[:2]),
        "has 2 entries but the model has 3 layers",
    ),
    "negative-width": (
        _edit_config("oto_intermediate_sizes", lambda v: [v[0], -3, v[2]]),
        "oto_intermediate_sizes[1] is -3, a negative width",
    ),
    "no-layout": (_edit_config("oto_layout", _DELETE), "oto_layout is missing"),
    "not-a-list": (
        _edit_config("oto_num_key_value_heads", 4),
        "oto_num_key_value_heads must be a list of whole numbers",
    ),
}


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    folder = tmp_path_factory.mktemp("saved") / "slim"
    _, slim = slim_of()
    slim.save_pretrained(folder)
    return folder


def _broken_copy(saved, tmp_path, edit):
    folder = tmp_path / "broken"
    shutil.copytree(saved, folder)
    config = json.loads((folder / "config.json").read_text())
    edit(config)
    (folder / "config.json").write_text(json.dumps(config))
    return folder


@pytest.mark.parametrize("case", list(BAD_CONFIGS))
def test_bad_oto_fields_name_the_field_and_the_fix(saved, tmp_path, capsys, case):
    edit, message = BAD_CONFIGS[case]
    folder = _broken_copy(saved, tmp_path, edit)
    with pytest.raises(OTOLoadError) as error:
        hf_oto.load_slim(folder)
    assert message in str(error.value) and "re-save the model with hf_oto" in str(error.value)
    assert "\n" not in str(error.value)
    with pytest.raises(OTOLoadError, match="the slim config is not valid") as error:
        transformers.AutoModelForQuestionAnswering.from_pretrained(folder)
    assert message in str(error.value)
    status = main(["inspect", str(folder)])
    err = capsys.readouterr().err
    assert status == 2 and err.count("\n") == 1 and message in err and "Traceback" not in err


def test_corrupt_config_json(saved, tmp_path):
    folder = tmp_path / "corrupt"
    shutil.copytree(saved, folder)
    (folder / "config.json").write_text('{"model_type": "oto_bert", ')
    with pytest.raises(OTOLoadError, match=r"config\.json is not valid JSON .*restore it or save the model again"):
        hf_oto.load_slim(folder)


@pytest.mark.parametrize("path", ["/nonexistent/slim-model", "./missing-folder", "a/b/c"])
def test_load_slim_on_a_path_that_does_not_exist(tmp_path, path):
    with pytest.raises(OTOLoadError, match="does not exist: pass the folder that save_pretrained"):
        hf_oto.load_slim(path)


def test_truncated_weights_name_the_file(saved, tmp_path):
    folder = tmp_path / "truncated"
    shutil.copytree(saved, folder)
    data = (folder / "model.safetensors").read_bytes()
    (folder / "model.safetensors").write_bytes(data[: len(data) // 2])
    with pytest.raises(OTOLoadError) as error:
        hf_oto.load_slim(folder)
    message = str(error.value)
    assert str(folder / "model.safetensors") in message and "truncated or corrupt" in message and "\n" not in message


def test_question_answering_pipeline_without_a_tokenizer(saved):
    with pytest.raises(ValueError) as error:
        transformers.pipeline("question-answering", model=str(saved))
    message = str(error.value)
    assert "needs a tokenizer" in message and "tokenizer.save_pretrained" in message and "\n" not in message


def test_slim_model_of_something_that_is_not_a_transformers_model():
    with pytest.raises(UnsupportedModelError, match="works on transformers models .* got a Linear") as error:
        hf_oto.slim_model(torch.nn.Linear(4, 4))
    assert "\n" not in str(error.value)


def test_groups_built_from_another_model():
    model, other = tiny_model("bert", seed=0), tiny_model("bert", seed=1)
    groups = hf_oto.build_groups(other)
    groups.zero_([0, 1])
    with pytest.raises(ValueError, match="groups were built from another model.*build_groups\\(model\\)"):
        hf_oto.slim_model(model, groups)


def test_supported_families_are_all_covered():
    assert set(TASK_CLASS) == set(TINY_CONFIGS) | set(FUSED_CONFIGS)


def _task_cases():
    from test_slim import task_classes

    return [*task_classes([*TINY_CONFIGS, *FUSED_CONFIGS]), ("llama", "LlamaForCausalLM-tied")]


@pytest.mark.parametrize("family,class_name", _task_cases())
def test_strict_loading_accepts_every_saved_task_class(tmp_path, family, class_name):
    """No false alarm: each class reloads as saved (tied embeddings, pooler-less heads, legacy ViT keys)."""
    tied = class_name.endswith("-tied")
    model_class = getattr(transformers, class_name.removesuffix("-tied"))
    dense = tiny_model(family, model_class, **({"tie_word_embeddings": True} if tied else {}))
    groups = hf_oto.build_groups(dense)
    groups.zero_([0, 1, len(groups) - 1])
    slim, _ = hf_oto.slim_model(dense, groups)
    slim.save_pretrained(tmp_path / "slim")
    model = hf_oto.load_slim(tmp_path / "slim")
    assert type(model) is type(slim)
    inputs = {name: value[:1] for name, value in inputs_for(dense).items()}  # decoders without a pad token
    if class_name.endswith("ForMultipleChoice"):
        inputs = {"input_ids": inputs["input_ids"].unsqueeze(1).repeat(1, 2, 1)}
    torch.testing.assert_close(first_output(model, inputs), first_output(dense, inputs), atol=1e-5, rtol=0)


def test_save_pretrained_push_to_hub_pushes_the_committed_model(tmp_path, monkeypatch):
    """`save_pretrained(dir, push_to_hub=True)` pushes to a repo named after `dir` (not after the staging
    folder) the same model as saved, AutoModel entry included (Hub: the loopback stub)."""
    _, slim = slim_of()
    with loopback_hub(monkeypatch) as hub:
        slim.save_pretrained(tmp_path / "my-slim", push_to_hub=True, token=FAKE_TOKEN)
    (commit,) = hub.commits
    assert commit.repo_id == "tester/my-slim" and hub.unexpected == []
    assert set(commit.files) == set(os.listdir(tmp_path / "my-slim"))
    config = json.loads(commit.files["config.json"])
    assert config["auto_map"]["AutoModel"] == "modeling_oto.OTOBertModel" and STAGED_POINTER not in config
    assert commit.files["model.safetensors"] == (tmp_path / "my-slim" / "model.safetensors").read_bytes()


def test_a_staging_pointer_is_never_saved_again(saved, tmp_path):
    """A model loaded while a save was being committed (config with a pointer) saves a folder without it."""
    model = hf_oto.load_slim(saved)
    model.config.oto_staged_folder = f"{STAGING_PREFIX}gone"
    model.save_pretrained(tmp_path / "again", verify=False)
    assert STAGED_POINTER not in json.loads((tmp_path / "again" / "config.json").read_text())
    assert type(hf_oto.load_slim(tmp_path / "again")) is type(model)
