"""Dense vs slim CPU speedup of saved models at several thread counts, in repeated rounds.

The quality benches time dense against slim on one thread count, once, right after training. This script asks
whether the ratio depends on the thread count, and how much it moves between rounds on the same machine: for
each round and thread count, the interleaved median latency (`quality_common.interleaved_latency`) of the dense
folder against each slim folder, on random token ids (timing only; attention over the full length).
Run: python bench/thread_latency.py --dense RUN/dense --slim RUN/oto_0.5 RUN2/oto_0.7 [--threads 1 2] [--rounds 2]
"""

from __future__ import annotations

import argparse
import json

import torch
from quality_common import interleaved_latency
from transformers import AutoModelForQuestionAnswering

import hf_oto  # noqa: F401  (registers the slim classes with the Auto classes)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dense", required=True, help="dense model folder")
    parser.add_argument("--slim", nargs="+", required=True, help="slim model folders (hf_oto output)")
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--seq", type=int, default=256)
    args = parser.parse_args()

    dense = AutoModelForQuestionAnswering.from_pretrained(args.dense)
    slims = {path: AutoModelForQuestionAnswering.from_pretrained(path) for path in args.slim}
    generator = torch.Generator().manual_seed(0)
    shape = (args.batch, args.seq)
    inputs = {
        "input_ids": torch.randint(1000, dense.config.vocab_size, shape, generator=generator),
        "attention_mask": torch.ones(shape, dtype=torch.long),
    }
    for round_index in range(args.rounds):
        for threads in args.threads:
            torch.set_num_threads(threads)
            for path, slim in slims.items():
                dense_s, slim_s = interleaved_latency(dense, slim, inputs)
                row = {"round": round_index, "threads": threads, "slim": path, "dense_ms": round(dense_s * 1e3, 1)}
                row.update(slim_ms=round(slim_s * 1e3, 1), speedup=round(dense_s / slim_s, 3))
                print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main()
