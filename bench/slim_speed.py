"""Dense vs slim CPU inference latency on a BERT-base-shaped model with 50% of heads and neurons zeroed.

Prints the FLOPs ratio, the interleaved median latency of the dense group-sparse model and of the slim
model (batch 8 x seq 128 and batch 1 x seq 128, torch.inference_mode), the speedup and speedup / FLOPs
ratio, plus the wall time and peak-RSS increase of `slim_model` + `save_pretrained`.
Random init, no download. Run: python bench/slim_speed.py [--repeats 15]
"""

from __future__ import annotations

import argparse
import resource
import statistics
import tempfile
import time

import torch
from transformers import BertConfig, BertForSequenceClassification

import hf_oto
from hf_oto.groups import ATTENTION, FFN

# Heads kept per layer (sum 72 of 144 = 50%), deliberately uneven; FFN keeps the same per-layer fractions.
HEADS_KEPT = [10, 9, 8, 7, 6, 5, 7, 6, 5, 4, 3, 2]


def zero_half(model) -> hf_oto.GroupSet:
    groups = hf_oto.build_groups(model)
    generator = torch.Generator().manual_seed(0)
    zero = []
    for block, (start, _end) in zip(groups.blocks, groups.block_ranges()):
        keep_fraction = HEADS_KEPT[block.layer] / 12
        if block.structure == ATTENTION:
            keep = HEADS_KEPT[block.layer]
        else:
            assert block.structure == FFN
            keep = round(keep_fraction * block.num_groups)
        order = torch.randperm(block.num_groups, generator=generator)
        zero += (order[keep:] + start).tolist()
    groups.zero_(zero)
    return groups


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def current_rss_mb() -> float:
    with open("/proc/self/status") as status:
        line = next(line for line in status if line.startswith("VmRSS:"))
    return int(line.split()[1]) / 1024


def latency(model, inputs) -> float:
    start = time.perf_counter()
    model(**inputs)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=15)
    args = parser.parse_args()
    torch.manual_seed(0)
    dense = BertForSequenceClassification(BertConfig()).eval()
    groups = zero_half(dense)
    model_mb = sum(p.numel() * p.element_size() for p in dense.parameters()) / 2**20

    rss_before = current_rss_mb()
    start = time.perf_counter()
    slim, report = hf_oto.slim_model(dense, groups, seq_len=128)
    with tempfile.TemporaryDirectory() as folder:
        slim.save_pretrained(folder)
    slim_save_s = time.perf_counter() - start
    peak_increase = peak_rss_mb() - rss_before  # new peak above the resident size before slimming

    flops_ratio = report.dense.flops_per_token / report.slim.flops_per_token
    print(
        f"model: BERT-base shape, {report.dense.params:,} params ({model_mb:.0f} MB fp32), torch {torch.__version__}, "
        f"{torch.get_num_threads()} threads"
    )
    print(
        f"heads kept {sum(report.slim.heads)}/{sum(report.dense.heads)}, ffn kept {sum(report.slim.ffn)}/{sum(report.dense.ffn)}"
    )
    print(
        f"params kept {report.params_kept_ratio:.3f}, FLOPs/token @128 kept {report.flops_kept_ratio:.3f} "
        f"(dense/slim FLOPs ratio {flops_ratio:.2f}x)"
    )
    print(
        f"slim_model + save_pretrained: {slim_save_s:.2f} s wall, peak RSS increase {peak_increase:.0f} MB "
        f"= {peak_increase / model_mb:.2f}x model size (max output diff {report.max_output_diff:.2e})"
    )

    for batch in (8, 1):
        inputs = {
            "input_ids": torch.randint(0, 30522, (batch, 128)),
            "attention_mask": torch.ones(batch, 128, dtype=torch.long),
        }
        dense_times, slim_times = [], []
        with torch.inference_mode():
            latency(dense, inputs), latency(slim, inputs)  # warm-up
            for _ in range(args.repeats):
                dense_times.append(latency(dense, inputs))
                slim_times.append(latency(slim, inputs))
        d, s = statistics.median(dense_times), statistics.median(slim_times)
        speedup = d / s
        print(
            f"batch {batch} x seq 128: dense {d * 1e3:.1f} ms, slim {s * 1e3:.1f} ms, speedup {speedup:.2f}x, "
            f"speedup / FLOPs ratio {speedup / flops_ratio:.2f}"
        )


if __name__ == "__main__":
    main()
