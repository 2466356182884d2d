"""Generated WikiText-style articles for demos and tests (not WikiText-103).

Each article has a ` = Title = ` heading and paragraphs of tokenized sentences about a
few people and places introduced at its start, so a model that remembers earlier text
(Transformer-XL's memory) predicts names better than one that does not. Rare words
appear as `<unk>`, as in WikiText-103. Output is deterministic for a seed.

    python -m transformer_xl.toy_data --out-dir data/toy_wt --articles 400
writes train.txt, valid.txt and test.txt (80/10/10 % of the articles) and a README.
"""

from __future__ import annotations

import argparse
import random
import sys
from pathlib import Path

from common import cli
from common.atomic import atomic_write

FIRST = ["Anna", "Boris", "Clara", "David", "Elena", "Felix", "Greta", "Hugo", "Ida", "Jonas"]
LAST = ["Berg", "Hale", "Kovac", "Lind", "Moreau", "Novak", "Ortiz", "Price", "Quinn", "Roth"]
PLACES = ["Aldport", "Brenmoor", "Castell", "Dunwick", "Elmstead", "Farrow", "Glenhaven"]
ROLES = ["painter", "engineer", "composer", "sailor", "historian", "architect", "poet"]
VERBS = ["visited", "described", "painted", "left", "returned to", "wrote about", "rebuilt"]
THINGS = ["a bridge", "the harbour", "an opera", "a novel", "the cathedral", "a ship"]
YEARS = [str(y) for y in range(1850, 1950)]


def sentence(rng: random.Random, people: list[str], places: list[str]) -> str:
    person, place = rng.choice(people), rng.choice(places)
    kind = rng.random()
    if kind < 0.3:
        words = f"In {rng.choice(YEARS)} , {person} {rng.choice(VERBS)} {place} ."
    elif kind < 0.55:
        words = f"{person} was a {rng.choice(ROLES)} from {place} ."
    elif kind < 0.8:
        other = rng.choice(people)
        words = f"{person} and {other} worked on {rng.choice(THINGS)} in {place} ."
    else:
        words = f"The people of {place} remember {person} as a {rng.choice(ROLES)} ."
    # About 2 % of the words are too rare for the vocabulary, as in WikiText-103.
    return " ".join("<unk>" if rng.random() < 0.02 else w for w in words.split())


def article(rng: random.Random) -> list[str]:
    people = [f"{rng.choice(FIRST)} {rng.choice(LAST)}" for _ in range(3)]
    places = rng.sample(PLACES, 2)
    lines = ["", f" = {people[0]} = ", ""]
    for _ in range(rng.randint(2, 4)):
        body = " ".join(sentence(rng, people, places) for _ in range(rng.randint(3, 6)))
        lines.append(" " + body + " ")
    return lines


def generate(out_dir: Path, articles: int = 400, seed: int = 1) -> None:
    rng = random.Random(seed)
    docs = [article(rng) for _ in range(articles)]
    n_valid = n_test = max(articles // 10, 1)
    splits = {
        "valid": docs[:n_valid],
        "test": docs[n_valid : n_valid + n_test],
        "train": docs[n_valid + n_test :],
    }
    out_dir.mkdir(parents=True, exist_ok=True)
    for name, part in splits.items():
        with atomic_write(out_dir / f"{name}.txt", "w", encoding="utf-8") as f:
            f.writelines(line + "\n" for doc in part for line in doc)
    (out_dir / "README").write_text(
        "Generated articles from transformer_xl/toy_data.py, for demos and tests.\n"
        "This is not WikiText-103; perplexities on it say nothing about real text.\n"
    )


def check_flags(p: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """Refuse settings that would write an empty split."""
    cli.check_args(
        p,
        f"--articles {args.articles} is too few: valid and test take one article each and "
        "train needs at least one (give 3 or more)"
        if args.articles < 3
        else None,
    )


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = cli.ArgumentParser(
        prog="python -m transformer_xl.toy_data", description=__doc__.splitlines()[0]
    )
    p.add_argument(
        "--out-dir", type=Path, default=Path("data/toy_wt"),
        help="folder for train.txt, valid.txt, test.txt and a README",
    )  # fmt: skip
    p.add_argument(
        "--articles", type=cli.positive_int, default=400,
        help="articles in all (80/10/10 %% train/valid/test)",
    )  # fmt: skip
    p.add_argument(
        "--seed", type=cli.nonnegative_int, default=1, help="random seed: same seed, same text"
    )
    args = p.parse_args(argv)
    check_flags(p, args)
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    generate(args.out_dir, args.articles, args.seed)
    print(f"wrote generated articles to {args.out_dir}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
