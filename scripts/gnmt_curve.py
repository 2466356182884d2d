"""GNMT's learning curve over several seeds: test BLEU after each epoch, on parallel text
delivered as WMT16 delivers its test sets.

    python -m scripts.gnmt_curve --out-dir results/gnmt_curve [--seeds 1,2,3] \\
        [--pairs 14500] [--epochs 4] [-- EXTRA gnmt.train FLAGS]

Two corpora (--corpus):
- generated: gnmt.toy_data's English-German pairs (a grammar with agreement, plurals and
  German verb-final clauses; a deterministic mapping that a model can learn outright).
- gettext: real, human-translated pairs: the English messages of the programs installed
  on this machine and their German translations, read from the German gettext catalogs
  (`de/LC_MESSAGES/*.mo`) under --catalogs (default /usr/share). Short technical
  sentences, not news, but real language with a long tail of words and free wording.
  data/raw/SOURCES lists the catalogs and their pairs, so a figure names its data.
The held-out pairs go through the path real test sets take: written as newstest SGM
files (`newstest2014-deen-src.en.sgm`, `newstest2014-deen-ref.de.sgm`, and newstest2015
for dev: srcset/refset, doc and seg elements, XML entities), read back by gnmt.wmt16's
SGM reader, then prepared by gnmt.prepare_data (Moses tokenisation, cleaning, BPE
learned on the training text, the vocabulary). Every seed trains on the same files with
the recipe's defaults except the settings below (hidden 128, 4 layers, batch 32, warm-up
200 steps, the schedule's decay over the last third), and gnmt.train scores the test set
with sacreBLEU after each epoch.

Written into --out-dir: data/ (raw and prepared), seed_S/ (each run, as
scripts/stability.py runs it: console output in seed_S.out), and, atomically, curve.md
and curve.json: the BLEU of each seed after each epoch (with its step), their mean, and
the seeds' mean and spread of the final BLEU. Seed folders that exist are refused; data/
is made once and used again by later seeds (of the same --corpus only).
"""

from __future__ import annotations

import argparse
import html
import random
import statistics
import struct
import sys
from pathlib import Path
from typing import Any

from common import cli
from common.atomic import atomic_write
from common.benchmark import markdown_table, write_json
from common.errors import UserError
from common.logging import jsonable, read_dllogger
from gnmt import prepare_data, toy_data, wmt16
from scripts import stability

MERGES = 2000
# newstest set -> (role, WMT16's SGM names for en and de)
SGM_SETS = {
    "newstest2014": ("test", "newstest2014-deen-src.en.sgm", "newstest2014-deen-ref.de.sgm"),
    "newstest2015": ("dev", "newstest2015-ende-src.en.sgm", "newstest2015-ende-ref.de.sgm"),
}
DOC_SIZE = 20  # segments per <doc>, as news articles split a test set


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m scripts.gnmt_curve",
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("--out-dir", type=Path, required=True, help="data, runs and the report")
    p.add_argument(
        "--corpus",
        choices=("generated", "gettext"),
        default="generated",
        help="generated pairs, or the German gettext catalogs under --catalogs",
    )
    p.add_argument(
        "--catalogs",
        type=Path,
        nargs="+",
        default=[Path("/usr/share")],
        help="folders searched for de/LC_MESSAGES/*.mo (--corpus gettext)",
    )
    p.add_argument("--seeds", type=stability.seeds_arg, default=[1, 2, 3], help="training seeds")
    p.add_argument("--pairs", type=cli.positive_int, default=14500, help="most training pairs")
    p.add_argument("--test", type=cli.positive_int, default=500, help="test (and dev) pairs")
    p.add_argument("--data-seed", type=cli.nonnegative_int, default=1, help="seed of the data")
    p.add_argument("--epochs", type=cli.positive_int, default=4, help="epochs (BLEU after each)")
    p.add_argument("--batch-size", type=cli.positive_int, default=32, help="sentences per step")
    p.add_argument("--hidden-size", type=cli.positive_int, default=128, help="model width")
    p.add_argument("--threads", type=cli.positive_int, default=None, help="CPU threads per run")
    p.add_argument("train_flags", nargs=argparse.REMAINDER, help="after --: more gnmt.train flags")
    args = p.parse_args(argv)
    if args.train_flags[:1] == ["--"]:
        args.train_flags = args.train_flags[1:]
    elif args.train_flags:
        p.error(
            f"unrecognized arguments: {' '.join(args.train_flags)} (put gnmt.train flags after --)"
        )
    for flag in ("--seed", "--save-dir", "--epochs", "--train-batch-size", "--dataset-dir"):
        if any(f == flag or f.startswith(flag + "=") for f in args.train_flags):
            p.error(f"{flag} is set by this script; it may not follow --")
    return args


# ------------------------------------------------------------------------------- data

MO_MAGIC = 0x950412DE
WORDS = (3, 40)  # English messages of this many words are kept


def read_mo(path: Path) -> list[tuple[str, str]]:
    """The (msgid, msgstr) pairs of a compiled gettext catalog, in file order: context
    dropped, plural entries as their first forms, the header entry left out."""
    data = path.read_bytes()
    try:
        order = next((o for o in "<>" if data[:4] == struct.pack(o + "I", MO_MAGIC)), None)
        if order is None:
            raise ValueError(f"it starts with {data[:4].hex()}, not gettext's magic number")
        _, count, ids_at, strs_at = struct.unpack(order + "4I", data[4:20])

        def table(at: int) -> list[bytes]:
            out = []
            for i in range(count):
                length, offset = struct.unpack(order + "2I", data[at + 8 * i : at + 8 * i + 8])
                if offset + length > len(data):
                    raise ValueError(f"entry {i} runs past the end of the file")
                out.append(data[offset : offset + length])
            return out

        ids, strs = table(ids_at), table(strs_at)
        entries = dict(zip(ids, strs, strict=True))
        charset = "utf-8"
        for line in entries.pop(b"", b"").decode("ascii", "replace").splitlines():
            if line.lower().startswith("content-type:") and "charset=" in line:
                charset = line.split("charset=", 1)[1].strip() or charset
        pairs = []
        for msgid, msgstr in entries.items():
            en = msgid.decode(charset).split("\x04")[-1].split("\x00")[0]
            pairs.append((en, msgstr.decode(charset).split("\x00")[0]))
    except (struct.error, ValueError, LookupError) as e:  # UnicodeDecodeError is a ValueError
        raise UserError(f"{path}: not a readable gettext catalog ({e})") from None
    return pairs


def catalog_files(roots: list[Path]) -> list[Path]:
    """The German catalogs under `roots`, sorted (a missing folder is an error)."""
    for root in roots:
        if not root.is_dir():
            raise UserError(f"--catalogs {root}: no such folder")
    found = {
        p for root in roots for p in root.rglob("*.mo")
        if p.parent.name == "LC_MESSAGES" and p.parent.parent.name == "de" and p.is_file()
    }  # fmt: skip
    return sorted(found)


def catalog_corpus(
    files: list[Path], train: int, test: int, dev: int, seed: int
) -> tuple[dict[str, list[tuple[str, str]]], dict[str, int]]:
    """Splits of the catalogs' translated messages: whitespace folded, untranslated and
    unchanged messages and those outside WORDS left out, pairs deduplicated. Messages are
    shuffled by `seed` and split by their English text, so no held-out English sentence
    occurs in training; a held-out message keeps one reference, a training one all its
    translations. Also the number of pairs each catalog gave."""
    by_english: dict[str, set[str]] = {}
    counts = {}
    for path in files:
        kept = 0
        for en, de in read_mo(path):
            en, de = " ".join(en.split()), " ".join(de.split())
            if de and en != de and WORDS[0] <= len(en.split()) <= WORDS[1]:
                by_english.setdefault(en, set()).add(de)
                kept += 1
        counts[str(path)] = kept
    english = sorted(by_english)
    random.Random(seed).shuffle(english)
    if len(english) < test + dev + 1:
        raise UserError(
            f"the catalogs give {len(english)} usable English messages; "
            f"--test {test} needs more than {test + dev} (test and dev)"
        )
    training = [(en, de) for en in english[test + dev :] for de in sorted(by_english[en])]
    splits: dict[str, list[tuple[str, str]]] = {
        "test": [(en, min(by_english[en])) for en in english[:test]],
        "dev": [(en, min(by_english[en])) for en in english[test : test + dev]],
        "train": training[:train],
    }
    return splits, counts


def write_catalog_corpus(args: argparse.Namespace, raw: Path) -> None:
    files = catalog_files(args.catalogs)
    if not files:
        roots = " ".join(map(str, args.catalogs))
        raise UserError(f"--catalogs {roots}: no German catalog (de/LC_MESSAGES/*.mo) found")
    splits, counts = catalog_corpus(files, args.pairs, args.test, args.test, args.data_seed)
    raw.mkdir(parents=True, exist_ok=True)
    for name, pairs in splits.items():
        toy_data.write_split(raw, name, pairs)
    lines = [f"{n} pairs from {path}" for path, n in counts.items()]
    sizes = ", ".join(f"{len(p)} {name}" for name, p in splits.items())
    with atomic_write(raw / "SOURCES", "w", encoding="utf-8") as f:
        f.write(f"English-German gettext messages: {sizes} pairs, from\n")
        f.write("\n".join(lines) + "\n")


def write_sgm(path: Path, set_id: str, lang: str, role: str, lines: list[str]) -> None:
    """`lines` as a WMT newstest SGM file: documents of DOC_SIZE segments, XML-escaped."""
    tag = "srcset" if role == "src" else "refset"
    head = f'<{tag} setid="{set_id}" srclang="any"'
    head += ">" if role == "src" else f' trglang="{lang}">'
    out = [head]
    for start in range(0, len(lines), DOC_SIZE):
        doc = start // DOC_SIZE + 1
        out.append(f'<doc sysid="ref" docid="toy-{doc}" genre="news" origlang="en">')
        out.append("<p>")
        for i, line in enumerate(lines[start : start + DOC_SIZE], start=1):
            out.append(f'<seg id="{i}">{html.escape(line, quote=False)}</seg>')
        out.append("</p>")
        out.append("</doc>")
    out.append(f"</{tag}>")
    with atomic_write(path, "w", encoding="utf-8") as f:
        f.write("\n".join(out) + "\n")


def make_data(args: argparse.Namespace) -> Path:
    """Generated pairs -> SGM test sets -> raw text -> gnmt.prepare_data; the prepared
    folder. Done once: a folder that holds the prepared vocabulary is used as it is."""
    data = args.out_dir / "data"
    prepared = data / "prepared"
    marker = data / "CORPUS"
    if (prepared / f"vocab.bpe.{MERGES}").is_file():
        made = marker.read_text(encoding="utf-8").strip() if marker.is_file() else "generated"
        if made != args.corpus:
            raise UserError(f"{data} holds the {made} corpus, not --corpus {args.corpus}")
        print(f"using the data in {data}", flush=True)
        return prepared
    raw, sgm = data / "raw", data / "sgm"
    if args.corpus == "gettext":
        write_catalog_corpus(args, raw)
    else:
        toy_data.generate(raw, args.pairs, args.test, args.test, seed=args.data_seed)
    sgm.mkdir(parents=True, exist_ok=True)
    for set_id, (split, en_name, de_name) in SGM_SETS.items():
        for lang, name, role in (("en", en_name, "src"), ("de", de_name, "ref")):
            lines = (raw / f"{split}.{lang}").read_text(encoding="utf-8").splitlines()
            write_sgm(sgm / name, set_id, lang, role, lines)
            count = wmt16.sgm_to_text(sgm / name, raw / f"{set_id}.{lang}")
            if count != len(lines):
                raise UserError(f"{sgm / name}: {count} segments read back, {len(lines)} written")
    prepare_data.prepare(
        raw / "train", raw / "newstest2015", raw / "newstest2014", prepared,
        merges=MERGES, test_name="newstest2014",
    )  # fmt: skip
    (prepared / "newstest2014.de").write_bytes((raw / "newstest2014.de").read_bytes())
    with atomic_write(marker, "w", encoding="utf-8") as f:
        f.write(args.corpus + "\n")
    return prepared


def train_flags(args: argparse.Namespace, prepared: Path) -> list[str]:
    flags = [
        "--dataset-dir", str(prepared), "--vocab", f"vocab.bpe.{MERGES}",
        "--bpe-codes", f"bpe.{MERGES}",
        "--train-src", f"train.tok.clean.bpe.{MERGES}.en",
        "--train-tgt", f"train.tok.clean.bpe.{MERGES}.de",
        "--test-src", f"newstest2014.tok.bpe.{MERGES}.en", "--test-tgt", "newstest2014.de",
        "--math", "fp32", "--hidden-size", str(args.hidden_size),
        "--train-batch-size", str(args.batch_size), "--epochs", str(args.epochs),
        "--print-freq", "100",
    ]  # fmt: skip
    if args.threads:
        flags += ["--threads", str(args.threads)]
    return flags + args.train_flags


# ----------------------------------------------------------------------------- report


def epoch_bleu(log: Path) -> list[dict[str, Any]]:
    """[{epoch, step, bleu}] from a gnmt.train log: the epoch records with a BLEU, each
    with the step count of the checkpoint saved after it."""
    rows: list[dict[str, Any]] = []
    steps_per_epoch = None
    for record in read_dllogger(log):
        data, step = record.get("data") or {}, record.get("step")
        if record.get("type") != "LOG":
            continue
        if step == [] and "steps" in data and rows:
            steps_per_epoch = data["steps"] // rows[-1]["epoch"]
        elif isinstance(step, list) and len(step) == 1 and "bleu" in data:
            rows = [r for r in rows if r["epoch"] < step[0]]  # a resumed run logs again
            rows.append({"epoch": step[0], "bleu": float(data["bleu"])})
    for row in rows:
        row["step"] = row["epoch"] * steps_per_epoch if steps_per_epoch else None
    return rows


def build_report(args: argparse.Namespace, curves: dict[int, list[dict]]) -> dict[str, Any]:
    epochs = sorted({r["epoch"] for rows in curves.values() for r in rows})
    table = []
    for epoch in epochs:
        row: dict[str, Any] = {"epoch": epoch}
        row["step"] = next(
            r["step"] for rows in curves.values() for r in rows if r["epoch"] == epoch
        )
        values = []
        for seed, rows in curves.items():
            value = next((r["bleu"] for r in rows if r["epoch"] == epoch), None)
            row[f"seed {seed}"] = value
            if value is not None:
                values.append(value)
        row["mean"] = statistics.fmean(values) if values else None
        table.append(row)
    finals = [rows[-1]["bleu"] for rows in curves.values() if rows]
    return {
        "settings": jsonable(vars(args)),
        "curve": table,
        "final": {
            "mean": statistics.fmean(finals) if finals else None,
            "std": statistics.stdev(finals) if len(finals) > 1 else None,
            "min": min(finals, default=None),
            "max": max(finals, default=None),
        },
    }


def write_report(report: dict[str, Any], out_dir: Path) -> list[Path]:
    final = report["final"]
    text = "# GNMT learning curve: test BLEU after each epoch\n\n"
    text += markdown_table(report["curve"]) + "\n\n"
    if final["mean"] is not None:
        text += f"Final BLEU: mean {final['mean']:.2f}"
        if final["std"] is not None:
            text += f", std {final['std']:.2f}"
        text += f", min {final['min']:.2f}, max {final['max']:.2f}\n"
    md, js = out_dir / "curve.md", out_dir / "curve.json"
    with atomic_write(md, "w", encoding="utf-8") as f:
        f.write(text)
    write_json(js, report)
    return [md, js]


def curve(args: argparse.Namespace) -> int:
    stability.refuse_used_folders(args.out_dir, args.seeds)
    prepared = make_data(args)
    flags = train_flags(args, prepared)
    recipe = stability.RECIPES["gnmt.train"]
    curves, failed = {}, []
    for seed in args.seeds:
        folder = stability.seed_folder(args.out_dir, seed)
        result = stability.run_seed(recipe, flags, seed, folder, "best_bleu")
        if result.error:
            print(stability.failure_text(result), file=sys.stderr, flush=True)
            failed.append(seed)
            continue
        curves[seed] = epoch_bleu(folder / recipe.log_name)
    report = build_report(args, curves)
    for path in write_report(report, args.out_dir):
        print(path)
    print((args.out_dir / "curve.md").read_text(encoding="utf-8"), flush=True)
    if failed:
        print(f"failed seeds: {', '.join(map(str, failed))}", file=sys.stderr)
    return 1 if failed else 0


def main(argv: list[str] | None = None) -> int:
    return cli.run_main(lambda: curve(parse_args(argv)))


if __name__ == "__main__":
    sys.exit(main())
