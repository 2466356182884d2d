"""Generated biomedical-style NER data in the BLUE benchmark's layout, for demos and tests.

This is NOT BC5CDR: every sentence comes from a small grammar of made-up abstract
sentences ("<chemical> - induced <disease> in rats .", "patients with <disease> were
given <chemical> ."). Chemical names are built from a prefix and a drug-class suffix
(flu + oxacin), disease names from an organ stem and a suffix (nephr + itis) or a
two-word pattern ("acute renal failure"). A quarter of the prefix-suffix pairs occur
only in dev and test (about a fifth of their mentions): names a model never saw in
training and can tag only from their pieces and their context.

    python -m bert.toy_biomed --out_dir data/toy_biomed --train 600 --dev 150 --test 150
writes train.tsv, devel.tsv and test.tsv (BLUE's names: one "token<TAB>tag" line per
word, a blank line after each sentence; IOB2 tags B-Chemical, I-Chemical, B-Disease,
I-Disease, O), vocab.txt (WordPiece learnt from the generated text), tiny_bert/ (a
random 2-layer BERT with hidden size 64, Hugging Face format) and a README. Output is
deterministic for a seed.

    chance_f1(tags)   # entity F1 of tags drawn at random with the file's tag frequencies
"""

from __future__ import annotations

import argparse
import random
import sys
from collections.abc import Sequence
from pathlib import Path

from bert import ner
from bert.run_ner import DATA_FILES  # BLUE's file names
from bert.tiny import build_vocab, save_tiny_bert
from common import cli
from common.atomic import atomic_write

Tagged = list[tuple[str, str]]  # (word, tag) of one sentence

CHEMICAL_PREFIXES = ["ami", "beta", "clo", "dexa", "flu", "keto", "meto", "pra", "sulfa", "tri",
                     "vera", "zolo", "carbo", "levo", "nor"]  # fmt: skip
CHEMICAL_SUFFIXES = ["azole", "mycin", "platin", "olol", "pril", "statin", "oxacin", "amine",
                     "pam", "sartan"]  # fmt: skip
CHEMICAL_WORDS = [["valproic", "acid"], ["lithium", "carbonate"], ["sodium", "nitrite"],
                  ["nicotine"], ["cocaine"], ["caffeine"]]  # fmt: skip
DISEASE_STEMS = ["nephr", "hepat", "cardi", "neur", "derm", "arthr", "gastr", "myel",
                 "enceph", "pancreat", "col", "retin"]  # fmt: skip
DISEASE_SUFFIXES = ["itis", "opathy", "otoxicity", "osis", "algia"]
DISEASE_ADJECTIVES = ["acute", "chronic", "severe", "renal", "hepatic", "cardiac", "ventricular"]
DISEASE_NOUNS = ["failure", "injury", "arrhythmia", "hypertension", "necrosis", "seizures"]

# Sentence templates: C and C2 are chemical slots, D and D2 disease slots, N a number.
TEMPLATES = [
    "C - induced D in rats .",
    "patients with D were given C .",
    "D developed after N days of C therapy .",
    "the risk of D was higher in the C group .",
    "C did not prevent D .",
    "a case of D associated with C is reported .",
    "treatment with C reduced the incidence of D .",
    "no D was seen with C or C2 .",
    "D and D2 are common in elderly patients .",
    "the dose of C was N mg / kg .",
    "C and C2 were compared in N patients with D .",
    "we describe N patients who developed D during C treatment .",
    "serum levels of C rose in mice with D .",
    "the mechanism of C toxicity remains unclear .",
    "D was reversed when C was withdrawn .",
]


def compound(rng: random.Random, heads: list[str], tails: list[str], held_out: bool) -> str:
    """head + tail; a quarter of the pairs ((i + j) % 4 == 0) only when `held_out`."""
    while True:
        i, j = rng.randrange(len(heads)), rng.randrange(len(tails))
        if held_out or (i + j) % 4:
            return heads[i] + tails[j]


def chemical(rng: random.Random, held_out: bool) -> list[str]:
    """The words of a made-up chemical name."""
    if rng.random() < 0.2:
        return list(rng.choice(CHEMICAL_WORDS))
    return [compound(rng, CHEMICAL_PREFIXES, CHEMICAL_SUFFIXES, held_out)]


def disease(rng: random.Random, held_out: bool) -> list[str]:
    """The words of a made-up disease name."""
    if rng.random() < 0.3:
        return [rng.choice(DISEASE_ADJECTIVES), rng.choice(DISEASE_NOUNS)]
    return [compound(rng, DISEASE_STEMS, DISEASE_SUFFIXES, held_out)]


def mention(words: list[str], kind: str) -> Tagged:
    """IOB2 tags of one entity."""
    return [(w, ("B-" if i == 0 else "I-") + kind) for i, w in enumerate(words)]


def sentence(rng: random.Random, held_out: bool) -> Tagged:
    """One generated sentence, tagged word by word; `held_out`: names may use the
    prefix-suffix pairs that training sentences never use."""
    out: Tagged = []
    for slot in rng.choice(TEMPLATES).split():
        if slot in ("C", "C2"):
            out += mention(chemical(rng, held_out), "Chemical")
        elif slot in ("D", "D2"):
            out += mention(disease(rng, held_out), "Disease")
        elif slot == "N":
            out.append((str(rng.randint(2, 60)), "O"))
        else:
            out.append((slot, "O"))
    return out


def generate(n: int, seed: int, held_out: bool = False) -> list[Tagged]:
    """`n` sentences, the same for the same seed."""
    rng = random.Random(seed)
    return [sentence(rng, held_out) for _ in range(n)]


def chance_f1(tags: Sequence[Sequence[str]], seed: int = 0) -> float:
    """Entity F1 against `tags` of tags drawn word by word at random with the
    frequencies of `tags` themselves (tagging every word O would score 0)."""
    rng = random.Random(seed)
    pool = [t for s in tags for t in s]
    return ner.entity_scores(tags, [[rng.choice(pool) for _ in s] for s in tags])["f1"]


def write_split(path: Path, sentences: list[Tagged]) -> Path:
    """`sentences` as a BLUE NER file: "token<TAB>tag" lines, a blank line after each."""
    with atomic_write(path, "w", encoding="utf-8", newline="\n") as f:
        for s in sentences:
            f.writelines(f"{word}\t{tag}\n" for word, tag in s)
            f.write("\n")
    return path


README = """Generated by `python -m bert.toy_biomed` (seed {seed}); NOT BC5CDR.
Made-up abstract sentences with invented chemical and disease names, in the BLUE
benchmark's NER layout (train.tsv, devel.tsv, test.tsv: token<TAB>tag, IOB2 tags with
the types Chemical and Disease), so bert.run_ner reads them with --data_dir.
vocab.txt: WordPiece vocabulary learnt from these texts; tiny_bert/: a randomly
initialised 2-layer BERT (hidden size 64) to fine-tune from.
"""


def write_toy_biomed(
    out_dir: str | Path,
    train: int = 600,
    dev: int = 150,
    test: int = 150,
    seed: int = 0,
    vocab_size: int = 300,
) -> dict[str, Path]:
    """Write the three files, the vocabulary and the tiny model; their paths by name."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    splits = {"train": train, "dev": dev, "test": test}
    paths, texts = {}, []
    for i, (name, n) in enumerate(splits.items()):
        sentences = generate(n, seed * 3 + i, held_out=name != "train")  # a stream per split
        paths[name] = write_split(out / DATA_FILES[name], sentences)
        texts += [" ".join(w for w, _ in s) for s in sentences]
    paths["vocab"] = build_vocab(texts, out / "vocab.txt", vocab_size)
    paths["model"] = save_tiny_bert(out / "tiny_bert", paths["vocab"], seed=seed)
    (out / "README").write_text(README.format(seed=seed), encoding="utf-8")
    return paths


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = cli.ArgumentParser(prog="python -m bert.toy_biomed", description=__doc__.splitlines()[0])
    p.add_argument(
        "--out_dir",
        type=Path,
        default=Path("data/toy_biomed"),
        help="folder for the TSV files, vocab.txt, tiny_bert/ and README",
    )
    p.add_argument("--train", type=cli.positive_int, default=600, help="training sentences")
    p.add_argument("--dev", type=cli.positive_int, default=150, help="dev sentences")
    p.add_argument("--test", type=cli.positive_int, default=150, help="test sentences")
    p.add_argument(
        "--seed", type=cli.nonnegative_int, default=0, help="same seed, same data and model"
    )
    p.add_argument(
        "--vocab_size",
        type=cli.positive_int,
        default=300,
        help="vocabulary size (special tokens and single characters always included); rarer "
        "words are cut into pieces",
    )
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    paths = write_toy_biomed(
        args.out_dir, args.train, args.dev, args.test, args.seed, args.vocab_size
    )
    for name, path in paths.items():
        print(f"{name}: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
