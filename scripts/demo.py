"""The main job: short CPU runs on small bundled or generated data, each with its metric.

    python -m scripts.demo                 # everything
    python -m scripts.demo --only toolkit  # one part

Each part runs its real entry points as subprocesses (as a user would from the shell)
and prints one summary line; outputs go to --out-dir.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch

from bert import ner, toy_biomed
from common import cli, distributed
from common.checkpoint import read_checkpoint
from common.logging import read_dllogger
from gnmt.translate import corpus_bleu

ROOT = Path(__file__).resolve().parent.parent


def run(args: list[str], log: Path, threads: int | None = None) -> None:
    """Run `python ARGS` from the repo root, output to `log`; fail loudly with its tail.

    `threads` sets OMP_NUM_THREADS: the tiny BERTs run faster on one thread than on two
    that contend for the two cores.
    """
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    if threads:
        env["OMP_NUM_THREADS"] = str(threads)
    with open(log, "w") as f:
        proc = subprocess.run(
            [sys.executable, *args], cwd=ROOT, env=env, stdout=f, stderr=subprocess.STDOUT
        )
    if proc.returncode != 0:
        tail = "".join(log.read_text().splitlines(keepends=True)[-20:])
        raise SystemExit(f"demo step failed: python {' '.join(args)} (log {log}):\n{tail}")


def final_metrics(log_file: Path) -> dict:
    finals = [r["data"] for r in read_dllogger(log_file) if r.get("step") == []]
    return finals[-1]


def toolkit(out: Path) -> str:
    """The common/ toolkit end to end: precisions, LAMB, schedule, DDP, checkpoint, resume."""
    check = ["-m", "scripts.toolkit_check", "--steps", "40", "--print-freq", "10"]
    results = []
    for math in ("fp32", "bf16"):
        d = out / f"toolkit_{math}"
        run([*check, "--math", math, "--save-dir", str(d)], out / f"toolkit_{math}.log")
        results.append(f"{math} val acc {final_metrics(d / 'log.json')['final_val_accuracy']:.3f}")

    # Exact resume: stop after 20 of 40 steps, continue in a new process, compare weights.
    d = out / "toolkit_resume"
    run(
        [*check, "--save-dir", str(d), "--save-every", "20", "--stop-at", "20"],
        out / "toolkit_resume_1.log",
    )
    run(
        [*check, "--save-dir", str(d), "--save-every", "20", "--resume"],
        out / "toolkit_resume_2.log",
    )
    straight = read_checkpoint(out / "toolkit_fp32" / "checkpoint_last.pt")["model"]
    resumed = read_checkpoint(d / "checkpoint_last.pt")["model"]
    same = all(torch.equal(straight[k], resumed[k]) for k in straight)
    if not same:
        raise SystemExit("demo: resumed run differs from the uninterrupted one")
    results.append("resume 20+20 steps == 40 steps: identical weights")

    # Two processes with gloo, launched as on a GPU node (torchrun).
    d = out / "toolkit_ddp"
    run(
        [
            "-m",
            "torch.distributed.run",
            "--nproc_per_node",
            "2",
            "--master_port",
            str(distributed.free_port()),
            *check,
            "--save-dir",
            str(d),
        ],
        out / "toolkit_ddp.log",
    )
    results.append(
        f"2-process DDP val acc {final_metrics(d / 'log.json')['final_val_accuracy']:.3f}"
    )
    return "; ".join(results)


def gnmt(out: Path) -> str:
    """GNMT v2: generated en-de pairs -> the real preprocessing -> training -> translation."""
    raw, prepared, run_dir = out / "raw", out / "data", out / "run"
    run(
        ["-m", "gnmt.toy_data", "--out-dir", str(raw), "--train", "20000", "--test", "300"],
        out / "toy_data.log",
    )
    merges = "2000"
    run(
        [
            "-m",
            "gnmt.prepare_data",
            "--train",
            str(raw / "train"),
            "--dev",
            str(raw / "dev"),
            "--test",
            str(raw / "test"),
            "--out-dir",
            str(prepared),
            "--merges",
            merges,
        ],
        out / "prepare_data.log",
    )
    run(
        [
            "-m",
            "gnmt.train",
            "--dataset-dir",
            str(prepared),
            "--vocab",
            f"vocab.bpe.{merges}",
            "--bpe-codes",
            f"bpe.{merges}",
            "--train-src",
            f"train.tok.clean.bpe.{merges}.en",
            "--train-tgt",
            f"train.tok.clean.bpe.{merges}.de",
            "--test-src",
            f"test.tok.bpe.{merges}.en",
            "--test-tgt",
            "test.de",
            "--save-dir",
            str(run_dir),
            "--math",
            "fp32",
            "--hidden-size",
            "128",
            "--train-batch-size",
            "64",
            "--epochs",
            "4",
            "--warmup-steps",
            "50",
            "--print-freq",
            "100",
        ],
        out / "train.log",
    )
    final = final_metrics(run_dir / "log.json")
    # The trained checkpoint on raw held-out text, through Moses, BPE, search and back.
    run(
        [
            "-m",
            "gnmt.translate",
            "--model",
            str(run_dir / "model_best.pth"),
            "--input",
            str(raw / "test.en"),
            "--reference",
            str(raw / "test.de"),
            "--output",
            str(out / "test.de.trans"),
            "--math",
            "fp32",
        ],
        out / "translate.log",
    )
    bleu = corpus_bleu(
        (out / "test.de.trans").read_text(encoding="utf-8").splitlines(),
        (raw / "test.de").read_text(encoding="utf-8").splitlines(),
    )
    return (
        f"test BLEU {final['best_bleu']:.1f} after {final['steps']} steps "
        f"(hidden 128, generated en-de pairs); translate.py on the raw text: BLEU {bleu:.1f}"
    )


def transformer_xl(out: Path) -> str:
    """Transformer-XL: generated WikiText-style articles -> training -> eval.py."""
    corpus, work = out / "corpus", out / "run"
    run(["-m", "transformer_xl.toy_data", "--out-dir", str(corpus)], out / "toy_data.log")
    model = ["--n_layer", "4", "--d_model", "128", "--n_head", "4", "--d_head", "32"]
    run(
        [
            "-m", "transformer_xl.train", "--config_file", "", "--data", str(corpus),
            "--work_dir", str(work), "--precision", "fp32", *model, "--d_inner", "512",
            "--dropout", "0.1", "--optim", "lamb", "--lr", "0.02", "--warmup_step", "50",
            "--eta_min", "0.0005", "--tgt_len", "32", "--mem_len", "32", "--eval_tgt_len",
            "32", "--batch_size", "16", "--eval_batch_size", "8", "--log_interval", "50",
            "--eval_interval", "50", "--max_step", "400",
        ],
        out / "train.log",
    )  # fmt: skip
    valid = [
        r["data"]["valid_ppl"]
        for r in read_dllogger(work / "train_log.json")
        if "valid_ppl" in r.get("data", {})
    ]
    # Evaluation as the recipe does it: shorter segments, longer memory, same length.
    run(
        [
            "-m", "transformer_xl.eval", "--config_file", "", "--model",
            str(work / "checkpoint_best.pt"), "--data", str(corpus), "--work_dir", str(work),
            "--split", "test", "--batch_size", "8", "--tgt_len", "16", "--mem_len", "128",
            "--clamp_len", "128", "--same_length", "--precision", "fp32",
        ],
        out / "eval.log",
    )  # fmt: skip
    test = [r["data"] for r in read_dllogger(work / "eval_log.json") if r["step"] == ["test"]]
    return (
        f"valid ppl {valid[0]:.2f} at step 50 -> {valid[-1]:.2f} at step 400; "
        f"test ppl {test[-1]['ppl']:.2f} with eval.py (memory 128; generated articles)"
    )


def squad_f1(out: Path, data: Path, checkpoint: Path, log: Path) -> float:
    """Fine-tune `checkpoint` on the generated SQuAD-format data with run_squad.py; dev F1."""
    run(
        [
            "-m", "bert.run_squad", "--init_checkpoint", str(checkpoint), "--do_train",
            "--train_file", str(data / "train-v1.1.json"), "--do_eval", "--predict_file",
            str(data / "dev-v1.1.json"), "--max_seq_length", "128", "--doc_stride", "64",
            "--train_batch_size", "16", "--learning_rate", "2e-3", "--num_train_epochs", "3",
            "--predict_batch_size", "64", "--log_freq", "100", "--output_dir", str(out),
        ],
        log,
        threads=1,
    )  # fmt: skip
    return final_metrics(out / "dllogger.json")["f1"]


def bert(out: Path) -> str:
    """BERT fine-tuning: a tiny BERT on generated SQuAD-format questions."""
    data = out / "data"
    run(["-m", "bert.toy_squad", "--out_dir", str(data)], out / "toy_squad.log", threads=1)
    f1 = squad_f1(out / "run", data, data / "tiny_bert", out / "run_squad.log")
    return f"SQuAD-format dev F1 {f1:.1f} (tiny random-init BERT, generated questions)"


def bert_pretraining(out: Path) -> str:
    """BERT pre-training: generated dump -> HDF5 shards -> LAMB -> fine-tuned on SQuAD data."""
    toy, prepared = out / "toy", out / "data"
    run(
        ["-m", "bert.data.toy_corpus", "--out-dir", str(toy), "--articles", "200", "--books", "2"],
        out / "toy_corpus.log",
    )
    run(
        [
            "-m", "bert.data.prepare", "all", "--data-dir", str(prepared), "--dump",
            str(toy / "enwiki-toy-pages-articles.xml.bz2"), "--bookcorpus", str(toy / "books"),
            "--vocab-file", str(toy / "vocab.txt"), "--num-shards", "4", "--eval-fraction",
            "0.1", "--max-seq-length", "64", "--max-predictions", "10", "--punkt", "train",
            "--workers", "2",
        ],
        out / "prepare.log",
    )  # fmt: skip
    shards = prepared / (
        "hdf5_lower_case_1_seq_len_64_max_pred_10_masked_lm_prob_0.15_random_seed_12345_"
        "dupe_factor_5"
    )
    run(
        [
            "-m", "bert.run_pretraining", "--setup", "cpu_demo", "--vocab_file",
            str(toy / "vocab.txt"), "--input_dir", str(shards / "training"), "--eval_dir",
            str(shards / "eval"), "--output_dir", str(out / "pretraining"),
        ],
        out / "pretraining.log",
        threads=1,
    )  # fmt: skip
    records = read_dllogger(out / "pretraining" / "dllogger.json")
    mlm = [r["data"]["mlm_loss"] for r in records if "mlm_loss" in r.get("data", {})]
    squad = out / "squad"
    run(["-m", "bert.toy_squad", "--out_dir", str(squad)], out / "toy_squad.log", threads=1)
    f1 = squad_f1(
        out / "finetune", squad, out / "pretraining" / "pretrained", out / "run_squad.log"
    )
    return (
        f"MLM loss {mlm[0]:.2f} -> {mlm[-1]:.2f} in {len(mlm)} logs (generated dump); "
        f"its checkpoint fine-tuned by run_squad.py: dev F1 {f1:.1f}"
    )


def biobert(out: Path) -> str:
    """BioBERT fine-tuning: a tiny BERT tags generated disease and chemical mentions."""
    data = out / "data"
    run(["-m", "bert.toy_biomed", "--out_dir", str(data)], out / "toy_biomed.log", threads=1)
    run(
        [
            "-m", "bert.run_ner", "--data_dir", str(data), "--init_checkpoint",
            str(data / "tiny_bert"), "--do_train", "--do_eval", "--max_seq_length", "64",
            "--doc_stride", "32", "--train_batch_size", "16", "--learning_rate", "3e-3",
            "--num_train_epochs", "3", "--log_freq", "50", "--output_dir", str(out / "run"),
        ],
        out / "run_ner.log",
        threads=1,
    )  # fmt: skip
    f1 = json.loads((out / "run" / "eval_results.json").read_text())["f1"]
    chance = toy_biomed.chance_f1(ner.read_conll(data / "devel.tsv").tags)
    return (
        f"dev entity F1 {f1:.2f} (chance {chance:.2f}: random tags at the dev set's "
        "frequencies); run_ner.py, tiny random-init BERT, generated BLUE-style data"
    )


PARTS: dict[str, Callable[[Path], str]] = {
    "toolkit": toolkit,
    "gnmt": gnmt,
    "transformer_xl": transformer_xl,
    "bert": bert,
    "bert_pretraining": bert_pretraining,
    "biobert": biobert,
}


def main(argv: list[str] | None = None) -> int:
    p = cli.ArgumentParser(
        description=__doc__.splitlines()[0],
    )
    p.add_argument("--only", choices=sorted(PARTS), action="append", help="run only these parts")
    p.add_argument("--out-dir", type=Path, default=ROOT / "results" / "demo")
    args = p.parse_args(argv)
    torch.set_num_threads(max(os.cpu_count() or 1, 1))
    for name in args.only or PARTS:
        out = args.out_dir / name
        if out.is_dir():  # the demo's own earlier outputs: each run starts afresh
            shutil.rmtree(out)
        out.mkdir(parents=True)
        start = time.perf_counter()
        summary = PARTS[name](out)
        print(f"{name:>10}: {summary}  ({time.perf_counter() - start:.0f} s)", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
