#!/usr/bin/env python
"""Compress a sequence classifier (single sentences or sentence pairs) with OTO, in one training run.

In the style of transformers' ``examples/pytorch/text-classification/run_glue.py``, with `OTOTrainingArguments`
and `OTOTrainer` in place of `TrainingArguments` and `Trainer`: training drives whole attention heads and FFN
neurons to exactly zero, and ``save_model()`` writes the physically slimmer model to ``--output_dir``.

Data: ``--task_name sst2`` (GLUE through `datasets`, needs internet) or local csv / tsv / json files with
``--train_file`` / ``--validation_file``. Text columns are ``--sentence1_column`` (and ``--sentence2_column``
for pairs) and labels ``--label_column``; when omitted they are guessed from the header (``sentence``,
``text``, ``content``, ``sentence1``/``sentence2``, ``question``/``sentence``...). A ``.tsv`` file is read
tab-separated with quoting off (``csv.QUOTE_NONE``), as GLUE's SST-2 files need.

Scoring: accuracy and F1 (binary for two classes, macro otherwise) with the offline metric module in
`hf_oto.metrics`, for the trained group-sparse model (``eval_*``) and for the slim model reloaded from disk
(``slim_*``); both are written to ``eval_results.json`` with params and FLOPs dense vs slim.

Example (offline, SST-2 tsv)::

    python examples/run_glue.py --model_name_or_path ./minilm --train_file sst2/train.tsv \\
        --validation_file sst2/dev.tsv --do_train --do_eval --max_seq_length 64 --output_dir out \\
        --oto_target_group_sparsity 0.3 --max_steps 1000 --per_device_train_batch_size 32
"""

from __future__ import annotations

import csv
import logging
import os
import sys
from dataclasses import dataclass, field

import datasets
import numpy as np
import torch
import transformers
from transformers import (
    AutoConfig,
    AutoModelForSequenceClassification,
    AutoTokenizer,
    DataCollatorWithPadding,
    HfArgumentParser,
    set_seed,
)

import hf_oto
from hf_oto import OTOTrainer, OTOTrainingArguments
from hf_oto.metrics import load_accuracy_f1_metric

logger = logging.getLogger(__name__)

GLUE_TASK_KEYS = {
    "cola": ("sentence", None),
    "mnli": ("premise", "hypothesis"),
    "mrpc": ("sentence1", "sentence2"),
    "qnli": ("question", "sentence"),
    "qqp": ("question1", "question2"),
    "rte": ("sentence1", "sentence2"),
    "sst2": ("sentence", None),
    "wnli": ("sentence1", "sentence2"),
}
_TEXT_PAIRS = (
    ("sentence1", "sentence2"),
    ("premise", "hypothesis"),
    ("question1", "question2"),
    ("question", "sentence"),
)
_TEXT_SINGLE = ("sentence", "text", "content", "review", "document")


@dataclass
class ModelArguments:
    """Which model and tokenizer to start from."""

    model_name_or_path: str | None = field(
        default=None, metadata={"help": "Pretrained model folder or Hub id. Omit to train from --config_name."}
    )
    config_name: str | None = field(
        default=None,
        metadata={"help": "Config folder or id; without --model_name_or_path the model starts from scratch."},
    )
    tokenizer_name: str | None = field(default=None, metadata={"help": "Tokenizer folder or id."})
    cache_dir: str | None = field(default=None, metadata={"help": "Where downloaded models and datasets are stored."})


@dataclass
class DataArguments:
    """Which data to train and evaluate on, and which columns hold the text and the label."""

    task_name: str | None = field(default=None, metadata={"help": f"A GLUE task: {', '.join(GLUE_TASK_KEYS)}."})
    train_file: str | None = field(default=None, metadata={"help": "Local csv, tsv or json training file."})
    validation_file: str | None = field(default=None, metadata={"help": "Local csv, tsv or json evaluation file."})
    sentence1_column: str | None = field(default=None, metadata={"help": "Column of the (first) text."})
    sentence2_column: str | None = field(default=None, metadata={"help": "Column of the second text, for pairs."})
    label_column: str = field(default="label", metadata={"help": "Column of the label."})
    max_seq_length: int = field(default=128, metadata={"help": "Longer inputs are truncated."})
    max_train_samples: int | None = field(default=None, metadata={"help": "Keep only the first N training rows."})
    max_eval_samples: int | None = field(default=None, metadata={"help": "Keep only the first N evaluation rows."})

    def __post_init__(self) -> None:
        if self.task_name is not None:
            self.task_name = self.task_name.lower()
            if self.task_name == "stsb":
                raise ValueError("stsb is a regression task; this example covers classification only.")
            if self.task_name not in GLUE_TASK_KEYS:
                raise ValueError(f"unknown --task_name {self.task_name!r}; choose one of {', '.join(GLUE_TASK_KEYS)}.")
        elif self.train_file is None and self.validation_file is None:
            raise ValueError("Give --task_name, or local files via --train_file/--validation_file.")


def read_local_files(data_args: DataArguments, cache_dir: str | None) -> datasets.DatasetDict:
    """Local csv / tsv / json files as a DatasetDict with 'train' and/or 'validation'."""
    files = {}
    if data_args.train_file:
        files["train"] = data_args.train_file
    if data_args.validation_file:
        files["validation"] = data_args.validation_file
    extensions = {os.path.splitext(path)[1].lower() for path in files.values()}
    if len(extensions) != 1:
        raise ValueError(f"--train_file and --validation_file must have the same extension, got {sorted(extensions)}.")
    extension = extensions.pop()
    for path in files.values():
        if not os.path.isfile(path):
            raise ValueError(f"data file {path} does not exist.")
    if extension == ".tsv":
        return datasets.load_dataset(
            "csv", data_files=files, delimiter="\t", quoting=csv.QUOTE_NONE, cache_dir=cache_dir
        )
    if extension == ".csv":
        return datasets.load_dataset("csv", data_files=files, cache_dir=cache_dir)
    if extension in (".json", ".jsonl"):
        return datasets.load_dataset("json", data_files=files, cache_dir=cache_dir)
    raise ValueError(f"unsupported data file extension {extension!r}: use .csv, .tsv, .json or .jsonl.")


def text_columns(data_args: DataArguments, columns: list[str]) -> tuple[str, str | None]:
    """The (first, second-or-None) text columns: given, from the GLUE task, or guessed from the header."""
    if data_args.sentence1_column:
        for name in (data_args.sentence1_column, data_args.sentence2_column):
            if name is not None and name not in columns:
                raise ValueError(f"column {name!r} is not in the data (columns: {columns}).")
        return data_args.sentence1_column, data_args.sentence2_column
    if data_args.task_name:
        return GLUE_TASK_KEYS[data_args.task_name]
    for first, second in _TEXT_PAIRS:
        if first in columns and second in columns:
            return first, second
    for name in _TEXT_SINGLE:
        if name in columns:
            return name, None
    others = [c for c in columns if c not in (data_args.label_column, "idx", "id")]
    if not others:
        raise ValueError(f"no text column found in {columns}; pass --sentence1_column.")
    return others[0], (others[1] if len(others) > 1 else None)


@torch.no_grad()
def predict_classes(model, dataset, collator, batch_size: int) -> np.ndarray:
    """Argmax class of `model` over a tokenized dataset, in batches, without a Trainer."""
    model.eval()
    device = next(model.parameters()).device
    names = [c for c in dataset.column_names if c in ("input_ids", "attention_mask", "token_type_ids")]
    predictions = []
    for begin in range(0, len(dataset), batch_size):
        batch = collator(
            [{n: row[n] for n in names} for row in dataset.select(range(begin, min(begin + batch_size, len(dataset))))]
        )
        logits = model(**{k: v.to(device) for k, v in batch.items()}).logits
        predictions.append(logits.argmax(-1).cpu().numpy())
    return np.concatenate(predictions)


def main(argv: list[str] | None = None) -> dict:
    parser = HfArgumentParser((ModelArguments, DataArguments, OTOTrainingArguments))
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) == 1 and argv[0].endswith((".json", ".yaml", ".yml")):
        loader = parser.parse_json_file if argv[0].endswith(".json") else parser.parse_yaml_file
        model_args, data_args, training_args = loader(os.path.abspath(argv[0]))
    else:
        model_args, data_args, training_args = parser.parse_args_into_dataclasses(args=argv)

    logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s: %(message)s", level=logging.INFO)
    transformers.utils.logging.set_verbosity_warning()
    set_seed(training_args.seed)

    if data_args.task_name is not None:
        raw = datasets.load_dataset("nyu-mll/glue", data_args.task_name, cache_dir=model_args.cache_dir)
        if "validation" not in raw and "validation_matched" in raw:
            raw["validation"] = raw["validation_matched"]
    else:
        raw = read_local_files(data_args, model_args.cache_dir)
    first_split = raw["train"] if "train" in raw else raw["validation"]
    if data_args.label_column not in first_split.column_names:
        raise ValueError(f"label column {data_args.label_column!r} is not in the data ({first_split.column_names}).")
    sentence1, sentence2 = text_columns(data_args, first_split.column_names)

    label_feature = first_split.features[data_args.label_column]
    if isinstance(label_feature, datasets.ClassLabel):
        label_list = list(label_feature.names)
        label_to_id = {i: i for i in range(len(label_list))}
    else:
        label_list = sorted({v for split in raw.values() for v in split[data_args.label_column]}, key=str)
        label_to_id = {v: i for i, v in enumerate(label_list)}

    if model_args.model_name_or_path is None and model_args.config_name is None:
        raise ValueError("Give --model_name_or_path, or --config_name and --tokenizer_name to train from scratch.")
    tokenizer_source = model_args.tokenizer_name or model_args.model_name_or_path
    if tokenizer_source is None:
        raise ValueError("--tokenizer_name is required when the model is built from --config_name.")
    tokenizer = AutoTokenizer.from_pretrained(tokenizer_source, cache_dir=model_args.cache_dir)
    config = AutoConfig.from_pretrained(
        model_args.config_name or model_args.model_name_or_path,
        num_labels=len(label_list),
        id2label={i: str(v) for i, v in enumerate(label_list)},
        label2id={str(v): i for i, v in enumerate(label_list)},
        cache_dir=model_args.cache_dir,
    )
    hf_oto.get_spec(config)  # fail early, listing the supported families
    if model_args.model_name_or_path:
        model = AutoModelForSequenceClassification.from_pretrained(
            model_args.model_name_or_path, config=config, cache_dir=model_args.cache_dir
        )
    else:
        model = AutoModelForSequenceClassification.from_config(config)

    def tokenize(batch):
        texts = (batch[sentence1],) if sentence2 is None else (batch[sentence1], batch[sentence2])
        encoded = tokenizer(
            *[[str(t) for t in column] for column in texts], truncation=True, max_length=data_args.max_seq_length
        )
        encoded["labels"] = [label_to_id[v] for v in batch[data_args.label_column]]
        return encoded

    def prepare(split: str, limit: int | None):
        dataset = raw[split]
        if limit is not None:
            dataset = dataset.select(range(min(limit, len(dataset))))
        with training_args.main_process_first(desc=f"{split} tokenization"):
            return dataset.map(tokenize, batched=True, remove_columns=dataset.column_names, desc=f"Tokenizing {split}")

    train_dataset = prepare("train", data_args.max_train_samples) if training_args.do_train else None
    eval_dataset = prepare("validation", data_args.max_eval_samples) if training_args.do_eval else None

    metric = load_accuracy_f1_metric()
    average = "binary" if len(label_list) == 2 else "macro"

    def compute_metrics(prediction: transformers.EvalPrediction) -> dict:
        logits = prediction.predictions[0] if isinstance(prediction.predictions, tuple) else prediction.predictions
        return metric.compute(predictions=np.argmax(logits, axis=-1), references=prediction.label_ids, average=average)

    collator = DataCollatorWithPadding(tokenizer)
    trainer = OTOTrainer(
        model=model,
        args=training_args,
        train_dataset=train_dataset,
        eval_dataset=eval_dataset,
        processing_class=tokenizer,
        data_collator=collator,
        compute_metrics=compute_metrics,
    )

    metrics: dict = {}
    if training_args.do_train:
        result = trainer.train(resume_from_checkpoint=training_args.resume_from_checkpoint)
        trainer.save_model()
        trainer.log_metrics("train", result.metrics)
        trainer.save_metrics("train", result.metrics)
        trainer.save_state()
        report = getattr(trainer, "slim_report", None)
        if report is not None:
            logger.info("Slim model:\n%s", report)
            metrics.update(report.metrics())

    if training_args.do_eval:
        metrics.update(trainer.evaluate(eval_dataset))
        metrics["eval_samples"] = len(eval_dataset)
        if training_args.do_train and trainer.is_world_process_zero():
            # `import hf_oto` registers the slim classes: the Auto class loads them, strictly
            slim = AutoModelForSequenceClassification.from_pretrained(training_args.output_dir).to(training_args.device)
            predictions = predict_classes(slim, eval_dataset, collator, training_args.per_device_eval_batch_size)
            slim_scores = metric.compute(predictions=predictions, references=eval_dataset["labels"], average=average)
            metrics.update({f"slim_{key}": value for key, value in slim_scores.items()})

    if metrics and trainer.is_world_process_zero():
        trainer.log_metrics("eval", metrics)
        trainer.save_metrics("eval", metrics)
    trainer.accelerator.end_training()  # destroys the process group: gloo may abort at exit otherwise (pytorch#190489)
    return metrics


if __name__ == "__main__":
    main()
