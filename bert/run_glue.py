"""Fine-tune BERT on a GLUE task (CoLA, MRPC, MNLI, SST-2), evaluate it, predict the test set.

    python -m bert.run_glue --task_name MRPC --data_dir data/download/MRPC \\
        --init_checkpoint MODEL_DIR --do_train --do_eval --output_dir OUT
    python -m torch.distributed.run --standalone --nproc_per_node 8 -m bert.run_glue \\
        --task_name MRPC --setup dgxa100_8gpu_fp16 ... (bert/scripts/run_glue.sh does this)

bert/configs/glue.yaml holds each task's recipe (a section per task) and the named
machine set-ups (--setup NAME, --setup_file FILE); any flag overrides them. As in
NVIDIA's scripts, --config_file is the model's JSON config. Training runs on every process
(bert/finetune.py: batches, schedule, checkpoints, resume); evaluation and prediction
run on rank 0. Every file the run needs is read and checked before training starts.

Outputs in --output_dir: eval_results.json (dev metrics: CoLA mcc, MRPC accuracy and
f1, SST-2 accuracy, MNLI accuracy on dev_matched and dev_mismatched, each key prefixed
with the dev file's name), the test predictions in GLUE's submission format
(CoLA.tsv, MRPC.tsv, SST-2.tsv, MNLI-m.tsv, MNLI-mm.tsv: "index<TAB>prediction" with
label names), the fine-tuned model (config.json, model.safetensors, vocab.txt),
checkpoints/ and dllogger.json.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

from bert import glue
from bert.finetune import (
    FinetuneError,
    InferenceResult,
    add_finetune_args,
    check_setup_values,
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
from common.config import parse_with_config
from common.logging import Logger
from common.precision import Precision

DEFAULT_CONFIG = Path(__file__).parent / "configs" / "glue.yaml"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = cli.ArgumentParser(prog="python -m bert.run_glue", description=__doc__.splitlines()[0])
    g = p.add_argument_group("GLUE")
    g.add_argument(
        "--task_name",
        type=task_name,
        required=True,
        help=f"one of {', '.join(t.name for t in glue.TASKS.values())} (any case)",
    )
    g.add_argument("--data_dir", type=Path, default=None, help="folder of the task's TSV files")
    g.add_argument("--do_eval", action="store_true", help="score the dev set(s)")
    g.add_argument("--do_predict", action="store_true", help="label the test set(s)")
    g.add_argument("--max_seq_length", type=cli.positive_int, default=128, help="WordPiece tokens")
    g.add_argument(
        "--eval_batch_size", type=cli.positive_int, default=8, help="rows per inference batch"
    )
    add_finetune_args(p)
    # Each task is a section of the set-up file: its recipe, then the set-up's overrides.
    args = parse_with_config(
        p,
        argv,
        DEFAULT_CONFIG,
        lambda known: glue.get_task(known.task_name).name,
        name_flag="--setup",
        file_flag="--setup_file",
    )
    check_flags(p, args)
    return args


def task_name(value: str) -> str:
    """argparse type: a GLUE task's name, kept as typed."""
    try:
        glue.get_task(value)
    except glue.GlueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    return value


def check_flags(p: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """Bad set-up values and flag combinations, refused before any file is read. (Whether
    there is anything to do is checked when the run starts: parsing a task's recipe
    alone is fine.)"""
    check_setup_values(p, args)
    cli.check_args(p, *finetune_problems(args))


def main(argv: list[str] | None = None) -> int:
    return cli.run_main(lambda: run(parse_args(argv)))


def run(args: argparse.Namespace) -> int:
    task = glue.get_task(args.task_name)
    if not (args.do_train or args.do_eval or args.do_predict):
        raise FinetuneError("nothing to do: give --do_train, --do_eval and/or --do_predict")
    if args.data_dir is None:
        raise FinetuneError("--data_dir is required: the folder of the task's TSV files")
    env = distributed.init_distributed(args.device)
    prec = cli.create_precision(args, env.device)
    # Every file is read and checked before the first step.
    train_data = (
        glue.read_tsv(args.data_dir / "train.tsv", task, "train") if args.do_train else None
    )
    dev_files = task.dev_files if args.do_eval else ()
    dev = {f: glue.read_tsv(args.data_dir / f, task, "dev") for f in dev_files}
    test_files = zip(task.test_files, task.submissions, strict=True) if args.do_predict else ()
    test = [(f, out, glue.read_tsv(args.data_dir / f, task, "test")) for f, out in test_files]
    if train_data is not None:
        summary = train_data.skipped_summary(args.data_dir / "train.tsv")
        if summary and env.is_main:
            print(summary, flush=True)
        if not train_data.examples:
            raise glue.GlueError(f"{args.data_dir / 'train.tsv'}: no usable training rows")

    cli.set_threads(args.threads, env.local_world_size)
    distributed.seed_everything(args.seed)
    tokenizer, model = load_model(BertForSequenceClassification, args, num_labels=len(task.labels))
    model.to(env.device)
    claim_output_dir(args, ["eval_results.json", *task.submissions])
    args.output_dir.mkdir(parents=True, exist_ok=True)
    logger = open_logger(args)
    logger.log("PARAMETER", {**vars(args), "precision": prec.mode, "world_size": env.world_size})

    if train_data is not None:
        tensors = glue.make_tensors(train_data.examples, tokenizer, args.max_seq_length)
        result = train(model, tensors, classification_loss, args, env, prec, logger)
        report_training(result, env, logger, skipped_train_rows=len(train_data.skipped))
        if stopped_early(result, model, tokenizer, args, env, logger):
            return 0

    if env.is_main:
        if dev:
            evaluate(args, task, dev, tokenizer, model, prec, env, logger)
        for file_name, out_name, data in test:
            name = file_name.removesuffix(".tsv")
            result = classify(args, data, tokenizer, model, prec, env, logger, name)
            predicted = np.stack(result.outputs).argmax(-1)
            path = glue.write_predictions(
                args.output_dir / out_name, task, data.examples, predicted
            )
            print(f"wrote {len(data.examples)} predictions for {name} to {path}", flush=True)
    logger.close()
    distributed.cleanup()
    return 0


def classify(
    args: argparse.Namespace,
    data: glue.GlueData,
    tokenizer: FullTokenizer,
    model: BertForSequenceClassification,
    prec: Precision,
    env: distributed.DistEnv,
    logger: Logger,
    name: str,
) -> InferenceResult:
    """Logits of every row of one file (`name`: its name without .tsv), with the
    throughput printed and logged."""
    tensors = glue.make_tensors(data.examples, tokenizer, args.max_seq_length)
    result = infer(
        model, tensors, class_logits, args.eval_batch_size, prec, env.device, args.torch_compile
    )
    report_inference(result, logger, name)
    return result


def evaluate(
    args: argparse.Namespace,
    task: glue.TaskSpec,
    dev: dict[str, glue.GlueData],
    tokenizer: FullTokenizer,
    model: BertForSequenceClassification,
    prec: Precision,
    env: distributed.DistEnv,
    logger: Logger,
) -> dict[str, float]:
    """Metrics of every dev file, keys prefixed with the file's name; written to
    eval_results.json."""
    scores: dict[str, float] = {}
    for file_name, data in dev.items():
        name = file_name.removesuffix(".tsv")
        result = classify(args, data, tokenizer, model, prec, env, logger, name)
        predicted = np.stack(result.outputs).argmax(-1)
        labels = np.array([e.label for e in data.examples])
        for metric, value in glue.task_metrics(task, predicted, labels).items():
            scores[f"{name}_{metric}"] = value
    logger.log((), scores)
    for key, value in scores.items():
        print(f"{key} = {value:.4f}", flush=True)
    with atomic_write(args.output_dir / "eval_results.json", "w", encoding="utf-8") as f:
        f.write(json.dumps({"task": task.name, **scores}, indent=2) + "\n")
    return scores


if __name__ == "__main__":
    sys.exit(main())
