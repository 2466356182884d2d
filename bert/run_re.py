"""Fine-tune BERT (BioBERT) for ChemProt relation extraction, score it, label the test set.

    python -m bert.run_re --data_dir data/biobert/chemprot --init_checkpoint MODEL_DIR \\
        --do_train --do_eval --do_predict --output_dir OUT
    python -m torch.distributed.run --standalone --nproc_per_node 16 -m bert.run_re \\
        --data_dir ... --math fp16 --do_train --do_eval --do_predict --output_dir OUT

The data are BLUE's preprocessed ChemProt: train.tsv, dev.tsv and test.tsv of
"index<TAB>sentence<TAB>label" with the two entities replaced by @CHEMICAL$ and @GENE$
(bert/chemprot.py: layout, markers as single tokens, metric). Each candidate pair is one
sentence classified from its [CLS] vector into CPR:3, CPR:4, CPR:5, CPR:6, CPR:9 or
"false" (BertForSequenceClassification). The defaults are NVIDIA's BioBERT recipe
(biobert/scripts/rel_chemprot.sh): 16 GPUs x 8 sequences of up to 512 tokens, learning
rate 1.5e-6 per GPU, i.e. 2.4e-5, 3 epochs, 10% warm-up, uncased. With fewer processes,
keep the global batch of 128 with --train_batch_size (per process) and
--gradient_accumulation_steps, e.g. one GPU: --train_batch_size 128
--gradient_accumulation_steps 16. Training runs on every process (bert/finetune.py:
batches, schedule, precision, checkpoints, resume); scoring and prediction on rank 0.
Every file the run needs is read and checked before training starts.

Outputs in --output_dir: eval_results.json (micro precision, recall and F1 over the five
CPR classes, and each class's, for dev.tsv and, when test.tsv has labels, for the test
set: keys "dev_f1", "dev_CPR:4_f1", ...), test_predictions.tsv ("index<TAB>label", one
line per test row), the fine-tuned model (config.json, model.safetensors, vocab.txt),
checkpoints/ and dllogger.json.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch

from bert import chemprot
from bert.finetune import (
    FinetuneError,
    add_finetune_args,
    claim_output_dir,
    class_logits,
    classification_loss,
    finetune_problems,
    infer,
    load_model,
    open_logger,
    report_inference,
    report_training,
    stopped_early,
    train,
)
from bert.model import BertForSequenceClassification
from bert.tokenization import FullTokenizer
from common import cli, distributed
from common.atomic import atomic_write
from common.logging import Logger
from common.precision import Precision

PREDICTIONS = "test_predictions.tsv"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = cli.ArgumentParser(prog="python -m bert.run_re", description=__doc__.splitlines()[0])
    g = p.add_argument_group("ChemProt")
    g.add_argument(
        "--task_name",
        type=str.lower,
        choices=("chemprot",),
        default="chemprot",
        help="the relation task (NVIDIA's flag; ChemProt is the one there is)",
    )
    g.add_argument(
        "--data_dir", type=Path, default=None, help="folder of train.tsv, dev.tsv, test.tsv"
    )
    g.add_argument("--do_eval", action="store_true", help="score dev.tsv")
    g.add_argument(
        "--do_predict", action="store_true", help="label test.tsv (and score it if labelled)"
    )
    g.add_argument("--max_seq_length", type=cli.positive_int, default=512, help="WordPiece tokens")
    g.add_argument(
        "--eval_batch_size", type=cli.positive_int, default=16, help="rows per inference batch"
    )
    add_finetune_args(p)
    p.set_defaults(train_batch_size=8, learning_rate=2.4e-5, num_train_epochs=3.0)
    args = p.parse_args(argv)
    check_flags(p, args)
    return args


def check_flags(p: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """Bad flag combinations, refused before any file is read."""
    cli.check_args(p, *finetune_problems(args))


def main(argv: list[str] | None = None) -> int:
    return cli.run_main(lambda: run(parse_args(argv)))


def run(args: argparse.Namespace) -> int:
    if not (args.do_train or args.do_eval or args.do_predict):
        raise FinetuneError("nothing to do: give --do_train, --do_eval and/or --do_predict")
    if args.data_dir is None:
        raise FinetuneError("--data_dir is required: the folder of ChemProt's TSV files")
    env = distributed.init_distributed(args.device)
    prec = cli.create_precision(args, env.device)
    # Every file is read and checked before the first step.
    train_data = chemprot.read_tsv(args.data_dir / "train.tsv", "train") if args.do_train else None
    scored = {"dev": chemprot.read_tsv(args.data_dir / "dev.tsv", "dev")} if args.do_eval else {}
    test = chemprot.read_tsv(args.data_dir / "test.tsv", "test") if args.do_predict else None
    if test is not None and test[0].label is not None:
        scored["test"] = test

    cli.set_threads(args.threads, env.local_world_size)
    distributed.seed_everything(args.seed)
    tokenizer, model = load_model(
        BertForSequenceClassification, args, num_labels=len(chemprot.LABELS)
    )
    chemprot.marker_tokens(tokenizer)  # a vocabulary that cannot hold them fails here
    model.to(env.device)
    claim_output_dir(args, ["eval_results.json", PREDICTIONS])
    args.output_dir.mkdir(parents=True, exist_ok=True)
    logger = open_logger(args)
    logger.log("PARAMETER", {**vars(args), "precision": prec.mode, "world_size": env.world_size})

    if train_data is not None:
        tensors = features(args, train_data, tokenizer, "train", env.is_main)
        result = train(model, tensors, classification_loss, args, env, prec, logger)
        report_training(result, env, logger)
        if stopped_early(result, model, tokenizer, args, env, logger):
            return 0

    if env.is_main:
        files = {**scored, "test": test} if test is not None else scored
        predicted = {
            name: classify(args, examples, tokenizer, model, prec, env, logger, name)
            for name, examples in files.items()
        }
        if scored:
            evaluate(args, scored, predicted, logger)
        if test is not None:
            path = chemprot.write_predictions(
                args.output_dir / PREDICTIONS, test, predicted["test"]
            )
            print(f"wrote {len(test)} predictions to {path}", flush=True)
    logger.close()
    distributed.cleanup()
    return 0


def features(
    args: argparse.Namespace,
    examples: list[chemprot.Example],
    tokenizer: FullTokenizer,
    name: str,
    verbose: bool,
) -> dict[str, torch.Tensor]:
    """The rows' tensors; says how many lost an entity marker to --max_seq_length."""
    tensors, lost = chemprot.make_tensors(examples, tokenizer, args.max_seq_length)
    if lost and verbose:
        print(
            f"note: {lost} of {len(examples)} {name} rows lost an entity marker to "
            f"--max_seq_length {args.max_seq_length}",
            flush=True,
        )
    return tensors


def classify(
    args: argparse.Namespace,
    examples: list[chemprot.Example],
    tokenizer: FullTokenizer,
    model: BertForSequenceClassification,
    prec: Precision,
    env: distributed.DistEnv,
    logger: Logger,
    name: str,
) -> np.ndarray:
    """The predicted label index [N] of every row, with the throughput printed and logged."""
    tensors = features(args, examples, tokenizer, name, verbose=True)
    result = infer(
        model, tensors, class_logits, args.eval_batch_size, prec, env.device, args.torch_compile
    )
    report_inference(result, logger, name)
    return np.stack(result.outputs).argmax(-1)


def evaluate(
    args: argparse.Namespace,
    scored: dict[str, list[chemprot.Example]],
    predicted: dict[str, np.ndarray],
    logger: Logger,
) -> None:
    """Scores of the labelled files (dev, and test when labelled): printed as a table,
    logged, and written to eval_results.json."""
    results: dict = {"task": "ChemProt"}
    logged: dict[str, float] = {}
    for name, examples in scored.items():
        gold = np.array([e.label for e in examples])
        micro, per_class = chemprot.micro_scores(predicted[name], gold)
        print(chemprot.report(name, micro, per_class), flush=True)
        logged |= chemprot.flat_scores(name, micro, per_class)
        results |= {f"{name}_{k}": v for k, v in asdict(micro).items()}
        results[f"{name}_per_class"] = {label: asdict(s) for label, s in per_class.items()}
    logger.log((), logged)
    with atomic_write(args.output_dir / "eval_results.json", "w", encoding="utf-8") as f:
        f.write(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    sys.exit(main())
