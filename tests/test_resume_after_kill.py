"""Resume after a real kill (issue 15 C): a training process with dropout on is killed with SIGKILL after
a checkpoint, resumed from that checkpoint in a fresh process, and ends with the weights and zero masks of
an uninterrupted run, bit for bit."""

import os
import signal
import subprocess
import sys
import time

import torch

HERE = os.path.dirname(os.path.abspath(__file__))
SCRIPT = os.path.join(HERE, "resume_train_script.py")
KILL_AFTER_CHECKPOINT = 12  # of 32 steps: mid-epoch, and in the middle of HSPG's projection schedule


def start(output_dir, result, *extra) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": os.path.dirname(HERE), "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    return subprocess.Popen(
        [sys.executable, SCRIPT, str(output_dir), str(result), *extra],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )


def finish(process: subprocess.Popen) -> None:
    _, stderr = process.communicate(timeout=300)
    assert process.returncode == 0, stderr[-3000:]


def test_sigkill_after_a_checkpoint_then_resume_is_bit_exact(tmp_path):
    uninterrupted = start(tmp_path / "full", tmp_path / "full.pt")
    victim = start(tmp_path / "run", tmp_path / "never.pt", "--slow_after_save")
    marker = tmp_path / "run" / f"saved-{KILL_AFTER_CHECKPOINT}"
    deadline = time.monotonic() + 240
    while not marker.exists():
        assert victim.poll() is None, victim.communicate()[1][-3000:]
        assert time.monotonic() < deadline, "no checkpoint was written"
        time.sleep(0.05)
    victim.send_signal(signal.SIGKILL)
    victim.wait(timeout=60)
    assert victim.returncode == -signal.SIGKILL
    assert not (tmp_path / "never.pt").exists()  # it really died before the end

    resumed = start(
        tmp_path / "run",
        tmp_path / "resumed.pt",
        "--resume",
        str(tmp_path / "run" / f"checkpoint-{KILL_AFTER_CHECKPOINT}"),
    )
    finish(resumed)
    finish(uninterrupted)

    full = torch.load(tmp_path / "full.pt", weights_only=True)
    again = torch.load(tmp_path / "resumed.pt", weights_only=True)
    assert full["weights"].keys() == again["weights"].keys()
    differ = [name for name, tensor in full["weights"].items() if not torch.equal(tensor, again["weights"][name])]
    assert not differ, f"{len(differ)} tensors differ, e.g. {differ[:3]}"
    assert torch.equal(full["zero_mask"], again["zero_mask"]) and full["zero_mask"].any()
