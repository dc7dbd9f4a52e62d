"""HSPG on FSDP2-sharded parameters (2 gloo ranks under torchrun) equals one unsharded process."""

from __future__ import annotations

import math
import os
import subprocess
import sys

import pytest
import torch
from fsdp_hspg_script import FAMILIES, STEPS, batches, make_model, reference_run

HERE = os.path.dirname(os.path.abspath(__file__))


@pytest.mark.parametrize("family", ["bert", "llama"])
def test_sharded_hspg_equals_one_unsharded_process(family, tmp_path, one_thread):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": os.path.dirname(HERE)}
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]
    command += [os.path.join(HERE, "fsdp_hspg_script.py"), family, str(tmp_path)]
    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-4000:]
    sharded = torch.load(tmp_path / f"{family}.pt", weights_only=True)
    weights, mask = reference_run(family)

    assert int(mask.sum()) == sharded["target"] == math.floor(0.5 * len(mask))
    assert torch.equal(sharded["zero_mask"], mask)  # the same groups, exactly ⌊0.5·N⌋ of them
    assert torch.equal(sharded["uninterrupted_mask"], mask)
    assert sharded["report_zero_groups"] == sharded["report_exactly_zero"] == sharded["target"]
    for name, expected in weights.items():
        torch.testing.assert_close(sharded["weights"][name], expected, rtol=0, atol=1e-5, msg=name)
        # resuming from the per-rank sharded state changes nothing
        assert torch.equal(sharded["weights"][name], sharded["uninterrupted"][name]), name
    assert STEPS == 40

    # the slim save's building block: rank 0's gathered copy holds exactly the trained weights, and the slim model
    # of that copy (saved, reloaded here in another process) computes what one unsharded process trained
    assert sharded["gathered_class"] == FAMILIES[family]
    assert sharded["gathered"].keys() == sharded["weights"].keys()
    for name, tensor in sharded["gathered"].items():
        assert torch.equal(tensor, sharded["weights"][name]), name
    from hf_oto import load_slim

    slim = load_slim(tmp_path / f"{family}-slim").eval()
    reference = make_model(family).eval()
    # buffers the state dict leaves out (BERT's position ids, LLaMA's rotary frequencies) are the model's own,
    # although the copy was built without initialization
    unsaved = {name: b for name, b in reference.named_buffers() if name not in reference.state_dict()}
    assert unsaved and unsaved.keys() <= sharded["gathered_buffers"].keys()
    for name, buffer in unsaved.items():
        assert torch.equal(sharded["gathered_buffers"][name], buffer), name
    reference.load_state_dict(weights)
    ids = batches(family)[0][:4]
    with torch.no_grad():
        torch.testing.assert_close(slim(input_ids=ids).logits, reference(input_ids=ids).logits, rtol=1e-4, atol=1e-4)
    kept = slim.config.oto_num_attention_heads if family == "bert" else slim.config.oto_num_key_value_heads
    assert sum(kept) + sum(slim.config.oto_intermediate_sizes) == len(mask) - sharded["target"]


def test_gather_full_model_refuses_a_model_that_is_not_sharded():
    from hf_oto import gather_full_model

    with pytest.raises(ValueError, match="expects a model sharded with fully_shard"):
        gather_full_model(make_model("bert"))
