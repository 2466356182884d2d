"""Fine-tune BERT for named-entity recognition (BioBERT's BC5CDR, NCBI-disease, CoNLL-2003),
score the dev set, tag the test set.

    python -m bert.run_ner --data_dir data/BC5CDR/disease --init_checkpoint BIOBERT_DIR \\
        --no-do_lower_case --do_train --do_eval --do_predict --output_dir OUT
    python -m bert.run_ner --train_file eng.train --dev_file eng.testa --test_file eng.testb \\
        --init_checkpoint MODEL_DIR --do_train --do_eval --do_predict --output_dir OUT
    python -m torch.distributed.run --standalone --nproc_per_node 8 -m bert.run_ner ...

Input files are CoNLL-style (bert/ner.py: one token per line, the tag in the last
column, a blank line between sentences); --data_dir names a folder holding train.tsv,
devel.tsv and test.tsv, as the BLUE benchmark ships BC5CDR, and --train_file,
--dev_file, --test_file name the files one by one (they win over --data_dir). The tags
are those of the training file, saved with the model as config.json's id2label; without
--do_train the model's own tags are used. Training runs on every process
(bert/finetune.py: batches, schedule, precision, checkpoints, resume); evaluation and
prediction run on rank 0. Every file is read and checked before training starts.

Outputs in --output_dir: eval_results.json (the dev file's entity-level precision,
recall and F1, overall and per type, as conlleval counts them), test_results.json (the
same for the test file, whose last column holds the gold tags), test_predictions.txt
(the test file's lines with the predicted tag appended as a new last column, one line
per input line), the fine-tuned model (config.json with the tags, model.safetensors,
vocab.txt), checkpoints/ and dllogger.json.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch
import torch.nn.functional as F

from bert import ner
from bert.finetune import (
    FinetuneError,
    add_finetune_args,
    check_setup_values,
    claim_output_dir,
    finetune_problems,
    infer,
    load_model,
    open_logger,
    report_inference,
    report_training,
    stopped_early,
    train,
)
from bert.model import BertForTokenClassification
from bert.tokenization import FullTokenizer
from common import cli, distributed
from common.atomic import atomic_write
from common.config import parse_with_config
from common.logging import Logger
from common.precision import Precision

# --data_dir's file names, as in the BLUE benchmark's BC5CDR folders
DATA_FILES = {"train": "train.tsv", "dev": "devel.tsv", "test": "test.tsv"}
OUTPUTS = ("eval_results.json", "test_results.json", "test_predictions.txt")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = cli.ArgumentParser(prog="python -m bert.run_ner", description=__doc__.splitlines()[0])
    g = p.add_argument_group("NER")
    g.add_argument(
        "--data_dir",
        type=Path,
        default=None,
        help="folder of train.tsv, devel.tsv and test.tsv (BLUE's names)",
    )
    g.add_argument(
        "--train_file", type=Path, default=None, help="when not given: DATA_DIR/train.tsv"
    )
    g.add_argument("--dev_file", type=Path, default=None, help="when not given: DATA_DIR/devel.tsv")
    g.add_argument("--test_file", type=Path, default=None, help="when not given: DATA_DIR/test.tsv")
    g.add_argument("--do_eval", action="store_true", help="score the dev file")
    g.add_argument("--do_predict", action="store_true", help="tag (and score) the test file")
    g.add_argument(
        "--max_seq_length", type=cli.positive_int, default=128, help="WordPiece tokens per window"
    )
    g.add_argument(
        "--doc_stride",
        type=cli.positive_int,
        default=64,
        help="pieces between the starts of a long sentence's windows (at most "
        "--max_seq_length - 2)",
    )
    g.add_argument(
        "--eval_batch_size", type=cli.positive_int, default=32, help="windows per inference batch"
    )
    add_finetune_args(p)
    # No set-up file of our own: --setup_file FILE may still name one (section "ner").
    args = parse_with_config(p, argv, None, "ner", name_flag="--setup", file_flag="--setup_file")
    check_flags(p, args)
    return args


def check_flags(p: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """Bad set-up values and flag combinations, refused before any file is read."""
    check_setup_values(p, args)
    missing = [
        f"--do_{step} needs --{kind}_file or --data_dir"
        for step, kind, wanted in (
            ("train", "train", args.do_train),
            ("eval", "dev", args.do_eval),
            ("predict", "test", args.do_predict),
        )
        if wanted and getattr(args, f"{kind}_file") is None and args.data_dir is None
    ]
    cli.check_args(
        p,
        None
        if args.do_train or args.do_eval or args.do_predict
        else "nothing to do: give --do_train, --do_eval and/or --do_predict",
        *missing,
        f"--max_seq_length {args.max_seq_length} leaves no room for a token between [CLS] "
        "and [SEP]: give 3 or more"
        if args.max_seq_length < 3
        else None,
        f"--doc_stride {args.doc_stride} exceeds --max_seq_length {args.max_seq_length} - 2: "
        "the windows would skip tokens"
        if args.doc_stride > args.max_seq_length - 2
        else None,
        *finetune_problems(args),
    )


def data_file(args: argparse.Namespace, kind: str) -> Path:
    """--{kind}_file, else its BLUE name in --data_dir."""
    given = getattr(args, f"{kind}_file")
    return given if given is not None else args.data_dir / DATA_FILES[kind]


def token_loss(model: torch.nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """Mean cross-entropy over the tagged positions (first pieces of words)."""
    logits = model(batch["input_ids"], batch["token_type_ids"], batch["attention_mask"])
    return F.cross_entropy(
        logits.float().flatten(0, 1), batch["labels"].flatten(), ignore_index=ner.IGNORE
    )


def predicted_ids(model: torch.nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """[B, S]: the best label's index at each position."""
    return model(batch["input_ids"], batch["token_type_ids"], batch["attention_mask"]).argmax(-1)


def main(argv: list[str] | None = None) -> int:
    return cli.run_main(lambda: run(parse_args(argv)))


def run(args: argparse.Namespace) -> int:
    env = distributed.init_distributed(args.device)
    prec = cli.create_precision(args, env.device)
    # Every file is read and checked before the first step.
    train_data = ner.read_conll(data_file(args, "train")) if args.do_train else None
    dev = ner.read_conll(data_file(args, "dev")) if args.do_eval else None
    test = ner.read_conll(data_file(args, "test")) if args.do_predict else None

    cli.set_threads(args.threads, env.local_world_size)
    distributed.seed_everything(args.seed)
    if train_data is not None:
        labels = ner.label_list(train_data.sentences)
        tokenizer, model = load_model(BertForTokenClassification, args, labels=labels)
    else:
        tokenizer, model = load_model(BertForTokenClassification, args)
        if model.load_report.newly_initialized:
            raise FinetuneError(
                f"{model.name_or_path} has no token classifier (fine-tuned for NER): give "
                "--do_train, or --init_checkpoint a model that run_ner trained"
            )
    model.to(env.device)
    claim_output_dir(args, list(OUTPUTS))
    args.output_dir.mkdir(parents=True, exist_ok=True)
    logger = open_logger(args)
    logger.log(
        "PARAMETER",
        {
            **vars(args),
            "precision": prec.mode,
            "world_size": env.world_size,
            "labels": model.labels,
        },
    )
    if env.is_main:
        print(f"{model.num_labels} tags: {' '.join(model.labels)}", flush=True)

    if train_data is not None:
        features = ner.make_features(
            train_data.sentences, tokenizer, args.max_seq_length, args.doc_stride, model.labels
        )
        result = train(model, features.tensors, token_loss, args, env, prec, logger)
        report_training(result, env, logger, train_sentences=len(train_data.sentences))
        if stopped_early(result, model, tokenizer, args, env, logger):
            return 0

    if env.is_main:
        if dev is not None:
            tags = tag(args, dev, tokenizer, model, prec, env, logger, "dev")
            report_scores(args, dev, tags, model.labels, logger, "dev", "eval_results.json")
        if test is not None:
            tags = tag(args, test, tokenizer, model, prec, env, logger, "test")
            path = ner.write_predictions(test, tags, args.output_dir / "test_predictions.txt")
            print(f"wrote the tags of {len(test.lines)} lines to {path}", flush=True)
            report_scores(args, test, tags, model.labels, logger, "test", "test_results.json")
    logger.close()
    distributed.cleanup()
    return 0


def tag(
    args: argparse.Namespace,
    data: ner.ConllFile,
    tokenizer: FullTokenizer,
    model: BertForTokenClassification,
    prec: Precision,
    env: distributed.DistEnv,
    logger: Logger,
    name: str,
) -> list[list[str]]:
    """Each word's predicted tag, sentence by sentence, with the throughput printed and
    logged."""
    features = ner.make_features(data.sentences, tokenizer, args.max_seq_length, args.doc_stride)
    result = infer(
        model,
        features.tensors,
        predicted_ids,
        args.eval_batch_size,
        prec,
        env.device,
        args.torch_compile,
    )
    report_inference(result, logger, name)
    return ner.word_predictions(features, result.outputs, model.labels)


def report_scores(
    args: argparse.Namespace,
    data: ner.ConllFile,
    tags: list[list[str]],
    labels: list[str],
    logger: Logger,
    name: str,
    file_name: str,
) -> dict[str, object]:
    """Entity-level scores of `tags` against the file's own: printed, logged (keys
    prefixed with `name`) and written to OUTPUT_DIR/`file_name`. Gold tags outside the
    model's `labels` are named: the model cannot predict them."""
    unknown = sorted({t for sentence in data.tags for t in sentence} - set(labels))
    if unknown:
        print(f"{name}: tags the model never predicts: {' '.join(unknown)}", flush=True)
    scores = ner.entity_scores(data.tags, tags)
    flat = {f"{name}_{k}": v for k, v in scores.items() if k != "per_type"}
    for kind, values in scores["per_type"].items():
        flat.update({f"{name}_{kind}_{k}": v for k, v in values.items()})
    logger.log((), flat)
    print(
        f"{name}: precision {scores['precision']:.4f} | recall {scores['recall']:.4f} | "
        f"f1 {scores['f1']:.4f} | {scores['gold_entities']} entities",
        flush=True,
    )
    for kind, values in scores["per_type"].items():
        print(
            f"{name} {kind}: precision {values['precision']:.4f} | recall "
            f"{values['recall']:.4f} | f1 {values['f1']:.4f} | {values['support']} entities",
            flush=True,
        )
    result = {"file": str(data.path), **scores}
    with atomic_write(args.output_dir / file_name, "w", encoding="utf-8") as f:
        f.write(json.dumps(result, indent=2) + "\n")
    return scores


if __name__ == "__main__":
    sys.exit(main())
