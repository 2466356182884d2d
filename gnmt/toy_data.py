"""Generated English-German sentence pairs for demos and tests (not real WMT data).

A small grammar with a fixed lexicon produces pairs that need what real translation
needs from the model: word choice, German gender and case agreement of articles and
adjectives, plural forms, and reordering (the verb moves to the end of a German
subordinate clause). Output is deterministic for a seed.

    python -m gnmt.toy_data --out-dir data/toy_en_de --train 20000 --test 300
writes train.{en,de}, dev.{en,de}, test.{en,de} (raw, detokenized text) and README.
"""

from __future__ import annotations

import argparse
import random
import sys
from pathlib import Path

from common import cli
from common.atomic import atomic_write

# English noun -> (German noun, gender, German plural)
NOUNS = {
    "dog": ("Hund", "m", "Hunde"),
    "cat": ("Katze", "f", "Katzen"),
    "house": ("Haus", "n", "Häuser"),
    "car": ("Auto", "n", "Autos"),
    "teacher": ("Lehrer", "m", "Lehrer"),
    "woman": ("Frau", "f", "Frauen"),
    "man": ("Mann", "m", "Männer"),
    "child": ("Kind", "n", "Kinder"),
    "book": ("Buch", "n", "Bücher"),
    "city": ("Stadt", "f", "Städte"),
    "garden": ("Garten", "m", "Gärten"),
    "door": ("Tür", "f", "Türen"),
    "table": ("Tisch", "m", "Tische"),
    "bird": ("Vogel", "m", "Vögel"),
    "letter": ("Brief", "m", "Briefe"),
    "student": ("Student", "m", "Studenten"),
    "apple": ("Apfel", "m", "Äpfel"),
    "river": ("Fluss", "m", "Flüsse"),
    "window": ("Fenster", "n", "Fenster"),
    "friend": ("Freund", "m", "Freunde"),
    "doctor": ("Arzt", "m", "Ärzte"),
    "street": ("Straße", "f", "Straßen"),
    "tree": ("Baum", "m", "Bäume"),
    "school": ("Schule", "f", "Schulen"),
}
ADJECTIVES = {
    "big": "groß",
    "small": "klein",
    "old": "alt",
    "new": "neu",
    "red": "rot",
    "green": "grün",
    "beautiful": "schön",
    "fast": "schnell",
    "quiet": "leise",
    "young": "jung",
    "good": "gut",
    "tired": "müde",
}
# English verb (3rd person singular, plural) -> German (3rd person singular, plural)
VERBS = {
    ("sees", "see"): ("sieht", "sehen"),
    ("finds", "find"): ("findet", "finden"),
    ("likes", "like"): ("mag", "mögen"),
    ("buys", "buy"): ("kauft", "kaufen"),
    ("needs", "need"): ("braucht", "brauchen"),
    ("visits", "visit"): ("besucht", "besuchen"),
    ("knows", "know"): ("kennt", "kennen"),
    ("paints", "paint"): ("malt", "malen"),
    ("hears", "hear"): ("hört", "hören"),
    ("has", "have"): ("hat", "haben"),
}
ADVERBS = {
    "today": "heute",
    "often": "oft",
    "never": "nie",
    "always": "immer",
    "tomorrow": "morgen",
    "here": "hier",
}
ARTICLE = {  # (gender, case) -> definite article; plural: "die"
    ("m", "nom"): "der",
    ("f", "nom"): "die",
    ("n", "nom"): "das",
    ("m", "acc"): "den",
    ("f", "acc"): "die",
    ("n", "acc"): "das",
}


def noun_phrase(rng: random.Random, case: str) -> tuple[str, str, bool]:
    """(English, German, plural?) for 'the [adjective] noun[s]' in the given case."""
    noun = rng.choice(sorted(NOUNS))
    de_noun, gender, de_plural = NOUNS[noun]
    plural = rng.random() < 0.3
    adjective = rng.choice(sorted(ADJECTIVES)) if rng.random() < 0.5 else None
    en = ["the"] + ([adjective] if adjective else []) + [noun + ("s" if plural else "")]
    if noun == "child" and plural:
        en[-1] = "children"
    elif noun in ("man", "woman") and plural:
        en[-1] = noun[:-2] + "en"
    elif noun == "city" and plural:
        en[-1] = "cities"
    article = "die" if plural else ARTICLE[(gender, case)]
    de = [article]
    if adjective:
        # Weak adjective ending after a definite article.
        weak_e = not plural and (case == "nom" or gender != "m")
        stem = ADJECTIVES[adjective].removesuffix("e")  # müde -> müd-e, müd-en
        de.append(stem + ("e" if weak_e else "en"))
    de.append(de_plural if plural else de_noun)
    return " ".join(en), " ".join(de), plural


def sentence_pair(rng: random.Random) -> tuple[str, str]:
    subj_en, subj_de, plural = noun_phrase(rng, "nom")
    obj_en, obj_de, _ = noun_phrase(rng, "acc")
    verb = rng.choice(sorted(VERBS))
    en_verb, de_verb = verb[1 if plural else 0], VERBS[verb][1 if plural else 0]
    kind = rng.random()
    if kind < 0.45:
        en = f"{subj_en} {en_verb} {obj_en}"
        de = f"{subj_de} {de_verb} {obj_de}"
    elif kind < 0.7:
        adverb = rng.choice(sorted(ADVERBS))
        en = f"{subj_en} {en_verb} {obj_en} {adverb}"
        de = f"{subj_de} {de_verb} {ADVERBS[adverb]} {obj_de}"
    else:  # German subordinate clause: the verb goes last
        en = f"I think that {subj_en} {en_verb} {obj_en}"
        de = f"ich denke, dass {subj_de} {obj_de} {de_verb}"
    return en[0].upper() + en[1:] + ".", de[0].upper() + de[1:] + "."


def write_split(out_dir: Path, name: str, pairs: list[tuple[str, str]]) -> None:
    for lang, index in (("en", 0), ("de", 1)):
        with atomic_write(out_dir / f"{name}.{lang}", "w", encoding="utf-8") as f:
            f.writelines(pair[index] + "\n" for pair in pairs)


def generate(out_dir: Path, train: int, dev: int, test: int, seed: int = 1) -> None:
    """Write the splits; held-out sentences never occur in the training split."""
    rng = random.Random(seed)
    seen: set[str] = set()
    splits: dict[str, list[tuple[str, str]]] = {"test": [], "dev": [], "train": []}
    for name, count in (("test", test), ("dev", dev)):
        while len(splits[name]) < count:
            pair = sentence_pair(rng)
            if pair[0] not in seen:
                seen.add(pair[0])
                splits[name].append(pair)
    while len(splits["train"]) < train:
        pair = sentence_pair(rng)
        if pair[0] not in seen:
            splits["train"].append(pair)
    out_dir.mkdir(parents=True, exist_ok=True)
    for name, pairs in splits.items():
        write_split(out_dir, name, pairs)
    (out_dir / "README").write_text(
        "Generated English-German pairs from gnmt/toy_data.py (a small grammar), for demos\n"
        "and tests. This is not WMT data and its BLEU says nothing about real translation.\n"
    )


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = cli.ArgumentParser(prog="python -m gnmt.toy_data", description=__doc__.splitlines()[0])
    p.add_argument(
        "--out-dir",
        type=Path,
        default=Path("data/toy_en_de"),
        help="folder for {train,dev,test}.{en,de} and README (made if missing)",
    )
    p.add_argument(
        "--train", type=cli.positive_int, default=20000, help="sentence pairs in train.{en,de}"
    )
    p.add_argument(
        "--dev", type=cli.positive_int, default=200, help="sentence pairs in dev.{en,de}"
    )
    p.add_argument(
        "--test", type=cli.positive_int, default=300, help="sentence pairs in test.{en,de}"
    )
    p.add_argument(
        "--seed", type=cli.nonnegative_int, default=1, help="random seed: equal seeds, equal files"
    )
    args = p.parse_args(argv)
    check_flags(p, args)
    return args


def check_flags(p: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """Flag combinations that cannot work, refused before any file is written."""
    cli.check_args(
        p,
        f"--out-dir {args.out_dir} is a file, not a folder" if args.out_dir.is_file() else None,
    )


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    generate(args.out_dir, args.train, args.dev, args.test, args.seed)
    print(f"wrote generated pairs to {args.out_dir}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
