"""An extractive `question-answering` pipeline for transformers versions that removed theirs.

transformers 5.23+ dropped ``pipeline("question-answering")`` (it now points users to chat models). hf_oto's
flagship use is extractive QA (BERT on SQuAD), so this pipeline is registered under that task name when
transformers itself lacks one: importing this module registers it, and after `import hf_oto` this module is
imported as soon as ``transformers.pipelines`` is (see `hf_oto.import_hooks`). It decodes answers with the same windowing and n-best recipe as
the SQuAD evaluation in `hf_oto.qa`, so pipeline answers and reported EM/F1 agree.
"""

from __future__ import annotations

import os
from typing import Any

import transformers
from transformers import AutoModelForQuestionAnswering, AutoTokenizer, Pipeline

from .hub import has_tokenizer
from .qa import answer_question

TASK = "question-answering"


class QuestionAnsweringPipeline(Pipeline):
    """``pipeline("question-answering")``: ``qa(question=..., context=...)`` → ``{"answer", "score", "start", "end"}``.

    Also accepts ``qa({"question": ..., "context": ...})`` and a list of such dicts (one result per dict).
    Keyword options: ``max_seq_len`` (384), ``doc_stride`` (128), ``n_best_size`` (20), ``max_answer_len`` (30).
    """

    _load_processor = False
    _load_image_processor = False
    _load_feature_extractor = False
    _load_tokenizer = False  # loaded in __init__, so that a model folder without one gets a one-line error

    def __init__(self, model, tokenizer=None, **kwargs: Any):
        if tokenizer is None or isinstance(tokenizer, str):
            source = tokenizer or getattr(model, "name_or_path", None)
            if not source or (os.path.isdir(source) and not has_tokenizer(source)):
                raise ValueError(
                    f"question-answering needs a tokenizer, and the model folder {source!r} has none: pass "
                    f"tokenizer=... to pipeline(), or save it there with tokenizer.save_pretrained({source!r})."
                )
            tokenizer = AutoTokenizer.from_pretrained(source)
        super().__init__(model, tokenizer=tokenizer, **kwargs)

    def __call__(self, *args: Any, question: str | None = None, context: str | None = None, **kwargs: Any):
        if question is not None or context is not None:
            if question is None or context is None:
                raise ValueError("question-answering needs both question= and context=.")
            return super().__call__({"question": question, "context": context}, **kwargs)
        return super().__call__(*args, **kwargs)

    def _sanitize_parameters(self, max_seq_len=None, doc_stride=None, n_best_size=None, max_answer_len=None, **_):
        options = {
            "max_seq_length": max_seq_len,
            "doc_stride": doc_stride,
            "n_best_size": n_best_size,
            "max_answer_length": max_answer_len,
        }
        return {}, {k: v for k, v in options.items() if v is not None}, {}

    def preprocess(self, inputs: dict[str, str]) -> dict[str, str]:
        if not isinstance(inputs, dict) or not {"question", "context"} <= set(inputs):
            raise ValueError("question-answering inputs must be dicts with 'question' and 'context' keys.")
        return {"question": inputs["question"], "context": inputs["context"]}

    def _forward(self, inputs: dict[str, str], **options: Any) -> dict[str, Any]:
        return answer_question(self.model, self.tokenizer, inputs["question"], inputs["context"], **options)

    def postprocess(self, outputs: dict[str, Any]) -> dict[str, Any]:
        return outputs


def register_question_answering_pipeline() -> None:
    """Register the pipeline under ``"question-answering"`` when transformers has none (idempotent)."""
    pipelines = transformers.pipelines
    removed = getattr(pipelines, "REMOVED_TASKS", {})
    if TASK in pipelines.SUPPORTED_TASKS and TASK not in removed:
        return  # this transformers version ships its own
    removed.pop(TASK, None)
    pipelines.PIPELINE_REGISTRY.register_pipeline(
        TASK, pipeline_class=QuestionAnsweringPipeline, pt_model=AutoModelForQuestionAnswering, type="text"
    )


# Importing this module registers the pipeline: `hf_oto` imports it when `transformers.pipelines` is imported.
register_question_answering_pipeline()
