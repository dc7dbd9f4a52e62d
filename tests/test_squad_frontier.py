"""bench/squad_frontier.sh orchestration, with a stand-in for python that records its arguments and writes (or
fails to write) results.json: named runs, teacher waiting and skipping, thread count, failure markers."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parent.parent / "bench" / "squad_frontier.sh"
# Called as `bash stand_in.sh quality_squad.py ARGS...`: appends "OMP_NUM_THREADS ARGS" to $CALLS, then writes
# OUTPUT_DIR/results.json unless the run's seed is $FAIL_SEED (exit 1) or $EMPTY_SEED (exit 0, no results).
STAND_IN = """
echo "$OMP_NUM_THREADS $*" >> "$CALLS"
shift
while [ $# -gt 0 ]; do
  case $1 in --output_dir) out=$2 ;; --seed) seed=$2 ;; esac
  shift
done
# a failure marker must be newer than the script's start stamp: file times are as coarse as a kernel tick
case $seed in "${FAIL_SEED:-}" | "${EMPTY_SEED:-}") sleep 0.1 ;; esac
[ "$seed" = "${FAIL_SEED:-}" ] && exit 1
[ "$seed" = "${EMPTY_SEED:-}" ] && exit 0
mkdir -p "$out" && echo '{"rows": []}' > "$out/results.json"
"""


def frontier(tmp_path: Path, *names: str, **env: str) -> subprocess.CompletedProcess:
    stand_in = tmp_path / "stand_in.sh"
    stand_in.write_text(STAND_IN)
    environment = {**os.environ, "PYTHON": f"bash {stand_in}", "CALLS": str(tmp_path / "calls.txt"), **env}
    return subprocess.run(
        ["bash", str(SCRIPT), str(tmp_path / "runs"), *names],
        env=environment,
        capture_output=True,
        text=True,
        timeout=60,
    )


def calls(tmp_path: Path) -> list[list[str]]:
    path = tmp_path / "calls.txt"
    return [line.split() for line in path.read_text().splitlines()] if path.exists() else []


def test_named_runs_run_in_order_with_their_teacher_and_thread_count(tmp_path):
    result = frontier(tmp_path, "dense2", "kd05_2", SQUAD_THREADS="3", SQUAD_RESULTS_TO=str(tmp_path / "copies"))
    assert result.returncode == 0, result.stderr
    dense, kd = calls(tmp_path)
    assert dense[0] == kd[0] == "3"  # training threads; latency stays at --latency_threads 1
    assert dense[-1] == "--sparsities" and "--skip_dense" not in dense
    assert dense[dense.index("--seed") + 1] == kd[kd.index("--seed") + 1] == "2"
    assert kd[kd.index("--teacher_dir") + 1] == str(tmp_path / "runs" / "dense2" / "dense")
    assert kd[kd.index("--sparsities") + 1] == "0.5" and "--distill" in kd
    assert sorted(p.name for p in (tmp_path / "copies").iterdir()) == ["dense2.json", "kd05_2.json"]
    assert json.loads((tmp_path / "copies" / "kd05_2.json").read_text()) == {"rows": []}

    again = frontier(tmp_path, "dense2", "kd05_2")  # done runs are skipped, not repeated
    assert again.stdout.splitlines() == ["skip dense2 (done)", "skip kd05_2 (done)"]
    assert len(calls(tmp_path)) == 2


@pytest.mark.parametrize("failure", ["FAIL_SEED", "EMPTY_SEED"])
def test_a_failed_teacher_leaves_a_marker_and_its_student_is_skipped(tmp_path, failure):
    result = frontier(tmp_path, "dense2", "kd05_2", **{failure: "2"})
    assert (tmp_path / "runs" / "dense2.failed").exists()
    assert result.stdout.splitlines()[-1] == "skip kd05_2 (teacher dense2 failed)"
    assert len(calls(tmp_path)) == 1  # the KD run never started


def test_an_unknown_run_name_stops_before_anything_runs(tmp_path):
    result = frontier(tmp_path, "dense2", "dense7")
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "unknown stream or run 'dense7': use A, B, TUNE_A, TUNE_B, TUNE05, ALL or run names"
    ]
    assert calls(tmp_path) == [] and not (tmp_path / "runs").exists()
