"""After an FSDP2 OTOTrainer run of tests/ddp_train_script.py: reload the slim folder in this fresh process and
compare its logits with the trained (gathered) weights that rank 0 dumped. Prints one line; exit status 1 if the
slim model differs by more than 1e-5 or is not smaller.

Run: python bench/fsdp_reload_check.py OUTPUT_DIR DUMP_DIR   (GPU step 4c of bench/gpu_suite.sh)
"""

from __future__ import annotations

import importlib.util
import os
import sys

import torch
from transformers import AutoModelForSequenceClassification

import hf_oto  # noqa: F401  (registers the slim classes)

SCRIPT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "ddp_train_script.py")


def main(output_dir: str, dump_dir: str) -> int:
    spec = importlib.util.spec_from_file_location("ddp_train_script", SCRIPT)
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    dump = torch.load(os.path.join(dump_dir, "rank0.pt"), weights_only=False)
    dense = script.tiny_bert().eval()
    dense.load_state_dict(dump["state_dict"])
    slim = AutoModelForSequenceClassification.from_pretrained(output_dir).eval()
    ids = script.SyntheticPairs(n=8, seed=1).input_ids
    with torch.no_grad():
        difference = (slim(input_ids=ids).logits - dense(input_ids=ids).logits).abs().max().item()
    kept = sum(p.numel() for p in slim.parameters()) / sum(p.numel() for p in dense.parameters())
    print(
        f"fsdp2 world size {dump['trainer_world_size']}: {int(dump['zero_mask'].sum())} zero groups, "
        f"local rows {dump['local_rows']} of {dump['rows']}, slim reload max |logit diff| {difference:.2e}, "
        f"params kept {kept:.3f}"
    )
    return 0 if difference <= 1e-5 and kept < 1.0 else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1], sys.argv[2]))
