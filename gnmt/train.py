"""Train GNMT v2 on WMT16 English-German (or any BPE-encoded parallel data).

    python -m gnmt.train --dataset-dir data/wmt16_de_en --save-dir results/gnmt
    torchrun --nproc_per_node 8 -m gnmt.train --dataset-dir ... --train-batch-size 128

One epoch is a pass over the length-bucketed training batches; after each epoch the
test set is translated with beam search and scored with detokenized sacreBLEU.
Checkpoints: every --save-freq steps and at each epoch's end (`model_last.pth`,
numbered saves), `model_best.pth` by BLEU. SIGTERM saves and exits; --resume continues
exactly where the last checkpoint stopped, mid-epoch included.
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path

import sacrebleu
import torch

from common import cli, distributed
from common.checkpoint import Checkpointer, DataPosition, RunSettings
from common.logging import Logger
from common.metrics import MetricsWindow
from common.precision import Precision
from common.run_control import RunControl
from common.schedules import build_gnmt_scheduler
from common.step import OptimizerStep
from gnmt import data
from gnmt.beam_search import SearchConfig
from gnmt.model import GNMT, config_dict, label_smoothed_loss
from gnmt.tokenizer import Tokenizer
from gnmt.translate import translate_ids


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = cli.ArgumentParser(description=__doc__.splitlines()[0])
    d = p.add_argument_group("dataset")
    d.add_argument("--dataset-dir", type=Path, default=Path("data/wmt16_de_en"))
    d.add_argument("--src-lang", default="en")
    d.add_argument("--tgt-lang", default="de")
    d.add_argument("--vocab", default="vocab.bpe.32000", help="file in --dataset-dir")
    d.add_argument("--bpe-codes", default="bpe.32000", help="file in --dataset-dir")
    d.add_argument("--train-src", default="train.tok.clean.bpe.32000.en")
    d.add_argument("--train-tgt", default="train.tok.clean.bpe.32000.de")
    d.add_argument("--test-src", default="newstest2014.tok.bpe.32000.en")
    d.add_argument("--test-tgt", default="newstest2014.de", help="raw reference for BLEU")
    d.add_argument("--train-max-length", type=int, default=50, help="max tokens (BOS/EOS incl.)")
    d.add_argument("--train-min-length", type=int, default=0)
    d.add_argument("--max-length-test", type=int, default=150, help="max generated tokens")
    d.add_argument("--num-buckets", type=int, default=5, help="length buckets for batching")

    m = p.add_argument_group("model")
    m.add_argument("--hidden-size", type=int, default=1024)
    m.add_argument("--num-layers", type=int, default=4)
    m.add_argument("--dropout", type=float, default=0.2)
    m.add_argument("--no-share-embedding", dest="share_embedding", action="store_false")
    m.add_argument(
        "--init-decoder-from-encoder",
        action="store_true",
        help="start the decoder from the encoder's final states (default: zeros)",
    )
    m.add_argument("--smoothing", type=float, default=0.1, help="label smoothing")

    t = p.add_argument_group("training")
    cli.add_precision_flags(t, "fp16 on a GPU, fp32 on the CPU")
    t.add_argument("--device", type=cli.device_arg, default=None, help="default: cuda if any")
    t.add_argument("--seed", type=int, default=1)
    t.add_argument("--epochs", type=int, default=6)
    t.add_argument(
        "--max-steps",
        type=int,
        default=None,
        help="stop after this many steps (the LR schedule still spans --epochs, so a "
        "stopped run continues exactly with --resume)",
    )
    t.add_argument("--train-batch-size", type=int, default=128, help="sentences per GPU")
    t.add_argument(
        "--train-global-batch-size",
        type=int,
        default=None,
        help="sentences per step over all GPUs (gradient accumulation fills it)",
    )
    t.add_argument("--lr", type=float, default=2e-3)
    t.add_argument("--grad-clip", type=float, default=5.0)
    t.add_argument("--warmup-steps", type=float, default=200, help="int steps or a fraction")
    t.add_argument("--remain-steps", type=float, default=0.666, help="int steps or a fraction")
    t.add_argument("--decay-interval", type=float, default=None, help="int steps or a fraction")
    t.add_argument("--decay-steps", type=int, default=4)
    t.add_argument("--decay-factor", type=float, default=0.5)
    t.add_argument("--target-bleu", type=float, default=None, help="stop once reached")

    e = p.add_argument_group("evaluation")
    e.add_argument("--no-eval", dest="eval", action="store_false", help="skip test BLEU")
    e.add_argument("--test-batch-size", type=int, default=128)
    e.add_argument("--beam-size", type=int, default=5)
    e.add_argument("--len-norm-factor", type=float, default=0.6)
    e.add_argument("--len-norm-const", type=float, default=5.0)
    e.add_argument("--cov-penalty-factor", type=float, default=0.1)

    c = p.add_argument_group("checkpoints and logs")
    c.add_argument("--save-dir", type=Path, default=Path("results/gnmt"))
    c.add_argument("--save-freq", type=int, default=2000, help="checkpoint every N steps")
    c.add_argument("--keep-checkpoints", type=int, default=3, help="numbered saves kept")
    c.add_argument("--resume", action="store_true", help="continue from model_last.pth")
    c.add_argument("--print-freq", type=int, default=10)
    c.add_argument("--log-file", type=Path, default=None, help="default SAVE_DIR/log.json")
    return p.parse_args(argv)


def as_steps(value: float | None) -> float | int | None:
    """Flag values >= 1 are step counts, smaller ones fractions of all steps."""
    if value is None:
        return None
    return int(value) if value >= 1 else float(value)


def evaluate_bleu(
    model: GNMT,
    tokenizer: Tokenizer,
    src_lines: list[str],
    refs: list[str],
    args: argparse.Namespace,
    env: distributed.DistEnv,
    prec: Precision,
) -> tuple[float, float, int]:
    """Detokenized sacreBLEU of the test set; each rank translates its share.

    Returns (bleu, seconds, translated tokens).
    """
    cfg = SearchConfig(
        args.beam_size,
        args.max_length_test,
        args.len_norm_factor,
        args.len_norm_const,
        args.cov_penalty_factor,
    )
    start = time.perf_counter()
    mine = list(range(env.rank, len(src_lines), env.world_size))
    ids = [tokenizer.segment(src_lines[i]) for i in mine]
    with prec.autocast():
        hyps = translate_ids(model, ids, args.test_batch_size, cfg, env.device)
    texts = {i: tokenizer.decode(h) for i, h in zip(mine, hyps, strict=True)}
    merged = {k: v for part in distributed.all_gather_object(texts) for k, v in part.items()}
    outputs = [merged[i] for i in range(len(src_lines))]
    bleu = sacrebleu.corpus_bleu(outputs, [refs]).score
    tokens = sum(len(h) for h in hyps)
    return bleu, time.perf_counter() - start, tokens


def main(argv: list[str] | None = None) -> int:
    return cli.run_main(lambda: train(parse_args(argv)))


def train(args: argparse.Namespace) -> int:
    env = distributed.init_distributed(args.device)
    prec = cli.create_precision(args, env.device, gpu="fp16")
    distributed.seed_everything(args.seed)
    args.save_dir.mkdir(parents=True, exist_ok=True)
    logger = Logger(args.log_file or args.save_dir / "log.json")
    logger.log("PARAMETER", {**vars(args), "math": prec.mode, "world_size": env.world_size})

    ds = args.dataset_dir
    tokenizer = Tokenizer.from_files(
        ds / args.vocab, ds / args.bpe_codes, args.src_lang, args.tgt_lang
    )
    train = data.load_parallel(
        ds / args.train_src,
        ds / args.train_tgt,
        tokenizer,
        args.train_min_length,
        args.train_max_length,
    )
    test_src = data.read_lines(ds / args.test_src) if args.eval else []
    test_ref = data.read_lines(ds / args.test_tgt) if args.eval else []
    if len(test_src) != len(test_ref):
        raise data.DataError(f"{ds / args.test_src} and {ds / args.test_tgt} differ in lines")

    global_batch = args.train_global_batch_size or args.train_batch_size * env.world_size
    accumulation = global_batch // (args.train_batch_size * env.world_size)
    if accumulation < 1 or global_batch % (args.train_batch_size * env.world_size):
        raise SystemExit(
            f"--train-global-batch-size {global_batch} must be a multiple of "
            f"--train-batch-size x processes = {args.train_batch_size * env.world_size}"
        )
    batches_in_epoch = data.batches_per_epoch(
        train, args.train_batch_size, env.world_size, args.num_buckets
    )
    if batches_in_epoch < accumulation:
        raise SystemExit(f"{ds / args.train_src}: too few sentence pairs for one global batch")
    steps_per_epoch = batches_in_epoch // accumulation
    total_steps = steps_per_epoch * args.epochs

    model = GNMT(
        tokenizer.vocab_size,
        args.hidden_size,
        args.num_layers,
        args.dropout,
        args.share_embedding,
        args.init_decoder_from_encoder,
    ).to(env.device)
    # fused on the GPU: one kernel, and fp16 loss scaling without a host sync per step
    fused = env.device.type == "cuda"
    optimizer = torch.optim.Adam(model.parameters(), lr=args.lr, fused=fused)
    scheduler = build_gnmt_scheduler(
        optimizer,
        total_steps,
        warmup_steps=as_steps(args.warmup_steps),
        remain_steps=as_steps(args.remain_steps),
        decay_interval=as_steps(args.decay_interval),
        decay_steps=args.decay_steps,
        decay_factor=args.decay_factor,
    )
    ddp_model = distributed.wrap_ddp(model, env)
    distributed.seed_everything(args.seed, env.rank)  # per-rank dropout

    checkpointer = Checkpointer(
        args.save_dir, prefix="model", suffix=".pth", keep_last=args.keep_checkpoints
    )
    position = DataPosition()  # the epoch, and the next batch (micro-batch) in it
    settings = RunSettings(  # what exact resume depends on: a change is refused
        **{
            "--train-batch-size": args.train_batch_size,
            "global batch": global_batch,
            "--epochs": args.epochs,
            "--num-buckets": args.num_buckets,
            "--seed": args.seed,
            "training pairs": len(train),
        }
    )
    states = {  # restored in this order: the checks of the run come first
        "settings": settings,
        "tokenizer": tokenizer,  # checked, never replaced: the data is encoded with it
        "model": ddp_model,
        "optimizer": optimizer,
        "scheduler": scheduler,
        "precision": prec,
        "data_position": position,
    }
    step, best_bleu = 0, float("-inf")
    if args.resume:
        state = checkpointer.restore(states)
        if state is not None:
            step, best_bleu = state["step"], state["extra"]["best_bleu"]
            logger.log("PARAMETER", {"resumed_from_step": step, "epoch": position.epoch})

    def save(is_best: bool = False) -> None:
        extra = {"best_bleu": best_bleu, "model_config": config_dict(model)}
        path = checkpointer.save(step, states, extra=extra, is_best=is_best)
        if path:
            print(f"saved checkpoint {path} (step {step})", flush=True)

    train_step = OptimizerStep(ddp_model, optimizer, prec, scheduler, clip_norm=args.grad_clip)
    window = MetricsWindow(unit="tokens", device=env.device)
    per_sentence = global_batch / env.world_size  # losses are sums: average per sentence
    target_reached = False
    with RunControl(
        save, step, max_steps=args.max_steps or None, save_every=args.save_freq,
        agree_every=args.print_freq, window=window,
    ) as run:  # fmt: skip
        while position.epoch < args.epochs and run.reason is None and not target_reached:
            ddp_model.train()
            epoch_start, epoch_tokens, epoch_sents = time.perf_counter(), 0, 0
            stream = data.train_batches(
                train, args.train_batch_size, env.world_size, env.rank, args.seed,
                position.epoch, position.batch, args.num_buckets,
            )  # fmt: skip
            # Only whole steps: a trailing partial accumulation is dropped.
            last_index = steps_per_epoch * accumulation
            while position.batch < last_index:
                micro = [next(stream) for _ in range(accumulation)]
                position.batch = micro[-1][0] + 1
                for _, batch in train_step.micro_batches(micro):
                    batch = batch.to(env.device)
                    with prec.autocast():
                        logits = ddp_model(batch.src, batch.src_lengths, batch.tgt_input)
                    loss, nll = label_smoothed_loss(logits, batch.tgt_output, args.smoothing)
                    train_step.backward(loss / per_sentence)
                    window.add("nll/tok", nll, weight=(batch.tgt_output != 0).sum())
                result = train_step.finish()
                step += 1
                tokens = sum(batch.tokens for _, batch in micro)
                epoch_tokens += tokens
                epoch_sents += sum(batch.src.size(0) for _, batch in micro)
                window.add_step(result, items=tokens)
                if step % args.print_freq == 0:
                    values = window.line(prec)
                    values["ppl"] = math.exp(min(values["nll/tok"], 50))
                    logger.log((position.epoch, step), values)
                if run.after_step(step):
                    break

            if run.reason == "signal":
                print(f"stopped at step {step}; continue with --resume", flush=True)
                break
            epoch_time = time.perf_counter() - epoch_start
            totals = distributed.all_reduce_sum([epoch_tokens, epoch_sents]).tolist()
            summary = {
                "train_time_s": epoch_time,
                "sent/s": totals[1] / epoch_time,
                "tok/s": totals[0] / epoch_time,
            }
            print(
                f"training time for epoch {position.epoch + 1}: {epoch_time / 60:.2f} mins "
                f"({summary['sent/s']:.2f} sent/sec, {summary['tok/s']:.2f} tokens/sec)",
                flush=True,
            )
            is_best = False
            with window.paused():  # evaluation is not training time
                if args.eval:
                    ddp_model.eval()
                    bleu, eval_time, eval_tokens = evaluate_bleu(
                        model, tokenizer, test_src, test_ref, args, env, prec
                    )
                    summary.update({"bleu": bleu, "eval_time_s": eval_time})
                    print(
                        f"eval time for epoch {position.epoch + 1}: {eval_time / 60:.2f} mins "
                        f"({len(test_src) / eval_time:.2f} sent/sec, "
                        f"{eval_tokens * env.world_size / eval_time:.2f} tokens/sec)",
                        flush=True,
                    )
                    print(f"test BLEU after epoch {position.epoch + 1}: {bleu:.2f}", flush=True)
                    is_best = bleu > best_bleu
                    best_bleu = max(best_bleu, bleu)
                    target_reached = args.target_bleu is not None and bleu >= args.target_bleu
            logger.log((position.epoch + 1,), summary)
            if position.batch >= last_index:
                position.epoch, position.batch = position.epoch + 1, 0
            run.save(is_best=is_best)
    stop_reason = "target_bleu" if target_reached else run.reason

    logger.log(
        (),
        {
            "steps": step,
            "best_bleu": best_bleu if args.eval else None,
            "stop": stop_reason or "epochs",
        },
    )
    logger.close()
    distributed.cleanup()
    return 0


if __name__ == "__main__":
    sys.exit(main())
