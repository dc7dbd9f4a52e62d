#!/usr/bin/env python
"""Compress a question-answering model on SQuAD v1.1 with OTO, in one training run, and score it.

In the style of transformers' ``examples/pytorch/question-answering/run_qa.py``, with two class names
changed: `OTOTrainingArguments` and `OTOTrainer` train the model and drive whole attention heads and FFN
neurons to exactly zero; ``save_model()`` writes the physically slimmer model to ``--output_dir``.

Data: ``--dataset_name squad`` (through `datasets`, needs internet) or local SQuAD v1.1 JSON files with
``--train_file`` / ``--validation_file`` (offline). Model: ``--model_name_or_path`` (pretrained) or
``--config_name`` + ``--tokenizer_name`` (from scratch). Scoring uses the official SQuAD v1.1 EM/F1 metric
shipped with hf_oto (`hf_oto.metrics`), loaded by path, so it works offline.

Written to ``--output_dir``: the slim model (Hub format), tokenizer and model card; ``eval_results.json``
with EM/F1 of the trained group-sparse model (``eval_*``) and of the slim model reloaded from disk
(``slim_*``), plus params and FLOPs dense vs slim; ``eval_predictions.json``.

Example (offline, local files)::

    python examples/run_squad.py --model_name_or_path ./my-bert --train_file train.json \\
        --validation_file validation.json --do_train --do_eval --output_dir out \\
        --oto_target_group_sparsity 0.4 --learning_rate 3e-5 --num_train_epochs 2
"""

from __future__ import annotations

import json
import logging
import os
import sys
from dataclasses import dataclass, field

import datasets
import transformers
from transformers import (
    AutoConfig,
    AutoModelForQuestionAnswering,
    AutoTokenizer,
    HfArgumentParser,
    default_data_collator,
    set_seed,
)

import hf_oto
from hf_oto import OTOTrainer, OTOTrainingArguments
from hf_oto.metrics import load_squad_metric
from hf_oto.qa import (
    evaluate_squad,
    format_predictions,
    load_squad_json,
    postprocess_qa_predictions,
    prepare_eval_features,
    prepare_train_features,
    squad_references,
)

logger = logging.getLogger(__name__)


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
    tokenizer_name: str | None = field(default=None, metadata={"help": "Tokenizer folder or id (a fast tokenizer)."})
    cache_dir: str | None = field(default=None, metadata={"help": "Where downloaded models and datasets are stored."})


@dataclass
class DataArguments:
    """Which data to train and evaluate on, and how to cut it into windows."""

    dataset_name: str | None = field(default=None, metadata={"help": "A datasets Hub name, e.g. 'squad' (online)."})
    dataset_config_name: str | None = field(default=None, metadata={"help": "The dataset's configuration name."})
    train_file: str | None = field(default=None, metadata={"help": "Local SQuAD v1.1 JSON training file."})
    validation_file: str | None = field(default=None, metadata={"help": "Local SQuAD v1.1 JSON evaluation file."})
    max_seq_length: int = field(default=384, metadata={"help": "Tokens per window (question + context)."})
    doc_stride: int = field(default=128, metadata={"help": "Overlap in tokens between windows of a long context."})
    n_best_size: int = field(default=20, metadata={"help": "Start and end candidates paired per window."})
    max_answer_length: int = field(default=30, metadata={"help": "Longest answer, in tokens."})
    max_train_samples: int | None = field(default=None, metadata={"help": "Keep only the first N training questions."})
    max_eval_samples: int | None = field(default=None, metadata={"help": "Keep only the first N evaluation questions."})
    preprocessing_num_workers: int | None = field(default=None, metadata={"help": "Processes for tokenization."})

    def __post_init__(self) -> None:
        if self.dataset_name is None and self.train_file is None and self.validation_file is None:
            raise ValueError("Give --dataset_name, or local SQuAD v1.1 JSON via --train_file/--validation_file.")
        if self.doc_stride >= self.max_seq_length:
            raise ValueError(
                f"--doc_stride ({self.doc_stride}) must be smaller than --max_seq_length ({self.max_seq_length})."
            )


def load_raw_datasets(data_args: DataArguments, cache_dir: str | None) -> datasets.DatasetDict:
    """Flat SQuAD questions (id, title, context, question, answers) per split, from the Hub or local JSON."""
    if data_args.dataset_name is not None:
        return datasets.load_dataset(data_args.dataset_name, data_args.dataset_config_name, cache_dir=cache_dir)
    files = {}
    if data_args.train_file:
        files["train"] = data_args.train_file
    if data_args.validation_file:
        files["validation"] = data_args.validation_file
    return load_squad_json(files)


def load_model_and_tokenizer(model_args: ModelArguments):
    """The QA model (pretrained, or from a config) and its fast tokenizer."""
    if model_args.model_name_or_path is None and model_args.config_name is None:
        raise ValueError("Give --model_name_or_path, or --config_name and --tokenizer_name to train from scratch.")
    tokenizer_source = model_args.tokenizer_name or model_args.model_name_or_path
    if tokenizer_source is None:
        raise ValueError("--tokenizer_name is required when the model is built from --config_name.")
    tokenizer = AutoTokenizer.from_pretrained(tokenizer_source, cache_dir=model_args.cache_dir)
    if not getattr(tokenizer, "is_fast", False):
        raise ValueError(f"{tokenizer_source} has no fast tokenizer; SQuAD windowing needs offset mappings.")
    config = AutoConfig.from_pretrained(
        model_args.config_name or model_args.model_name_or_path, cache_dir=model_args.cache_dir
    )
    hf_oto.get_spec(config)  # fail early, listing the supported families
    if model_args.model_name_or_path:
        model = AutoModelForQuestionAnswering.from_pretrained(
            model_args.model_name_or_path, config=config, cache_dir=model_args.cache_dir
        )
    else:
        logger.info("Training a new %s model from scratch", config.model_type)
        model = AutoModelForQuestionAnswering.from_config(config)
    return model, tokenizer


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

    raw = load_raw_datasets(data_args, model_args.cache_dir)
    model, tokenizer = load_model_and_tokenizer(model_args)
    window_args = {
        "tokenizer": tokenizer,
        "max_seq_length": data_args.max_seq_length,
        "doc_stride": data_args.doc_stride,
    }

    train_features = None
    if training_args.do_train:
        if "train" not in raw:
            raise ValueError("--do_train needs --train_file or a dataset with a train split.")
        train_examples = raw["train"]
        if data_args.max_train_samples is not None:
            train_examples = train_examples.select(range(min(data_args.max_train_samples, len(train_examples))))
        with training_args.main_process_first(desc="train tokenization"):
            train_features = train_examples.map(
                prepare_train_features,
                batched=True,
                num_proc=data_args.preprocessing_num_workers,
                remove_columns=train_examples.column_names,
                fn_kwargs=window_args,
                desc="Tokenizing training windows",
            )

    eval_examples = eval_features = None
    if training_args.do_eval:
        if "validation" not in raw:
            raise ValueError("--do_eval needs --validation_file or a dataset with a validation split.")
        eval_examples = raw["validation"]
        if data_args.max_eval_samples is not None:
            eval_examples = eval_examples.select(range(min(data_args.max_eval_samples, len(eval_examples))))
        with training_args.main_process_first(desc="eval tokenization"):
            eval_features = eval_examples.map(
                prepare_eval_features,
                batched=True,
                num_proc=data_args.preprocessing_num_workers,
                remove_columns=eval_examples.column_names,
                fn_kwargs=window_args,
                desc="Tokenizing evaluation windows",
            )

    trainer = OTOTrainer(
        model=model,
        args=training_args,
        train_dataset=train_features,
        processing_class=tokenizer,
        data_collator=default_data_collator,
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
        metric = load_squad_metric()
        # 1) the trained (dense, group-sparse) model, through the Trainer
        output = trainer.predict(eval_features.remove_columns(["example_id", "offset_mapping"]))
        start_logits, end_logits = output.predictions[:2]
        predictions = postprocess_qa_predictions(
            eval_examples,
            eval_features,
            start_logits,
            end_logits,
            n_best_size=data_args.n_best_size,
            max_answer_length=data_args.max_answer_length,
        )
        scores = metric.compute(predictions=format_predictions(predictions), references=squad_references(eval_examples))
        metrics.update({f"eval_{key}": value for key, value in scores.items()})
        metrics["eval_samples"] = len(eval_examples)
        # 2) the slim model as saved, reloaded from disk
        if training_args.do_train and trainer.is_world_process_zero():
            # `import hf_oto` registers the slim classes: the Auto class loads them, strictly
            slim = AutoModelForQuestionAnswering.from_pretrained(training_args.output_dir).to(training_args.device)
            slim_scores, _ = evaluate_squad(
                slim,
                tokenizer,
                eval_examples,
                max_seq_length=data_args.max_seq_length,
                doc_stride=data_args.doc_stride,
                n_best_size=data_args.n_best_size,
                max_answer_length=data_args.max_answer_length,
                batch_size=training_args.per_device_eval_batch_size,
                metric=metric,
            )
            metrics.update({f"slim_{key}": value for key, value in slim_scores.items()})
        if trainer.is_world_process_zero():
            with open(os.path.join(training_args.output_dir, "eval_predictions.json"), "w") as handle:
                json.dump(predictions, handle, indent=1)

    if metrics and trainer.is_world_process_zero():
        trainer.log_metrics("eval", metrics)
        trainer.save_metrics("eval", metrics)
    trainer.accelerator.end_training()  # destroys the process group: gloo may abort at exit otherwise (pytorch#190489)
    return metrics


if __name__ == "__main__":
    main()
