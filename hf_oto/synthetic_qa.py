"""A seeded, self-generated SQuAD v1.1-format question-answering set, and a WordPiece tokenizer built from it.

`hf-oto demo` needs a reading-comprehension task that runs offline and that a small model trained from scratch
learns in minutes on a CPU. Its default is ``layout="relations"``: each paragraph is about ONE person and states
two or three facts of each kind (cities: born in / lives in / studied in; years: born in / moved in / married in;
jobs: works as / trained as), one sentence each ("Mara was born in Lisbon. Mara lives in Oslo. ..."), in shuffled
order, sometimes with a filler sentence. The values are drawn at random per paragraph (distinct within it; years in
no particular order), so the answer must be read from the context. A question asks one relation ("Where was Mara
born?", "When did Mara move?"), and every question has at least one same-kind distractor in its paragraph that
differs only by the relation words in front of it: knowing the kind of answer asked (city / year / job) and
guessing among those values scores about 43 EM (1/2 or 1/3 per question), and the answer's sentence is anywhere in
the paragraph. To answer, the model matches the question's relation words to the two or three words right before a
value: a local pattern, which the demo's small LLaMA learns in a few hundred steps. (A variant whose questions
repeat the context's relation word verbatim, with every sentence "NAME was VERB in/as VALUE", learned worse in
tuning runs.)

The older layouts, kept for comparison, describe 2-5 PEOPLE per paragraph, each with a birthplace, a birth
year and a job, so a question must be matched to a person's NAME elsewhere in the context (an induction-style
lookup over two attention hops). The demo's small models learned which kind of answer is asked, then stayed at
guessing among the people within 1,500 steps (bench/README.md). ``"fact"`` (the default of `generate_squad`)
writes one sentence per fact, name first ("Mara was born in Lisbon."), the facts of all people shuffled
together, and can also ask the reverse ("Who works as a pilot?"); ``"person"`` writes one sentence per person,
name first, with the three facts in one of four orders, so each name occurs once in its paragraph; ``"kind"``
states one kind of fact (all birthplaces, say) for every person of a paragraph and asks only about that kind.

The output is the nested SQuAD v1.1 JSON (``{"version", "data": [{"title", "paragraphs": [{"context",
"qas": [{"id", "question", "answers": [{"text", "answer_start"}]}]}]}]}``), so the same code reads it and
real SQuAD files. The same seed gives the same dataset, byte for byte.
"""

from __future__ import annotations

import json
import os
import random
from collections.abc import Iterable
from typing import Any


def _words(text: str) -> tuple[str, ...]:
    return tuple(text.split())


FIRST_NAMES = _words(
    "Ada Alma Amir Anika Arlo Aurora Bastian Beatrix Bruno Calla Cyrus Dalia Dario Edith Elio Emeric Esme Ezra "
    "Farah Felix Freya Gideon Greta Hana Hugo Ilse Imre Ines Ivo Jana Jonas Juno Kai Kasimir Lena Leon Lior "
    "Livia Lucan Mara Marek Mila Milo Nadia Nils Noor Olek Oona Orin Petra Pim Quinn Rafa Rhea Rosa Rune Sabine "
    "Silas Soren Talia Teo Thea Tomas Una Uri Vera Viggo Wren Xavi Yara Yusuf Zara Zeno"
)
CITIES = _words(
    "Lisbon Oslo Cairo Lima Quito Dakar Hanoi Perth Riga Tallinn Vienna Zagreb Bergen Cork Delft Essen Fresno Galway "
    "Harare Izmir Jaipur Kyoto Leeds Malmo Nantes Odessa Porto Reno Seville Tampere Utrecht Valencia Windhoek "
    "Yerevan Zurich Antwerp Bremen Calgary Dresden Geneva Lagos Madrid Nairobi Osaka Prague Santiago Tunis Warsaw"
)
JOBS = _words(
    "baker pilot nurse carpenter chemist librarian surgeon architect farmer journalist plumber teacher painter "
    "sailor dentist electrician firefighter gardener jeweler lawyer mechanic musician optician pharmacist "
    "photographer potter tailor translator veterinarian welder"
)

_ARTICLE_TOPICS = ("Town records", "Family history", "Local archive", "Parish register", "Oral history", "Census notes")
_FILLERS = (
    "The records were collected over many years.",
    "Several of them knew each other well.",
    "Some details were confirmed by their relatives.",
    "This account was written down by a local historian.",
    "Not everyone in the town agreed on every detail.",
)

# One sentence per fact, the person's name first ({a} is a/an). The answer is always the fourth word after the
# name: the same distance for every fact.
_FACT_TEMPLATES = {
    "city": ("{name} was born in {city}.",),
    "year": ("{name} was born in {year}.",),
    "job": ("{name} works as {a} {job}.",),
}

# One sentence per person, the name first, the facts in one of several orders ({a} is a/an).
_PERSON_TEMPLATES = (
    "{name} was born in {city} in {year} and works as {a} {job}.",
    "{name} works as {a} {job} and was born in {city} in {year}.",
    "{name} was born in {year} in {city} and works as {a} {job}.",
    "{name} works as {a} {job} and was born in {year} in {city}.",
)

# Questions: (kind asked, templates). The question names the person, or the fact for the "name_by" kinds.
_QUESTIONS = {
    "city": ("Where was {name} born?", "In which city was {name} born?", "What is the birthplace of {name}?"),
    "year": ("In what year was {name} born?", "When was {name} born?", "What year was {name} born in?"),
    "job": ("What does {name} do for a living?", "What is the job of {name}?", "What does {name} work as?"),
    "name_by_job": ("Who works as {a} {job}?", "Which person is {a} {job}?"),
    "name_by_city": ("Who was born in {city}?", "Which person was born in {city}?"),
}


QUESTION_KINDS: tuple[str, ...] = tuple(_QUESTIONS)
FACT_QUESTIONS: tuple[str, ...] = ("city", "year", "job")
LAYOUTS: tuple[str, ...] = ("fact", "person", "kind", "relations")

# layout="relations": (kind of answer, relation) -> the sentence stating it and the questions asking it. Each
# kind has two or three relations, so every question has a same-kind distractor that only the relation words
# (next to the answer) tell apart. The answer always comes right after the relation words.
_RELATIONS: dict[tuple[str, str], tuple[str, tuple[str, ...]]] = {
    ("city", "born"): ("{name} was born in {city}.", ("Where was {name} born?", "In which city was {name} born?")),
    ("city", "live"): ("{name} lives in {city}.", ("Where does {name} live?", "In which city does {name} live?")),
    ("city", "study"): (
        "{name} studied in {city}.",
        ("Where did {name} study?", "In which city did {name} study?"),
    ),
    ("year", "born"): ("{name} was born in {year}.", ("When was {name} born?", "In what year was {name} born?")),
    ("year", "move"): ("{name} moved in {year}.", ("When did {name} move?", "In what year did {name} move?")),
    ("year", "marry"): ("{name} married in {year}.", ("When did {name} marry?", "In what year did {name} marry?")),
    ("job", "work"): ("{name} works as {a} {job}.", ("What is the job of {name}?", "What does {name} work as?")),
    ("job", "train"): ("{name} trained as {a} {job}.", ("What did {name} train as?", "What was {name} trained as?")),
}


def _indefinite_article(word: str) -> str:
    return "an" if word[0] in "aeiou" else "a"


def _fill(template: str, person: dict[str, str], offset: int) -> tuple[str, dict[str, int]]:
    """`template` filled with `person`'s facts, and the character offset (in the paragraph) of each slot in it."""
    values = {**person, "a": _indefinite_article(person["job"]) if "job" in person else "a"}
    text, spans, position = "", {}, 0
    while position < len(template):
        start = template.find("{", position)
        if start < 0:
            text += template[position:]
            break
        text += template[position:start]
        end = template.index("}", start)
        key = template[start + 1 : end]
        if key in person:
            spans[key] = offset + len(text)
        text += values[key]
        position = end + 1
    return text, spans


def _fact_sentence(rng: random.Random, person: dict[str, str], kind: str, offset: int) -> tuple[str, dict[str, int]]:
    """One sentence stating `kind` of `person`, and the character offset (in the paragraph) of each slot in it."""
    return _fill(rng.choice(_FACT_TEMPLATES[kind]), person, offset)


def _paragraph(
    rng: random.Random,
    num_people: int,
    questions_per_paragraph: int,
    id_prefix: str,
    kinds: tuple[str, ...],
    layout: str = "fact",
) -> dict[str, Any]:
    """A paragraph of `num_people` people with distinct names, cities, years and jobs, and its questions.

    Every fact is its own sentence, and the facts of all people are shuffled together: the sentence that
    answers a question is found only by the name (or fact) the question names, never by its place."""
    names = rng.sample(FIRST_NAMES, num_people)
    cities = rng.sample(CITIES, num_people)
    years = [str(y) for y in rng.sample(range(1890, 2015), num_people)]
    jobs = rng.sample(JOBS, num_people)
    people = [{"name": n, "city": c, "year": y, "job": j} for n, c, y, j in zip(names, cities, years, jobs)]
    if layout == "person":
        facts: list[tuple[int | None, str | None]] = [(p, None) for p in range(num_people)]
    elif layout == "kind":
        kind = rng.choice([k for k in _FACT_TEMPLATES if k in kinds] or list(_FACT_TEMPLATES))
        kinds = tuple(k for k in kinds if k in (kind, "name_by_" + kind))
        facts = [(p, kind) for p in range(num_people)]
    else:
        facts = [(p, kind) for p in range(num_people) for kind in _FACT_TEMPLATES]
        rng.shuffle(facts)
    if rng.random() < 0.5:
        facts.insert(rng.randrange(len(facts) + 1), (None, None))
    sentences, spans, offset = [], [{} for _ in people], 0
    for p, kind in facts:
        if p is None:
            sentence = rng.choice(_FILLERS)
        elif kind is None:
            sentence, fact_spans = _fill(rng.choice(_PERSON_TEMPLATES), people[p], offset)
            spans[p] = {**fact_spans, **{"name_by_" + k: fact_spans["name"] for k in _FACT_TEMPLATES}}
        else:
            sentence, fact_spans = _fact_sentence(rng, people[p], kind, offset)
            spans[p][kind] = fact_spans[kind]
            spans[p].setdefault("name_by_" + kind, fact_spans["name"])
        sentences.append(sentence)
        offset += len(sentence) + 1
    context = " ".join(sentences)

    candidates = [(p, kind) for p in range(num_people) for kind in kinds]
    qas = []
    for number, (p, kind) in enumerate(rng.sample(candidates, min(questions_per_paragraph, len(candidates)))):
        person = people[p]
        question = rng.choice(_QUESTIONS[kind]).format(**person, a=_indefinite_article(person["job"]))
        answer = person["name"] if kind.startswith("name_by") else person[kind]
        start = spans[p][kind]
        assert context[start : start + len(answer)] == answer, "answer offset out of sync with the context"
        qas.append(
            {"id": f"{id_prefix}-{number}", "question": question, "answers": [{"text": answer, "answer_start": start}]}
        )
    return {"context": context, "qas": qas}


def _relations_paragraph(
    rng: random.Random, questions_per_paragraph: int, id_prefix: str, kinds: tuple[str, ...]
) -> dict[str, Any]:
    """layout="relations": one person, two or three facts of each kind (distinct values, random, not ordered),
    one sentence each, shuffled; questions ask facts whose kind is in `kinds` (the "name_by" kinds are not asked:
    with one person the answer would be the only name)."""
    name = rng.choice(FIRST_NAMES)
    facts: list[tuple[str, str] | None] = []
    for kind in _FACT_TEMPLATES:
        relations = [r for k, r in _RELATIONS if k == kind]
        facts += [(kind, r) for r in rng.sample(relations, rng.randint(2, len(relations)))]
    pools = {"city": CITIES, "year": [str(y) for y in range(1890, 2015)], "job": JOBS}
    values = {kind: iter(rng.sample(pools[kind], sum(k == kind for k, _ in facts))) for kind in pools}
    value_of = {fact: next(values[fact[0]]) for fact in facts}
    rng.shuffle(facts)
    if rng.random() < 0.5:
        facts.insert(rng.randrange(len(facts) + 1), None)
    sentences, starts, offset = [], {}, 0
    for fact in facts:
        if fact is None:
            sentence = rng.choice(_FILLERS)
        else:
            sentence, spans = _fill(_RELATIONS[fact][0], {"name": name, fact[0]: value_of[fact]}, offset)
            starts[fact] = spans[fact[0]]
        sentences.append(sentence)
        offset += len(sentence) + 1
    context = " ".join(sentences)
    asked = [fact for fact in facts if fact is not None and fact[0] in kinds]
    qas = []
    for number, fact in enumerate(rng.sample(asked, min(questions_per_paragraph, len(asked)))):
        answer = value_of[fact]
        question = rng.choice(_RELATIONS[fact][1]).format(name=name)
        assert context[starts[fact] : starts[fact] + len(answer)] == answer, "answer offset out of sync"
        qas.append(
            {
                "id": f"{id_prefix}-{number}",
                "question": question,
                "answers": [{"text": answer, "answer_start": starts[fact]}],
            }
        )
    return {"context": context, "qas": qas}


def generate_squad(
    num_paragraphs: int = 1000,
    *,
    seed: int = 0,
    people_per_paragraph: tuple[int, int] = (3, 5),
    questions_per_paragraph: int = 4,
    paragraphs_per_article: int = 20,
    question_kinds: tuple[str, ...] = QUESTION_KINDS,
    layout: str = "fact",
) -> dict[str, Any]:
    """A SQuAD v1.1-format dataset of `num_paragraphs` generated paragraphs (deterministic in `seed`).

    Args:
        num_paragraphs: paragraphs to generate; each holds `questions_per_paragraph` questions.
        seed: the only source of randomness; the same arguments give the same dataset.
        people_per_paragraph: inclusive range of people per paragraph (every one a distractor for the others).
        questions_per_paragraph: questions asked per paragraph, about distinct (person, question kind) pairs.
        paragraphs_per_article: paragraphs grouped under one article title.
        question_kinds: which questions to ask: a fact of a person (`FACT_QUESTIONS`) and/or the person with
            a fact ("name_by_job", "name_by_city"). A left-to-right model cannot find a person from a fact
            stated after the name, so it gets `FACT_QUESTIONS` only.
        layout: ``"fact"`` (one sentence per fact), ``"person"`` (one per person), ``"kind"`` (one kind of
            fact per paragraph) or ``"relations"`` (one person, facts told apart by their relation words; it
            ignores `people_per_paragraph` and the "name_by" question kinds); see the module docstring.
    """
    if layout not in LAYOUTS:
        raise ValueError(f"layout must be one of {LAYOUTS}, got {layout!r}")
    unknown = set(question_kinds) - set(QUESTION_KINDS)
    if not question_kinds or unknown:
        raise ValueError(f"question_kinds must be a non-empty subset of {QUESTION_KINDS}, got {question_kinds}")
    low, high = people_per_paragraph
    if not 1 <= low <= high <= min(len(CITIES), len(JOBS), len(FIRST_NAMES)):
        raise ValueError(
            f"people_per_paragraph must be an increasing pair of positive counts, got {people_per_paragraph}"
        )
    rng = random.Random(seed)
    articles: list[dict[str, Any]] = []
    for index in range(num_paragraphs):
        if index % paragraphs_per_article == 0:
            title = f"{rng.choice(_ARTICLE_TOPICS)} {len(articles) + 1}"
            articles.append({"title": title, "paragraphs": []})
        if layout == "relations":
            paragraph = _relations_paragraph(rng, questions_per_paragraph, f"s{seed}-p{index}", tuple(question_kinds))
        else:
            paragraph = _paragraph(
                rng, rng.randint(low, high), questions_per_paragraph, f"s{seed}-p{index}", tuple(question_kinds), layout
            )
        articles[-1]["paragraphs"].append(paragraph)
    return {"version": "1.1", "data": articles}


def write_squad_splits(
    directory: str | os.PathLike,
    *,
    train_paragraphs: int = 1000,
    validation_paragraphs: int = 100,
    seed: int = 0,
    **kwargs: Any,
) -> tuple[str, str]:
    """Write ``train.json`` and ``validation.json`` (different seeds, so no paragraph is shared). Returns the paths."""
    os.makedirs(directory, exist_ok=True)
    paths = []
    for name, count, split_seed in (("train", train_paragraphs, seed), ("validation", validation_paragraphs, seed + 1)):
        path = os.path.join(os.fspath(directory), f"{name}.json")
        with open(path, "w") as handle:
            json.dump(generate_squad(count, seed=split_seed, **kwargs), handle)
        paths.append(path)
    return paths[0], paths[1]


def squad_texts(squad: dict[str, Any]) -> Iterable[str]:
    """Every context and question of a SQuAD-format dict, e.g. to train a tokenizer on."""
    for article in squad["data"]:
        for paragraph in article["paragraphs"]:
            yield paragraph["context"]
            for qa in paragraph["qas"]:
                yield qa["question"]


def build_wordpiece_tokenizer(
    texts: Iterable[str], vocab_size: int = 2000, *, lowercase: bool = True, token_type_ids: bool = True
):
    """A BERT-style WordPiece tokenizer trained offline on `texts`, as a transformers fast tokenizer.

    It has BERT's special tokens ([PAD] [UNK] [CLS] [SEP] [MASK]), normalization and pair template
    (``[CLS] A [SEP] B [SEP]`` with token type ids 0/1), so `pipeline("question-answering")`, offset mappings
    and `save_pretrained` work as with a stock BERT tokenizer. Models without token types (LLaMA) pass
    ``token_type_ids=False``.
    """
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    special = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    tokenizer = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    tokenizer.normalizer = normalizers.BertNormalizer(lowercase=lowercase)
    tokenizer.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    trainer = trainers.WordPieceTrainer(vocab_size=vocab_size, special_tokens=special, show_progress=False)
    tokenizer.train_from_iterator(texts, trainer=trainer)
    cls_id, sep_id = tokenizer.token_to_id("[CLS]"), tokenizer.token_to_id("[SEP]")
    tokenizer.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]",
        pair="[CLS] $A [SEP] $B:1 [SEP]:1",
        special_tokens=[("[CLS]", cls_id), ("[SEP]", sep_id)],
    )
    tokenizer.decoder = decoders.WordPiece(prefix="##")
    return PreTrainedTokenizerFast(
        tokenizer_object=tokenizer,
        unk_token="[UNK]",
        sep_token="[SEP]",
        pad_token="[PAD]",
        cls_token="[CLS]",
        mask_token="[MASK]",
        model_input_names=["input_ids", "token_type_ids", "attention_mask"]
        if token_type_ids
        else ["input_ids", "attention_mask"],
        do_lower_case=lowercase,
    )


__all__ = [
    "FACT_QUESTIONS",
    "FIRST_NAMES",
    "LAYOUTS",
    "QUESTION_KINDS",
    "build_wordpiece_tokenizer",
    "generate_squad",
    "squad_texts",
    "write_squad_splits",
]
