"""Fine-tune BERT for question answering on SQuAD v1.1 / v2.0 and predict answers.

    python -m bert.run_squad --init_checkpoint MODEL_DIR --do_train --train_file \\
        train-v1.1.json --do_predict --predict_file dev-v1.1.json --do_eval --output_dir OUT
    python -m torch.distributed.run --standalone --nproc_per_node 8 -m bert.run_squad \\
        --setup dgxa100_8gpu_fp16 --init_checkpoint ... (bert/scripts/run_squad.sh does this)

Flags follow NVIDIA's PyTorch run_squad.py (--config_file is the model's JSON config);
the named set-ups of bert/configs/squad.yaml (--setup NAME, --setup_file FILE) hold the
published recipe per machine, and any flag overrides them. Training
runs on every process (see bert/finetune.py for batches, schedule, checkpoints, resume);
prediction runs on rank 0 only, as in the reference.

Outputs in --output_dir: predictions.json (question id -> answer, every question of the
predict file; "" for no answer), nbest_predictions.json (id -> [{text, probability,
start_logit, end_logit}]), null_odds.json (v2.0: id -> null score - best span score),
the fine-tuned model (config.json, model.safetensors, vocab.txt: load it with
--init_checkpoint OUTPUT_DIR), checkpoints/ and dllogger.json. --do_eval scores the
predictions with bert.squad_eval and prints the official JSON. Training features are
cached beside the train file (or in --cache_dir) unless --skip_cache.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import sys
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from bert import squad
from bert.finetune import (
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
from bert.model import BertForQuestionAnswering
from bert.squad_eval import SquadError, check_gold, evaluate, format_result, load_dataset
from bert.tokenization import FullTokenizer
from common import cli, distributed
from common.checkpoint import CheckpointError, save_atomic
from common.config import parse_with_config
from common.logging import Logger
from common.precision import Precision

DEFAULT_CONFIG = Path(__file__).parent / "configs" / "squad.yaml"
CACHE_FORMAT = 1  # bump when the features change


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = cli.ArgumentParser(prog="python -m bert.run_squad", description=__doc__.splitlines()[0])
    add_finetune_args(p)
    s = p.add_argument_group("SQuAD")
    s.add_argument("--train_file", type=Path, default=None, help="SQuAD JSON for training")
    s.add_argument("--predict_file", type=Path, default=None, help="SQuAD JSON to answer")
    s.add_argument("--do_predict", action="store_true", help="answer --predict_file's questions")
    s.add_argument("--do_eval", action="store_true", help="score the predictions (implies predict)")
    squad.add_window_flags(s)
    s.add_argument("--skip_cache", action="store_true", help="neither read nor write the cache")
    s.add_argument(
        "--cache_dir", type=Path, default=None, help="when not given: the train file's folder"
    )
    args = parse_with_config(
        p, argv, DEFAULT_CONFIG, "squad", name_flag="--setup", file_flag="--setup_file"
    )
    check_flags(p, args)
    args.do_predict = args.do_predict or args.do_eval
    return args


def check_flags(p: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """Bad set-up values and flag combinations, refused before any file is read."""
    check_setup_values(p, args)
    predicting = "--do_eval" if args.do_eval else "--do_predict"
    cli.check_args(
        p,
        None
        if args.do_train or args.do_predict or args.do_eval
        else "nothing to do: give --do_train and/or --do_predict (or --do_eval)",
        "--do_train needs --train_file" if args.do_train and args.train_file is None else None,
        f"{predicting} needs --predict_file"
        if (args.do_predict or args.do_eval) and args.predict_file is None
        else None,
        squad.window_problem(args),
        *finetune_problems(args),
    )


def squad_loss(model: torch.nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """Mean of the start and end cross-entropies."""
    start, end = model(batch["input_ids"], batch["token_type_ids"], batch["attention_mask"])
    start_loss = F.cross_entropy(start.float(), batch["start_positions"])
    end_loss = F.cross_entropy(end.float(), batch["end_positions"])
    return (start_loss + end_loss) / 2


def qa_logits(model: torch.nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """[B, S, 2]: start and end logits."""
    start, end = model(batch["input_ids"], batch["token_type_ids"], batch["attention_mask"])
    return torch.stack([start, end], dim=-1)


# -------------------------------------------------------------------------------- features


def _cache_path(args: argparse.Namespace, tokenizer: FullTokenizer) -> Path:
    """A file name that changes with the data, the vocabulary and every feature option."""
    stat = args.train_file.stat()
    key = {
        "format": CACHE_FORMAT,
        "file": str(args.train_file.resolve()),
        "size": stat.st_size,
        "mtime": stat.st_mtime_ns,
        "vocab": hashlib.sha1(tokenizer.vocab_file.read_bytes()).hexdigest(),
        "lower": args.do_lower_case,
        "shape": [args.max_seq_length, args.doc_stride, args.max_query_length],
        "v2": args.version_2_with_negative,
    }
    digest = hashlib.sha1(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]
    folder = args.cache_dir or args.train_file.parent
    return folder / f"{args.train_file.name}.{digest}.features.pt"


def training_tensors(
    args: argparse.Namespace,
    tokenizer: FullTokenizer,
    data: squad.SquadData,
    env: distributed.DistEnv,
) -> dict[str, torch.Tensor]:
    """Training features as tensors, built on rank 0 and cached (other ranks load them)."""

    def build() -> dict[str, torch.Tensor]:
        features = squad.make_features(
            data.examples,
            tokenizer,
            args.max_seq_length,
            args.doc_stride,
            args.max_query_length,
            training=True,
        )
        return squad.features_to_tensors(features, args.max_seq_length, training=True)

    if args.skip_cache:
        return build()
    path = _cache_path(args, tokenizer)
    tensors = None
    if env.is_main and not path.is_file():
        tensors = build()
        try:
            save_atomic(tensors, path)
            print(f"cached training features in {path}", flush=True)
        except CheckpointError as exc:
            print(f"warning: training features not cached: {exc}", flush=True)
    distributed.barrier()
    if tensors is not None:
        return tensors
    if not path.is_file():  # rank 0 could not write it
        return build()
    return torch.load(path, weights_only=True)


# ------------------------------------------------------------------------------------- run


def main(argv: list[str] | None = None) -> int:
    return cli.run_main(lambda: run(parse_args(argv)))


def run(args: argparse.Namespace) -> int:
    env = distributed.init_distributed(args.device)
    prec = cli.create_precision(args, env.device)
    version_2 = args.version_2_with_negative
    # Every input is read and checked before the first step.
    train_data = predict_data = None
    if args.do_train:
        train_data = squad.read_squad(args.train_file, training=True, version_2=version_2)
        if not train_data.examples:
            raise SquadError(f"{args.train_file}: no usable training questions")
    if args.do_predict:
        predict_data = squad.read_squad(args.predict_file, training=False, version_2=version_2)
    gold = load_dataset(args.predict_file) if args.do_eval else None
    if gold is not None:
        check_gold(gold, str(args.predict_file))
    for data, path in ((train_data, args.train_file), (predict_data, args.predict_file)):
        summary = data.skipped_summary(path) if data is not None else None
        if summary and env.is_main:
            print(summary, flush=True)

    cli.set_threads(args.threads, env.local_world_size)
    distributed.seed_everything(args.seed)
    tokenizer, model = load_model(BertForQuestionAnswering, args)
    model.to(env.device)
    claim_output_dir(args, ["predictions.json", "nbest_predictions.json", "null_odds.json"])
    args.output_dir.mkdir(parents=True, exist_ok=True)
    logger = open_logger(args)
    logger.log("PARAMETER", {**vars(args), "precision": prec.mode, "world_size": env.world_size})

    if train_data is not None:
        tensors = training_tensors(args, tokenizer, train_data, env)
        result = train(model, tensors, squad_loss, args, env, prec, logger)
        report_training(result, env, logger, skipped_train_questions=len(train_data.skipped))
        if stopped_early(result, model, tokenizer, args, env, logger):
            return 0

    if predict_data is not None and env.is_main:
        predict(args, tokenizer, model, predict_data, gold, prec, env, logger)
    logger.close()
    distributed.cleanup()
    return 0


def predict(
    args: argparse.Namespace,
    tokenizer: FullTokenizer,
    model: BertForQuestionAnswering,
    data: squad.SquadData,
    gold: dict[str, Any] | None,
    prec: Precision,
    env: distributed.DistEnv,
    logger: Logger,
) -> dict[str, Any] | None:
    """Answer every question of the predict file and write the JSON files; with the
    `gold` dataset (--do_eval) score them too and return the scores."""
    features = squad.make_features(
        data.examples, tokenizer, args.max_seq_length, args.doc_stride, args.max_query_length
    )
    tensors = squad.features_to_tensors(features, args.max_seq_length, training=False)
    result = infer(
        model, tensors, qa_logits, args.predict_batch_size, prec, env.device, args.torch_compile
    )
    version_2 = args.version_2_with_negative
    predictions, nbest, null_odds = squad.predict_answers(
        data.examples,
        features,
        [o[:, 0] for o in result.outputs],
        [o[:, 1] for o in result.outputs],
        n_best_size=args.n_best_size,
        max_answer_length=args.max_answer_length,
        do_lower_case=args.do_lower_case,
        version_2=version_2,
        null_score_diff_threshold=args.null_score_diff_threshold,
    )
    predictions = squad.complete_predictions(predictions, data.question_ids)
    squad.write_json(args.output_dir / "predictions.json", predictions)
    squad.write_json(args.output_dir / "nbest_predictions.json", nbest)
    if version_2:
        squad.write_json(args.output_dir / "null_odds.json", null_odds)
    report_inference(result, logger)
    if gold is None:
        return None
    version = "2.0" if version_2 else "1.1"
    # The null odds give best_exact/best_f1 and thresholds in --null_score_diff_threshold
    # units; the headline metrics are those of predictions.json as written.
    scores = evaluate(
        gold,
        predictions,
        version,
        null_odds if version_2 else None,
        na_prob_thresh=math.inf,
        source=str(args.predict_file),
    )
    logger.log((), scores)
    print(format_result(scores, version), flush=True)
    return scores


if __name__ == "__main__":
    sys.exit(main())
