#!/usr/bin/env python
"""Compress a LLaMA-family causal language model with OTO on a plain text file; perplexity before and after.

In the style of transformers' ``examples/pytorch/language-modeling/run_clm.py``: the text is tokenized,
concatenated and cut into blocks of ``--block_size`` tokens. `OTOTrainer` trains on them while driving whole
KV groups (with their query heads) and gated-MLP neurons to exactly zero, and ``save_model()`` writes the
slim model. Perplexity on ``--validation_file`` is measured for the starting model, the trained group-sparse
model, and the slim model reloaded from disk (the last two are equal); all go to ``eval_results.json``.

Example::

    python examples/run_clm.py --model_name_or_path ./smollm2 --train_file train.txt --validation_file val.txt \\
        --block_size 128 --do_train --do_eval --output_dir out --oto_target_group_sparsity 0.3 --max_steps 300
"""

from __future__ import annotations

import logging
import math
import os
import sys
from dataclasses import dataclass, field
from itertools import chain

import datasets
import torch
import transformers
from transformers import (
    AutoConfig,
    AutoModelForCausalLM,
    AutoTokenizer,
    HfArgumentParser,
    default_data_collator,
    set_seed,
)

import hf_oto
from hf_oto import OTOTrainer, OTOTrainingArguments

logger = logging.getLogger(__name__)


@dataclass
class ModelArguments:
    """Which model and tokenizer to start from."""

    model_name_or_path: str | None = field(default=None, metadata={"help": "Pretrained model folder or Hub id."})
    config_name: str | None = field(default=None, metadata={"help": "Config to train from scratch instead."})
    tokenizer_name: str | None = field(default=None, metadata={"help": "Tokenizer folder or id."})


@dataclass
class DataArguments:
    """Plain text files, one document or paragraph per line."""

    train_file: str | None = field(default=None, metadata={"help": "Training text file (.txt)."})
    validation_file: str | None = field(default=None, metadata={"help": "Evaluation text file (.txt)."})
    block_size: int = field(default=128, metadata={"help": "Tokens per training block."})
    max_train_samples: int | None = field(default=None, metadata={"help": "Keep only the first N blocks."})
    max_eval_samples: int | None = field(default=None, metadata={"help": "Keep only the first N evaluation blocks."})

    def __post_init__(self) -> None:
        for path in (self.train_file, self.validation_file):
            if path is not None and not os.path.isfile(path):
                raise ValueError(f"data file {path} does not exist.")
        if self.train_file is None and self.validation_file is None:
            raise ValueError("Give --train_file and/or --validation_file (plain text).")


@torch.no_grad()
def perplexity(model, dataset, batch_size: int) -> float:
    """exp of the mean next-token loss over `dataset` blocks (every block has the same length)."""
    model.eval()
    device = next(model.parameters()).device
    total, count = 0.0, 0
    for begin in range(0, len(dataset), batch_size):
        ids = torch.tensor(dataset[begin : begin + batch_size]["input_ids"], device=device)
        loss = model(input_ids=ids, labels=ids).loss
        tokens = ids.numel() - ids.shape[0]
        total += loss.item() * tokens
        count += tokens
    return math.exp(total / max(count, 1))


def main(argv: list[str] | None = None) -> dict:
    parser = HfArgumentParser((ModelArguments, DataArguments, OTOTrainingArguments))
    model_args, data_args, training_args = parser.parse_args_into_dataclasses(
        args=sys.argv[1:] if argv is None else argv
    )
    logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s: %(message)s", level=logging.INFO)
    transformers.utils.logging.set_verbosity_warning()
    set_seed(training_args.seed)

    files = {k: v for k, v in (("train", data_args.train_file), ("validation", data_args.validation_file)) if v}
    raw = datasets.load_dataset("text", data_files=files)
    tokenizer_source = model_args.tokenizer_name or model_args.model_name_or_path
    if tokenizer_source is None:
        raise ValueError("--tokenizer_name is required when the model is built from --config_name.")
    tokenizer = AutoTokenizer.from_pretrained(tokenizer_source)
    config = AutoConfig.from_pretrained(model_args.config_name or model_args.model_name_or_path)
    hf_oto.get_spec(config)  # fail early, listing the supported families
    if model_args.model_name_or_path:
        model = AutoModelForCausalLM.from_pretrained(model_args.model_name_or_path, config=config, dtype=torch.float32)
    else:
        model = AutoModelForCausalLM.from_config(config)

    block = data_args.block_size

    def tokenize(batch):
        return tokenizer([t for t in batch["text"] if t.strip()])

    def group(batch):
        ids = list(chain.from_iterable(batch["input_ids"]))
        usable = (len(ids) // block) * block
        return {"input_ids": [ids[i : i + block] for i in range(0, usable, block)]}

    with training_args.main_process_first(desc="tokenization"):
        tokenized = raw.map(tokenize, batched=True, remove_columns=["text"])
        tokenized = tokenized.map(
            group, batched=True, remove_columns=tokenized["train" if "train" in raw else "validation"].column_names
        )
    tokenized = tokenized.map(lambda b: {"labels": b["input_ids"]}, batched=True)

    def limited(split: str, limit: int | None):
        dataset = tokenized[split]
        if len(dataset) == 0:
            raise ValueError(f"{files[split]} holds fewer than --block_size={block} tokens.")
        return dataset.select(range(min(limit, len(dataset)))) if limit else dataset

    train_dataset = limited("train", data_args.max_train_samples) if training_args.do_train else None
    eval_dataset = limited("validation", data_args.max_eval_samples) if training_args.do_eval else None

    metrics: dict = {}
    batch_size = training_args.per_device_eval_batch_size
    if eval_dataset is not None:
        metrics["perplexity_before"] = perplexity(model.to(training_args.device), eval_dataset, batch_size)

    trainer = OTOTrainer(
        model=model,
        args=training_args,
        train_dataset=train_dataset,
        processing_class=tokenizer,
        data_collator=default_data_collator,
    )
    if training_args.do_train:
        result = trainer.train(resume_from_checkpoint=training_args.resume_from_checkpoint)
        trainer.save_model()
        trainer.save_metrics("train", result.metrics)
        report = getattr(trainer, "slim_report", None)
        if report is not None:
            logger.info("Slim model:\n%s", report)
            metrics.update(report.metrics())
    if eval_dataset is not None and training_args.do_train and trainer.is_world_process_zero():
        metrics["perplexity_group_sparse"] = perplexity(trainer.model, eval_dataset, batch_size)
        # `import hf_oto` registers the slim classes: the Auto class loads them, strictly
        slim = AutoModelForCausalLM.from_pretrained(training_args.output_dir).to(training_args.device)
        metrics["perplexity_slim"] = perplexity(slim, eval_dataset, batch_size)
    if metrics and trainer.is_world_process_zero():
        trainer.log_metrics("eval", metrics)
        trainer.save_metrics("eval", metrics)
    trainer.accelerator.end_training()  # destroys the process group: gloo may abort at exit otherwise (pytorch#190489)
    return metrics


if __name__ == "__main__":
    main()
