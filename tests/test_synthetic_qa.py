"""The generated QA set (deterministic, answers are real spans, questions need the context) and its tokenizer."""

import collections
import json
import os
import re
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import pytest
import torch
import transformers

from hf_oto.qa import answer_question
from hf_oto.synthetic_qa import (
    CITIES,
    FACT_QUESTIONS,
    FIRST_NAMES,
    JOBS,
    build_wordpiece_tokenizer,
    generate_squad,
    squad_texts,
    write_squad_splits,
)


def _questions(squad):
    for article in squad["data"]:
        for paragraph in article["paragraphs"]:
            for qa in paragraph["qas"]:
                yield paragraph["context"], qa


def test_same_seed_same_bytes_other_seed_differs(tmp_path):
    a, b = generate_squad(30, seed=7), generate_squad(30, seed=7)
    assert json.dumps(a) == json.dumps(b)
    assert json.dumps(a) != json.dumps(generate_squad(30, seed=8))
    train, validation = write_squad_splits(tmp_path, train_paragraphs=5, validation_paragraphs=3)
    train_contexts = {c for c, _ in _questions(json.loads(Path(train).read_text()))}
    assert not train_contexts & {c for c, _ in _questions(json.loads(Path(validation).read_text()))}


def test_squad_v1_structure_and_answer_spans():
    squad = generate_squad(200, seed=1)
    assert squad["version"] == "1.1"
    ids = set()
    for context, qa in _questions(squad):
        assert set(qa) == {"id", "question", "answers"}
        answer = qa["answers"][0]
        assert context[answer["answer_start"] : answer["answer_start"] + len(answer["text"])] == answer["text"]
        assert qa["id"] not in ids
        ids.add(qa["id"])
    assert len(ids) == 800


@pytest.mark.parametrize("layout", ["fact", "person"])
def test_questions_need_the_context(layout):
    squad = generate_squad(300, seed=2, layout=layout)
    relative_positions, first_word, answers = [], 0, collections.Counter()
    for context, qa in _questions(squad):
        answer = qa["answers"][0]
        # every answer has same-kind distractors in its paragraph
        if answer["text"] in CITIES:
            assert sum(re.search(rf"\b{city}\b", context) is not None for city in CITIES) >= 3
        elif answer["text"] in JOBS:
            assert sum(re.search(rf"\b{job}\b", context) is not None for job in JOBS) >= 3
        relative_positions.append(answer["answer_start"] / len(context))
        first_word += answer["answer_start"] == 0
        answers[answer["text"]] += 1
    total = len(relative_positions)
    assert first_word / total < 0.2  # answers are not "the first word"
    for low in (0.0, 0.25, 0.5, 0.75):  # answers are spread over the whole paragraph
        share = sum(low <= r < low + 0.25 for r in relative_positions) / total
        assert 0.1 < share < 0.4
    assert answers.most_common(1)[0][1] / total < 0.05  # no answer string dominates
    kinds = collections.Counter(qa["question"].split()[0] for _, qa in _questions(squad))
    assert {"Who", "Where", "What", "When", "In", "Which"} <= set(kinds)


def test_person_layout_names_each_person_once():
    """layout="person": one sentence per person, name first, so a name occurs once in its paragraph and the
    nearest name before an answer is the person asked about; every kind of fact has a distractor."""
    squad = generate_squad(100, seed=4, people_per_paragraph=(2, 3), question_kinds=FACT_QUESTIONS, layout="person")
    for context, qa in _questions(squad):
        names = [word for word in re.findall(r"[A-Z][a-z]+", context) if word in FIRST_NAMES]
        assert len(names) == len(set(names)) >= 2
        person = next(name for name in FIRST_NAMES if re.search(rf"\b{name}\b", qa["question"]))
        before = context[: qa["answers"][0]["answer_start"]]
        assert max(names, key=lambda name: before.rfind(name) if name in before else -1) == person
        assert sum(re.search(rf"\b{city}\b", context) is not None for city in CITIES) == len(names)
    with pytest.raises(ValueError, match="layout"):
        generate_squad(2, layout="table")


def test_kind_layout_asks_the_one_kind_it_states():
    """layout="kind": every person of a paragraph gets one sentence of the same kind, and every question asks
    about that kind, so the answer's type never tells which person it belongs to."""
    squad = generate_squad(60, seed=5, people_per_paragraph=(3, 4), question_kinds=FACT_QUESTIONS, layout="kind")
    for context, qa in _questions(squad):
        sentences = [s for s in context.split(". ") if any(s.startswith(name + " ") for name in FIRST_NAMES)]
        answer = qa["answers"][0]["text"]
        pool = CITIES if answer in CITIES else JOBS if answer in JOBS else None
        same_kind = [s for s in sentences if pool is None or any(re.search(rf"\b{w}\b", s) for w in pool)]
        assert len(same_kind) == len(sentences) >= 3


def test_bad_arguments():
    with pytest.raises(ValueError, match="people_per_paragraph"):
        generate_squad(2, people_per_paragraph=(4, 2))
    with pytest.raises(ValueError, match="question_kinds"):
        generate_squad(2, question_kinds=("city", "favourite_colour"))


def test_fact_questions_only():
    """What the demo asks a left-to-right model: facts of named people, never a person found by a fact."""
    squad = generate_squad(20, seed=3, question_kinds=FACT_QUESTIONS)
    for _, qa in _questions(squad):
        answer = qa["answers"][0]["text"]
        assert answer in CITIES or answer in JOBS or answer.isdigit(), qa


def test_tokenizer_is_bert_style_and_answers_questions(tmp_path):
    squad = generate_squad(40, seed=0)
    tokenizer = build_wordpiece_tokenizer(squad_texts(squad), vocab_size=500)
    encoded = tokenizer("Who is a pilot?", "Ada Moreau is a pilot.")
    tokens = tokenizer.convert_ids_to_tokens(encoded["input_ids"])
    assert tokens[0] == "[CLS]" and tokens.count("[SEP]") == 2 and tokens[-1] == "[SEP]"
    assert encoded["token_type_ids"][-1] == 1 and encoded["token_type_ids"][0] == 0
    assert {"[PAD]", "[UNK]", "[MASK]"} <= set(tokenizer.get_vocab())
    assert tokenizer.decode(tokenizer("Lisbon in 1954")["input_ids"], skip_special_tokens=True) == "lisbon in 1954"

    tokenizer.save_pretrained(tmp_path)
    reloaded = transformers.AutoTokenizer.from_pretrained(tmp_path)
    assert reloaded("Who is a pilot?")["input_ids"] == tokenizer("Who is a pilot?")["input_ids"]

    torch.manual_seed(0)
    config = transformers.BertConfig(
        vocab_size=len(tokenizer),
        hidden_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=32,
        max_position_embeddings=128,
    )
    model = transformers.BertForQuestionAnswering(config).eval()
    context = "Ada Moreau was born in Lisbon in 1954 and works as a baker."
    result = answer_question(model, reloaded, "Where was Ada Moreau born?", context, max_seq_length=24, doc_stride=8)
    assert result["answer"] and context[result["start"] : result["end"]] == result["answer"]
    assert 0.0 < result["score"] <= 1.0


_YEAR = re.compile(r"\b(?:18|19|20)\d\d\b")
_VERB = {"born": "born", "live": "lives", "study": "studied", "move": "moved", "marry": "married"}
_VERB.update({"job": "works", "work": "works", "train": "trained", "trained": "trained"})


def _same_kind(context, answer):
    """Every value in `context` of the same kind as `answer` (city, year or job), with its character offset."""
    if answer.isdigit():
        return [(m.start(), m.group()) for m in _YEAR.finditer(context)]
    pool = CITIES if answer in CITIES else JOBS
    return [(m.start(), m.group()) for m in re.finditer(r"\b\w+\b", context) if m.group() in pool]


def test_relations_layout_needs_the_relation_words():
    """layout="relations": one person per paragraph; every question has a same-kind distractor in its context that
    only the relation words before it tell apart, and neither the sentence's place nor the order of same-kind
    values gives the answer away."""
    squad = generate_squad(200, seed=6, question_kinds=FACT_QUESTIONS, layout="relations")
    assert json.dumps(squad) == json.dumps(
        generate_squad(200, seed=6, question_kinds=FACT_QUESTIONS, layout="relations")
    )
    assert json.dumps(squad) != json.dumps(
        generate_squad(200, seed=7, question_kinds=FACT_QUESTIONS, layout="relations")
    )
    sentence_index, relations, first_of_kind, total = collections.Counter(), collections.Counter(), 0, 0
    for context, qa in _questions(squad):
        answer = qa["answers"][0]
        start, text = answer["answer_start"], answer["text"]
        assert context[start : start + len(text)] == text
        names = {word for word in re.findall(r"[A-Z][a-z]+", context) if word in FIRST_NAMES}
        assert len(names) == 1 and names.pop() in qa["question"]
        values = _same_kind(context, text)
        assert (start, text) in values and len(values) >= 2 and len({v for _, v in values}) == len(values)
        # the relation words of the answer's sentence are the ones the question asks for, and every same-kind
        # distractor has other relation words
        sentence_of = {
            s: [w for w in context[:s].split(". ")[-1].split() if w not in ("a", "an")][-2] for s, _ in values
        }
        verb = next(_VERB[w] for w in re.findall(r"\w+", qa["question"]) if w in _VERB)
        assert sentence_of[start] == verb, (qa["question"], context)
        assert all(sentence_of[s] != verb for s, _ in values if s != start)
        relations[(text.isdigit(), text in CITIES, verb)] += 1
        sentence_index[context[:start].count(". ")] += 1
        first_of_kind += values[0][0] == start
        total += 1
    assert len(sentence_index) >= 7 and max(sentence_index.values()) / total < 0.25  # the answer's place varies
    assert 0.3 < first_of_kind / total < 0.6  # "the first city" is no rule
    assert len(relations) == 8 and max(relations.values()) / total < 0.2  # all eight relations are asked
