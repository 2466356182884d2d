"""Generated question answering data in SQuAD's JSON format, for demos and tests.

This is NOT SQuAD: every paragraph is made up by a small grammar about invented people
(born in a town in a year, working as something somewhere, founding a society, moving
away), and each question asks for one span of its paragraph. A paragraph tells of one
person by default; with --people_per_paragraph 2 or more a model must also match the
question's name to the right sentences (a harder task: a tiny model needs far longer).
With `--version 2.0` a third of the questions are unanswerable (about someone or
something the paragraph does not mention), marked `is_impossible` with no answers.

    python -m bert.toy_squad --out_dir data/toy_squad --train 3000 --dev 300
writes train-v1.1.json, dev-v1.1.json (or *-v2.0.json), vocab.txt (WordPiece learnt
from the generated text), tiny_bert/ (a random 2-layer BERT with hidden size 64, Hugging
Face format) and a README. Output is deterministic for a seed. Dev questions list
several equivalent gold answers where the text allows ("a sculptor", "sculptor").
"""

from __future__ import annotations

import argparse
import json
import random
import sys
from pathlib import Path
from typing import Any

from bert.tiny import build_vocab, save_tiny_bert
from common import cli
from common.atomic import atomic_write

FIRST_NAMES = [
    "Talia",
    "Oren",
    "Maris",
    "Dovan",
    "Elsbeth",
    "Corin",
    "Yara",
    "Tobin",
    "Ilse",
    "Marek",
    "Nadia",
    "Pell",
    "Soraya",
    "Brann",
    "Liesl",
    "Kasimir",
    "Odile",
    "Ferran",
    "Imke",
    "Anselm",
    "Rhosyn",
    "Tamsin",
    "Evander",
    "Mirela",
    "Casimir",
    "Junia",
    "Leoric",
    "Wilda",
    "Emrys",
    "Saskia",
]
SURNAME_HEADS = [
    "Ash",
    "Bren",
    "Cal",
    "Dar",
    "Fen",
    "Gal",
    "Hol",
    "Kes",
    "Lor",
    "Mor",
    "Nor",
    "Quen",
    "Ros",
    "Tal",
    "Vel",
    "Wren",
]
SURNAME_TAILS = ["wick", "ford", "ven", "dale", "mere", "holt", "by", "ton", "stead", "ley"]
PLACE_HEADS = [
    "Ost",
    "Bel",
    "Carn",
    "Dun",
    "Elm",
    "Gar",
    "Hawk",
    "Ivy",
    "Mar",
    "Pen",
    "Rath",
    "Sel",
    "Tor",
    "Ul",
    "Wyn",
]
PLACE_TAILS = ["vale", "brook", "haven", "moor", "field", "port", "crest", "gate", "more", "ridge"]
PROFESSIONS = [
    "cartographer",
    "botanist",
    "clockmaker",
    "sculptor",
    "astronomer",
    "shipwright",
    "physician",
    "glassblower",
    "poet",
    "engineer",
    "weaver",
    "composer",
]
ORG_KINDS = ["Society", "Guild", "Institute", "Academy", "Circle", "Company"]

ANSWERABLE_SHARE = 2 / 3  # of the questions in version 2.0


def _surname(rng: random.Random) -> str:
    return rng.choice(SURNAME_HEADS) + rng.choice(SURNAME_TAILS)


def _place(rng: random.Random) -> str:
    return rng.choice(PLACE_HEADS) + rng.choice(PLACE_TAILS)


def _person(rng: random.Random, taken: set[str]) -> dict[str, Any]:
    while True:
        name = f"{rng.choice(FIRST_NAMES)} {_surname(rng)}"
        if name not in taken:
            taken.add(name)
            break
    born = rng.randint(1700, 1950)
    return {
        "name": name,
        "born_place": _place(rng),
        "born_year": str(born),
        "profession": rng.choice(PROFESSIONS),
        "work_place": _place(rng),
        "org": f"the {_place(rng)} {rng.choice(ORG_KINDS)}",
        "org_year": str(born + rng.randint(20, 50)),
        "moved_to": _place(rng) if rng.random() < 0.5 else None,
    }


def _sentences(p: dict[str, Any]) -> list[str]:
    name = p["name"]
    out = [
        f"{name} was born in {p['born_place']} in {p['born_year']}.",
        f"{name} worked as a {p['profession']} in {p['work_place']}.",
        f"In {p['org_year']}, {name} founded {p['org']}.",
    ]
    if p["moved_to"]:
        out.append(f"{name} later moved to {p['moved_to']}.")
    return out


def _questions(p: dict[str, Any], rng: random.Random) -> list[tuple[str, list[str], int]]:
    """(question, gold answers: the span first, then equivalent forms, index of the
    sentence of `_sentences` holding the span) about person p."""
    name, org = p["name"], p["org"]
    qs = [
        (
            rng.choice(("Where was {} born?", "In which town was {} born?")).format(name),
            [p["born_place"]],
            0,
        ),
        (
            rng.choice(("When was {} born?", "In what year was {} born?")).format(name),
            [p["born_year"]],
            0,
        ),
        (f"What did {name} work as?", [p["profession"], f"a {p['profession']}"], 1),
        (f"Where did {name} work?", [p["work_place"]], 1),
        (f"Who founded {org}?", [name], 2),
        (f"When was {org} founded?", [p["org_year"]], 2),
    ]
    if p["moved_to"]:
        qs.append((f"Where did {name} move to?", [p["moved_to"]], 3))
    return qs


def _unanswerable(p: dict[str, Any], stranger: dict[str, Any], rng: random.Random) -> str:
    """A question the paragraph of `p` cannot answer."""
    options = [
        f"Where was {stranger['name']} born?",
        f"When was {stranger['name']} born?",
        f"Who founded {stranger['org']}?",
    ]
    if not p["moved_to"]:
        options.append(f"Where did {p['name']} move to?")
    return rng.choice(options)


def generate_paragraph(
    rng: random.Random, n_questions: int, version_2: bool, prefix: str, people: int = 1
) -> dict[str, Any]:
    """One paragraph about `people` invented people with `n_questions` questions."""
    taken: set[str] = set()
    persons = [_person(rng, taken) for _ in range(people)]
    stranger = _person(rng, taken)
    sentences = [_sentences(p) for p in persons]
    context = " ".join(s for person in sentences for s in person)
    offsets = []  # offsets[k][j]: where sentence j of person k begins in the context
    position = 0
    for person in sentences:
        offsets.append([])
        for sentence in person:
            offsets[-1].append(position)
            position += len(sentence) + 1
    qas = []
    for q in range(n_questions):
        k = rng.randrange(people)
        qid = f"{prefix}q{q}"
        if version_2 and rng.random() > ANSWERABLE_SHARE:
            question = _unanswerable(persons[k], stranger, rng)
            qas.append({"id": qid, "question": question, "answers": [], "is_impossible": True})
            continue
        question, golds, sentence = rng.choice(_questions(persons[k], rng))
        start = offsets[k][sentence]
        answers = [{"text": g, "answer_start": context.index(g, start)} for g in golds]
        entry: dict[str, Any] = {"id": qid, "question": question, "answers": answers}
        if version_2:
            entry["is_impossible"] = False
        qas.append(entry)
    return {"context": context, "qas": qas}


def generate(
    n_questions: int,
    seed: int,
    version_2: bool = False,
    per_paragraph: int = 4,
    split: str = "",
    people: int = 1,
) -> dict[str, Any]:
    """A SQuAD-format dict with `n_questions` questions, `per_paragraph` per paragraph
    (training form: one answer each when `split` is "train")."""
    rng = random.Random(seed)
    paragraphs = []
    made = 0
    while made < n_questions:
        count = min(per_paragraph, n_questions - made)
        prefix = f"{split}{seed}p{len(paragraphs)}"
        paragraph = generate_paragraph(rng, count, version_2, prefix, people)
        if split == "train":
            for qa in paragraph["qas"]:
                qa["answers"] = qa["answers"][:1]
        paragraphs.append(paragraph)
        made += count
    articles = [
        {"title": f"Generated article {i // 20}", "paragraphs": paragraphs[i : i + 20]}
        for i in range(0, len(paragraphs), 20)
    ]
    return {
        "version": "v2.0" if version_2 else "1.1",
        "generated": "bert.toy_squad: invented people and places; not SQuAD",
        "data": articles,
    }


def texts_of(dataset: dict[str, Any]) -> list[str]:
    """Contexts and questions (for learning a vocabulary)."""
    out = []
    for article in dataset["data"]:
        for paragraph in article["paragraphs"]:
            out.append(paragraph["context"])
            out.extend(qa["question"] for qa in paragraph["qas"])
    return out


def _write_json(path: Path, obj: Any) -> None:
    with atomic_write(path, "w", encoding="utf-8") as f:
        json.dump(obj, f, indent=1)
        f.write("\n")


README = """Generated by `python -m bert.toy_squad` (seed {seed}); NOT SQuAD.
Paragraphs about invented people, places and societies; every answer is a span of its
paragraph{v2}. SQuAD's JSON format, so bert.run_squad and bert.squad_eval read it.
vocab.txt: WordPiece vocabulary learnt from these texts; tiny_bert/: a randomly
initialised 2-layer BERT (hidden size 64) to fine-tune from.
"""


def write_toy_squad(
    out_dir: str | Path,
    train: int = 3000,
    dev: int = 300,
    seed: int = 0,
    version_2: bool = False,
    vocab_size: int = 600,
    dropout: float = 0.1,
    people: int = 1,
) -> dict[str, Path]:
    """Write the data, vocabulary and tiny model; returns their paths by name."""
    out = Path(out_dir)
    suffix = "v2.0" if version_2 else "v1.1"
    train_set = generate(train, seed, version_2, split="train", people=people)
    dev_set = generate(dev, seed + 1, version_2, split="dev", people=people)
    paths = {"train": out / f"train-{suffix}.json", "dev": out / f"dev-{suffix}.json"}
    _write_json(paths["train"], train_set)
    _write_json(paths["dev"], dev_set)
    paths["vocab"] = build_vocab(
        texts_of(train_set) + texts_of(dev_set), out / "vocab.txt", vocab_size
    )
    paths["model"] = save_tiny_bert(out / "tiny_bert", paths["vocab"], seed=seed, dropout=dropout)
    v2 = "; about a third of the questions are unanswerable" if version_2 else ""
    (out / "README").write_text(README.format(seed=seed, v2=v2), encoding="utf-8")
    return paths


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = cli.ArgumentParser(prog="python -m bert.toy_squad", description=__doc__.splitlines()[0])
    p.add_argument(
        "--out_dir",
        type=Path,
        default=Path("data/toy_squad"),
        help="folder for the JSON files, vocab.txt, tiny_bert/ and README",
    )
    p.add_argument("--train", type=cli.positive_int, default=3000, help="training questions")
    p.add_argument("--dev", type=cli.positive_int, default=300, help="dev questions")
    p.add_argument(
        "--version",
        choices=("1.1", "2.0"),
        default="1.1",
        help="SQuAD format; 2.0 adds unanswerable questions",
    )
    p.add_argument(
        "--seed", type=cli.nonnegative_int, default=0, help="same seed, same data and model"
    )
    p.add_argument(
        "--vocab_size",
        type=cli.positive_int,
        default=600,
        help="vocabulary size (special tokens and single characters always included); rarer "
        "words are cut into pieces",
    )
    p.add_argument("--dropout", type=cli.probability, default=0.1, help="dropout of the tiny model")
    p.add_argument(
        "--people_per_paragraph",
        type=cli.positive_int,
        default=1,
        help="people each paragraph tells of; 2+: a harder task",
    )
    args = p.parse_args(argv)
    check_flags(p, args)
    return args


def check_flags(p: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """Refuse what `generate` cannot make, before anything is written."""
    surnames = {head + tail for head in SURNAME_HEADS for tail in SURNAME_TAILS}
    most = len(FIRST_NAMES) * len(surnames) - 1  # one more name for a stranger
    cli.check_args(
        p,
        f"--people_per_paragraph {args.people_per_paragraph} exceeds the {most} distinct "
        "names the generator has"
        if args.people_per_paragraph > most
        else None,
    )


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    paths = write_toy_squad(
        args.out_dir,
        args.train,
        args.dev,
        args.seed,
        args.version == "2.0",
        args.vocab_size,
        args.dropout,
        args.people_per_paragraph,
    )
    for name, path in paths.items():
        print(f"{name}: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
