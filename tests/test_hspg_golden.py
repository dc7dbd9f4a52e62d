"""HSPG behaviour is frozen: fixed-seed trajectories must match the recording bit for bit (see hspg_golden.py)."""

from __future__ import annotations

import json

import pytest
from hspg_golden import CASES, DISTRIBUTED_CASES, GOLDEN_PATH, environment, run_case, run_distributed

with open(GOLDEN_PATH) as _handle:
    GOLDEN = json.load(_handle)

pytestmark = pytest.mark.skipif(
    GOLDEN["environment"] != environment(),
    reason=f"golden trajectories were recorded on {GOLDEN['environment']}, this is {environment()}",
)


@pytest.mark.parametrize("name", sorted(CASES))
def test_single_process_trajectory_is_unchanged(name):
    assert run_case(name) == GOLDEN["single"][name]


def test_two_process_gloo_trajectories_are_unchanged():
    rank0, rank1 = run_distributed(world=2)
    assert set(rank0) == set(DISTRIBUTED_CASES)
    for name in DISTRIBUTED_CASES:
        assert rank0[name] == GOLDEN["distributed_rank0"][name], name
        # every rank ends with the same weights and zero masks (DDP semantics)
        assert rank1[name]["weights_sha256"] == rank0[name]["weights_sha256"], name
        assert rank1[name]["zero_mask"] == rank0[name]["zero_mask"], name
