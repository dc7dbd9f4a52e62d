"""OTOTrainer on many processes (issue 4, "Many devices"): real 2-process gloo jobs on CPU.

Each job runs tests/ddp_train_script.py (a tiny BERT classifier, dropout off, generated data, Trainer defaults
otherwise) under a real launcher and reads back what every rank dumped: its identity, final weights, HSPG zero
mask, logged losses and saved files. The checks:

- both launchers (``torchrun --nproc_per_node 2`` and ``accelerate launch --multi_gpu --num_processes 2``, which
  falls back to gloo on CPU) really start two ranks of one gloo process group;
- both ranks end with identical zero masks and weights;
- 2 processes × per-device batch 4 give the result of 1 process × batch 8, within fp tolerance, for the AdamW
  and the SGD variants. For SGD the check can fail: with the Trainer's own ``model_accepts_loss_kwargs`` the
  loss (and every gradient) is 2× under 2 processes (docs/design.md §6), and that run is shown to differ;
- only rank 0 writes the slim model (each rank gets its own output folder, so a write by rank 1 would show),
  and what it wrote is the trained model;
- a CPU launch without ``use_cpu=True`` (no process group: each process would train alone) is refused.

- FSDP2 through accelerate: sharded training equals 1 process, rank 0 writes the slim model gathered from the
  shards, and a checkpoint resumes bit for bit; bf16 mixed precision is applied and still slims exactly;
  push_to_hub commits the gathered slim folder (loopback Hub stand-in); FSDP1,
  DeepSpeed and FSDP that accelerate leaves off are refused.
Each job takes 10-20 s on 2 CPU cores; the jobs are shared between tests through a module-scoped cache.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
from conftest import load_script

from hf_oto import OTOTrainingArguments

TESTS = Path(__file__).resolve().parent
ROOT = TESTS.parent
SCRIPT = TESTS / "ddp_train_script.py"
ATOL, RTOL = 1e-6, 1e-5  # fp32: a batch of 8 vs two batches of 4 plus an all-reduce (observed ≤ 1e-7)
ADAMW = ("--learning_rate", "1e-3")
SGD = ("--variant", "sgd", "--learning_rate", "0.1")


def _script_module():
    return load_script(SCRIPT)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env.update(HF_HUB_OFFLINE="1", TOKENIZERS_PARALLELISM="false", OMP_NUM_THREADS="1")
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):  # never inherit a launch
        env.pop(name, None)
    return env


def _launcher(kind: str) -> list[str]:
    if kind == "python":
        return [sys.executable]
    if kind == "torchrun":
        return [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]
    if kind == "accelerate":
        return [
            sys.executable,
            "-m",
            "accelerate.commands.launch",
            "--multi_gpu",
            "--num_processes",
            "2",
            "--num_machines",
            "1",
            "--mixed_precision",
            "no",
            "--dynamo_backend",
            "no",
            "--main_process_port",
            str(_free_port()),
        ]
    raise ValueError(kind)


@dataclass
class Run:
    returncode: int
    log: str
    output_dir: Path
    dumps: dict[int, dict]


def _launch(kind: str, workdir: Path, *script_args: str, env: dict[str, str] | None = None) -> Run:
    """Run the training script under `kind` ("python", "torchrun" or "accelerate") and load every rank's dump;
    `env` overrides variables of the test environment."""
    output_dir, dump_dir = workdir / "out", workdir / "dump"
    batch = ["--per_device_train_batch_size", "8" if kind == "python" else "4"]
    command = [*_launcher(kind), str(SCRIPT), "--output_dir", str(output_dir), "--dump_dir", str(dump_dir)]
    command += [*batch, *script_args]
    environment = {**_env(), **(env or {})}
    done = subprocess.run(command, cwd=workdir.parent, env=environment, capture_output=True, text=True, timeout=300)
    log = done.stdout + done.stderr
    dumps = {}
    if dump_dir.is_dir():
        for path in sorted(dump_dir.glob("rank*.pt")):
            dump = torch.load(path, weights_only=False)
            dumps[dump["rank"]] = dump
    return Run(done.returncode, log, output_dir, dumps)


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Launch each (launcher, settings) job once per module; a job that fails fails the test that needs it."""
    cache: dict[tuple, Run] = {}

    def get(kind: str, *script_args: str, expect_success: bool = True) -> Run:
        key = (kind, *script_args)
        if key not in cache:
            workdir = tmp_path_factory.mktemp(f"{kind}-job")
            cache[key] = _launch(kind, workdir, *script_args)
        run = cache[key]
        if expect_success:
            assert run.returncode == 0, f"{kind} {script_args} failed:\n{run.log[-6000:]}"
        return run

    return get


def _assert_two_gloo_ranks(run: Run) -> None:
    assert sorted(run.dumps) == [0, 1], run.log[-3000:]
    assert run.dumps[0]["pid"] != run.dumps[1]["pid"]
    for rank, dump in run.dumps.items():
        assert dump["rank"] == rank
        assert dump["env_world_size"] == dump["dist_world_size"] == dump["trainer_world_size"] == 2
        assert dump["num_processes"] == 2
        assert dump["dist_backend"] == "gloo"
        assert dump["global_step"] == dump["hspg_steps"] == 16


def _assert_ranks_identical(run: Run) -> None:
    """DDP all-reduces the gradients and every rank takes the same HSPG step: bit-identical results."""
    first, second = run.dumps[0], run.dumps[1]
    assert torch.equal(first["zero_mask"], second["zero_mask"])
    assert first["state_dict"].keys() == second["state_dict"].keys()
    for name, tensor in first["state_dict"].items():
        assert torch.equal(tensor, second["state_dict"][name]), name


def _assert_matches_reference(run: Run, reference: Run) -> None:
    """Same global batch, same result: zero mask exactly, weights and logged losses within fp tolerance."""
    expected = reference.dumps[0]
    for dump in run.dumps.values():
        assert torch.equal(dump["zero_mask"], expected["zero_mask"])
        for name, tensor in expected["state_dict"].items():
            torch.testing.assert_close(dump["state_dict"][name], tensor, atol=ATOL, rtol=RTOL, msg=name)
        torch.testing.assert_close(torch.tensor(dump["losses"]), torch.tensor(expected["losses"]), atol=1e-5, rtol=0)


def _assert_reference_meaningful(reference: Run) -> None:
    """The 1-process run reached the target (21 of 72 groups zero) and moved the weights far beyond ATOL."""
    dump = reference.dumps[0]
    assert sorted(reference.dumps) == [0] and dump["trainer_world_size"] == 1
    assert int(dump["zero_mask"].sum()) == int(0.3 * 72) == 21
    initial = _script_module().tiny_bert().state_dict()
    moved = max((dump["state_dict"][name] - tensor).abs().max().item() for name, tensor in initial.items())
    assert moved > 1000 * ATOL


@pytest.mark.parametrize("launcher", ["torchrun", "accelerate"])
def test_two_ranks_agree_and_match_one_process_adamw(runs, launcher):
    """AdamW variant under each launcher: two gloo ranks, identical to each other and to 1 process × batch 8."""
    reference = runs("python", *ADAMW)
    _assert_reference_meaningful(reference)
    run = runs(launcher, *ADAMW)
    _assert_two_gloo_ranks(run)
    assert all(dump["fix_applied"] and dump["model_accepts_loss_kwargs"] is False for dump in run.dumps.values())
    _assert_ranks_identical(run)
    _assert_matches_reference(run, reference)


def test_two_ranks_match_one_process_sgd_and_the_loss_scale_fix_is_needed(runs):
    """SGD variant: with OTOTrainer's fix the 2-process run equals the 1-process run; with the Trainer's own
    `model_accepts_loss_kwargs` (True for BERT, whose forward takes **kwargs) every loss and gradient is 2× and
    the result is visibly different, so the comparison above can fail."""
    reference = runs("python", *SGD)
    _assert_reference_meaningful(reference)
    fixed = runs("torchrun", *SGD)
    _assert_two_gloo_ranks(fixed)
    _assert_ranks_identical(fixed)
    _assert_matches_reference(fixed, reference)

    unfixed = runs("torchrun", *SGD, "--trainer_default_loss_kwargs")
    _assert_two_gloo_ranks(unfixed)
    _assert_ranks_identical(unfixed)
    dump, expected = unfixed.dumps[0], reference.dumps[0]
    assert dump["model_accepts_loss_kwargs"] is True
    # The first step starts from the same weights: the logged loss is exactly the Trainer's 2× scaled loss.
    assert dump["losses"][0] == pytest.approx(2 * expected["losses"][0], rel=1e-5)
    assert dump["grad_norms"][0] == pytest.approx(2 * expected["grad_norms"][0], rel=1e-4)
    worst = max((dump["state_dict"][k] - v).abs().max().item() for k, v in expected["state_dict"].items())
    assert worst > 1000 * ATOL


@pytest.mark.parametrize("sharding", [(), ("--fsdp2",)], ids=["ddp", "fsdp2"])
def test_distillation_on_two_ranks_matches_one_process(runs, sharding):
    """With a teacher (logit and hidden-state distillation), each rank runs its own unwrapped teacher copy on its
    half of the batch, under DDP and under FSDP2: both ranks agree, and match 1 process × batch 8 in weights,
    losses and the logged task/distillation losses (averaged over the ranks like the Trainer's loss)."""
    reference = runs("python", *ADAMW, "--teacher")
    run = runs("torchrun", *ADAMW, "--teacher", *sharding)
    _assert_two_gloo_ranks(run)
    _assert_ranks_identical(run)
    _assert_matches_reference(run, reference)
    expected = torch.tensor(reference.dumps[0]["distill_losses"])
    assert expected.shape == (16, 3) and (expected[:, 1:] > 0).all()
    for dump in run.dumps.values():
        torch.testing.assert_close(torch.tensor(dump["distill_losses"]), expected, atol=1e-6, rtol=1e-5)
    plain = runs("python", *ADAMW)  # the teacher changed the result, so the match above is not trivial
    worst = max(
        (reference.dumps[0]["state_dict"][k] - v).abs().max().item() for k, v in plain.dumps[0]["state_dict"].items()
    )
    assert worst > 1000 * ATOL


def test_only_rank_zero_writes_the_slim_model(runs):
    """Rank 1 writes nothing (its own output folder is never created); rank 0's folder holds the slim model,
    and it reloads with the same outputs as the trained dense model."""
    run = runs("torchrun", *ADAMW)
    rank0, rank1 = run.output_dir / "rank0", run.output_dir / "rank1"
    assert not rank1.exists(), sorted(p.name for p in rank1.iterdir())
    assert run.dumps[1]["saved_files"] == [] and not run.dumps[1]["has_slim_model"]
    assert run.dumps[0]["has_slim_model"]
    assert sorted(p.name for p in rank0.iterdir()) == sorted(run.dumps[0]["saved_files"])
    assert {"config.json", "model.safetensors", "README.md", "modeling_oto.py"} <= set(run.dumps[0]["saved_files"])
    assert not [p for p in run.output_dir.iterdir() if p.name.startswith(".")]  # no staging folder left

    _assert_slim_computes(rank0, run.dumps[1]["state_dict"])  # rank 1's final weights


def _assert_slim_computes(folder: Path, trained: dict[str, torch.Tensor]) -> None:
    """The slim model in `folder` is smaller than the tiny BERT and gives its logits with the `trained` weights."""
    from transformers import AutoModelForSequenceClassification

    import hf_oto  # noqa: F401  (registers the slim classes)

    script = _script_module()
    dense = script.tiny_bert().eval()
    dense.load_state_dict(trained)
    slim = AutoModelForSequenceClassification.from_pretrained(folder).eval()
    assert sum(p.numel() for p in slim.parameters()) < sum(p.numel() for p in dense.parameters())
    input_ids = script.SyntheticPairs(n=8, seed=1).input_ids
    with torch.no_grad():
        expected = dense(input_ids=input_ids, attention_mask=torch.ones_like(input_ids)).logits
        actual = slim(input_ids=input_ids, attention_mask=torch.ones_like(input_ids)).logits
    torch.testing.assert_close(actual, expected, atol=1e-5, rtol=0)


def test_cpu_launch_without_process_group_is_refused(runs):
    """Without use_cpu=True accelerate sets up no gloo group on CPU: OTOTrainer refuses before training."""
    run = runs("torchrun", "--no_use_cpu", expect_success=False)
    assert run.returncode != 0
    assert "use_cpu=True" in run.log and "launched as 2 processes" in run.log
    assert run.dumps == {} and not run.output_dir.exists()


def _assert_fsdp2_sharded(run: Run) -> None:
    """Two gloo ranks that each held only their rows of every parameter (97 rows: 49 and 48)."""
    _assert_two_gloo_ranks(run)
    assert [run.dumps[r]["local_rows"] for r in (0, 1)] == [49, 48] and run.dumps[0]["rows"] == 97


@pytest.mark.parametrize(
    ("layout", "weights_file"),
    [((), "pytorch_model_fsdp.bin"), (("--state_dict_type", "SHARDED_STATE_DICT"), "pytorch_model_fsdp_0")],
    ids=["full-default", "sharded"],
)
def test_fsdp2_trains_saves_and_resumes_like_one_process(runs, layout, weights_file):
    """OTOTrainer under FSDP2 through accelerate (fsdp=True; the script lifts only accelerate's GPU-backend check):
    HSPG runs on the shards, the result equals 1 process × batch 8, rank 0 alone writes a slim model gathered
    from the shards that computes what was trained, and resuming the step-8 checkpoint (model weights in either
    checkpoint layout, per-rank HSPG state, scheduler) ends bit for bit where the uninterrupted run ended."""
    reference = runs("python", *ADAMW)
    run = runs("torchrun", *ADAMW, "--fsdp2", "--save_steps", "8", *layout)
    _assert_fsdp2_sharded(run)
    _assert_ranks_identical(run)
    _assert_matches_reference(run, reference)
    assert int(run.dumps[0]["zero_mask"].sum()) == 21  # exactly ⌊0.3 · 72⌋ groups

    assert run.dumps[0]["has_slim_model"] and not run.dumps[1]["has_slim_model"]
    assert run.dumps[1]["saved_files"] == []
    checkpoint = run.output_dir / "checkpoint-8"
    saved = {p.name for p in checkpoint.iterdir()}
    assert {"hspg_state_rank0.pt", "hspg_state_rank1.pt", "scheduler.pt", weights_file} <= saved
    _assert_slim_computes(run.output_dir, run.dumps[0]["state_dict"])

    resumed = runs("torchrun", *ADAMW, "--fsdp2", "--resume_from", str(checkpoint), *layout)
    _assert_fsdp2_sharded(resumed)
    assert torch.equal(resumed.dumps[0]["zero_mask"], run.dumps[0]["zero_mask"])
    for name, tensor in run.dumps[0]["state_dict"].items():
        assert torch.equal(resumed.dumps[0]["state_dict"][name], tensor), name


def test_fsdp2_bf16_trains_on_fp32_shards_and_saves_an_exact_slim_model(runs):
    """bf16 under FSDP2 is accelerate's `MixedPrecisionPolicy` (bf16 compute and gradient reduction; no autocast
    wrapper). HSPG steps the fp32 shards, reaches exactly ⌊0.3 · 72⌋ zero groups, and rank 0's slim model (fp32)
    computes what was trained. The run differs from the fp32 FSDP2 run, so bf16 was not silently dropped."""
    run = runs("torchrun", *ADAMW, "--fsdp2", "--bf16")
    _assert_fsdp2_sharded(run)
    assert all(dump["param_dtype"] == torch.float32 for dump in run.dumps.values())
    assert int(run.dumps[0]["zero_mask"].sum()) == 21
    fp32 = runs("torchrun", *ADAMW, "--fsdp2", "--save_steps", "8")  # shared with the checkpoint test
    worst = max((run.dumps[0]["state_dict"][k] - v).abs().max().item() for k, v in fp32.dumps[0]["state_dict"].items())
    assert worst > 1000 * ATOL
    assert run.dumps[0]["has_slim_model"] and run.dumps[1]["saved_files"] == []
    _assert_slim_computes(run.output_dir, run.dumps[0]["state_dict"])


def test_fsdp2_push_to_hub_commits_the_slim_model_gathered_from_the_shards(tmp_path):
    """push_to_hub under FSDP2 (hub_strategy 'end'), against the loopback Hub stand-in of tests/hub_stub.py: every
    rank calls trainer.push_to_hub(), every rank takes part in gathering, and one commit arrives from rank 0 with
    exactly the slim folder's files, byte for byte; its weights compute what was trained."""
    from hub_stub import FAKE_TOKEN, HubStub

    with HubStub() as hub:
        online = {"HF_ENDPOINT": hub.url, "HF_HUB_OFFLINE": "0", "HF_HUB_DISABLE_IMPLICIT_TOKEN": "1"}
        run = _launch("torchrun", tmp_path / "job", *ADAMW, "--fsdp2", "--push_with_token", FAKE_TOKEN, env=online)
    assert run.returncode == 0, run.log[-6000:]
    _assert_fsdp2_sharded(run)
    assert hub.unexpected == [] and hub.repos == ["tester/out"]
    (commit,) = hub.commits
    assert commit.repo_id == "tester/out" and commit.message == "End of training"
    saved = run.dumps[0]["saved_files"]
    assert run.dumps[1]["saved_files"] == [] and {"config.json", "model.safetensors", "README.md"} <= set(saved)
    assert set(commit.files) == set(saved)
    for name, content in commit.files.items():
        assert content == (run.output_dir / name).read_bytes(), name
    _assert_slim_computes(run.output_dir, run.dumps[0]["state_dict"])


@pytest.mark.parametrize(
    ("setting", "error", "message"),
    [
        ({"deepspeed": "ds_config.json"}, NotImplementedError, "does not run under DeepSpeed"),
        ({"fsdp_config": {"fsdp_version": 2}}, ValueError, "fsdp_config is set but fsdp is not"),
        ({"fsdp": True, "fsdp_config": {"version": 1}}, NotImplementedError, "FSDP2 only, not FSDP1"),
        ({"fsdp": True, "oto_save_slim": False}, NotImplementedError, "leave oto_save_slim=True"),
        (
            {"fsdp": True, "push_to_hub": True, "hub_strategy": "every_save", "hub_model_id": "me/x"},
            NotImplementedError,
            "hub_strategy='end'",
        ),
    ],
)
def test_unsupported_sharding_is_refused_in_one_line(tmp_path, setting, error, message):
    with pytest.raises(error, match=message) as raised:
        OTOTrainingArguments(output_dir=str(tmp_path), report_to="none", **setting)
    assert "\n" not in str(raised.value)


def test_fsdp_that_accelerate_leaves_off_on_cpu_is_refused(runs):
    """accelerate enables FSDP only on GPU-type backends: launched on 2 CPU ranks with fsdp=True (and accelerate's
    check left in place), the Trainer would train unsharded DDP without a word. OTOTrainer refuses before training."""
    run = runs("torchrun", "--fsdp2", "--keep_accelerate_gate", expect_success=False)
    assert run.returncode != 0
    assert "fsdp=True, but accelerate did not enable FSDP" in run.log
    assert run.dumps == {} and not (run.output_dir / "config.json").exists()
