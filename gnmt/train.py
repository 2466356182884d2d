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

import torch

from common import cli, distributed
from common.checkpoint import Checkpointer, DataPosition, RunSettings
from common.config import ConfigError
from common.logging import Logger
from common.metrics import MetricsWindow
from common.precision import Precision
from common.run_control import RunControl, stopped_line
from common.schedules import build_gnmt_scheduler
from common.step import OptimizerStep
from gnmt import data
from gnmt.beam_search import add_scoring_flags, search_config
from gnmt.model import DECODER_DROPOUT, GNMT, GNMTConfig, config_dict, label_smoothed_loss
from gnmt.tokenizer import Tokenizer, vocab_multiple
from gnmt.translate import add_bleu_flag, corpus_bleu, translate_ids


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = cli.ArgumentParser(prog="python -m gnmt.train", description=__doc__.splitlines()[0])
    d = p.add_argument_group("dataset")
    d.add_argument(
        "--dataset-dir",
        type=Path,
        default=Path("data/wmt16_de_en"),
        help="folder of the prepared data (gnmt.prepare_data's outputs)",
    )
    d.add_argument("--src-lang", default="en", help="source language (tokenizer rules)")
    d.add_argument("--tgt-lang", default="de", help="target language (tokenizer rules)")
    d.add_argument("--vocab", default="vocab.bpe.32000", help="vocabulary file in --dataset-dir")
    d.add_argument("--bpe-codes", default="bpe.32000", help="BPE codes file in --dataset-dir")
    d.add_argument(
        "--train-src", default="train.tok.clean.bpe.32000.en", help="BPE'd training source"
    )
    d.add_argument(
        "--train-tgt", default="train.tok.clean.bpe.32000.de", help="BPE'd training target"
    )
    d.add_argument("--test-src", default="newstest2014.tok.bpe.32000.en", help="BPE'd test source")
    d.add_argument("--test-tgt", default="newstest2014.de", help="raw test reference for BLEU")
    d.add_argument(
        "--train-max-length",
        type=cli.positive_int,
        default=50,
        help="drop training pairs with a side longer than this (tokens, BOS/EOS included)",
    )
    d.add_argument(
        "--train-min-length",
        type=cli.nonnegative_int,
        default=0,
        help="drop training pairs with a side shorter than this (tokens, BOS/EOS included)",
    )
    d.add_argument(
        "--max-length-test",
        type=cli.positive_int,
        default=150,
        help="most tokens generated per test sentence",
    )
    d.add_argument(
        "--num-buckets", type=cli.positive_int, default=5, help="length buckets for batching"
    )

    m = p.add_argument_group("model")
    m.add_argument(
        "--hidden-size", type=cli.positive_int, default=1024, help="LSTM and embedding size"
    )
    m.add_argument(
        "--num-layers",
        type=cli.positive_int,
        default=4,
        help="LSTM layers of the encoder and of the decoder (at least 2)",
    )
    m.add_argument("--dropout", type=cli.probability, default=0.2, help="dropout probability")
    m.add_argument(
        "--decoder-dropout",
        choices=DECODER_DROPOUT,
        default=GNMTConfig.decoder_dropout,
        help="where the decoder drops out: each LSTM's output before the attention context "
        "joins it (NVIDIA's first release; learned faster in docs/GNMT.md's measurements), "
        "or every LSTM input whole, target embedding and context included (NVIDIA's "
        "current code)",
    )
    p.set_defaults(share_embedding=True, eval=True)  # for the two --no-* flags below
    m.add_argument(
        "--no-share-embedding",
        dest="share_embedding",
        action="store_false",
        default=argparse.SUPPRESS,  # the default is said in the help
        help="separate encoder and decoder embeddings (shared unless this is given)",
    )
    m.add_argument(
        "--init-decoder-from-encoder",
        action="store_true",
        help="start the decoder from the encoder's final states instead of zeros",
    )
    m.add_argument("--smoothing", type=cli.probability, default=0.1, help="label smoothing")

    t = p.add_argument_group("training")
    cli.add_precision_flags(t, "fp16 on a GPU, fp32 on the CPU")
    t.add_argument(
        "--device",
        type=cli.device_arg,
        default=None,
        help="torch device (cpu, cuda, cuda:1); when not given: cuda if there is one",
    )
    cli.add_threads_flag(t)
    t.add_argument("--seed", type=cli.nonnegative_int, default=1, help="random seed")
    t.add_argument(
        "--epochs",
        type=cli.positive_int,
        default=6,
        help="passes over the training data (the LR schedule spans them all)",
    )
    t.add_argument(
        "--max-steps",
        type=cli.positive_int,
        default=None,
        help="stop after this many steps; when not given: after --epochs (the LR schedule "
        "still spans --epochs, so a stopped run continues exactly with --resume)",
    )
    t.add_argument(
        "--train-batch-size",
        type=cli.positive_int,
        default=128,
        help="sentence pairs per GPU (per process) and micro-batch",
    )
    t.add_argument(
        "--train-global-batch-size",
        type=cli.positive_int,
        default=None,
        help="sentence pairs per step over all GPUs, a multiple of --train-batch-size x "
        "processes (gradient accumulation fills it); when not given: one micro-batch each",
    )
    t.add_argument("--lr", type=cli.positive_float, default=2e-3, help="peak learning rate")
    t.add_argument(
        "--grad-clip",
        type=cli.nonnegative_float,
        default=5.0,
        help="clip the gradient norm to this; 0: no clipping",
    )
    t.add_argument(
        "--warmup-steps",
        type=steps_or_fraction,
        default=200,
        help="learning-rate warm-up: whole steps, or a fraction (< 1) of all steps",
    )
    t.add_argument(
        "--remain-steps",
        type=steps_or_fraction,
        default=0.666,
        help="step where the decay starts: whole steps, or a fraction (< 1) of all steps",
    )
    t.add_argument(
        "--decay-interval",
        type=positive_steps_or_fraction,
        default=None,
        help="steps between decays: whole steps, or a fraction (< 1) of all steps; when "
        "not given: the steps after --remain-steps divided by --decay-steps",
    )
    t.add_argument(
        "--decay-steps", type=cli.positive_int, default=4, help="how many times the LR decays"
    )
    t.add_argument(
        "--decay-factor",
        type=cli.positive_float,
        default=0.5,
        help="the LR is multiplied by this at each decay",
    )
    t.add_argument(
        "--target-bleu",
        type=cli.nonnegative_float,
        default=None,
        help="stop once the test BLEU reaches this; when not given: run all --epochs",
    )

    e = p.add_argument_group("evaluation")
    e.add_argument(
        "--no-eval",
        dest="eval",
        action="store_false",
        default=argparse.SUPPRESS,  # the default is said in the help
        help="evaluation (test BLEU after each epoch) is on by default; this turns it off",
    )
    e.add_argument(
        "--test-batch-size",
        type=cli.positive_int,
        default=128,
        help="sentences per beam-search batch",
    )
    e.add_argument("--beam-size", type=cli.positive_int, default=5, help="beam width")
    add_scoring_flags(e)
    add_bleu_flag(e)

    c = p.add_argument_group("checkpoints and logs")
    c.add_argument(
        "--save-dir",
        type=Path,
        default=Path("results/gnmt"),
        help="folder of the checkpoints and the log",
    )
    c.add_argument(
        "--save-freq",
        type=cli.nonnegative_int,
        default=2000,
        help="checkpoint every N steps; 0: only at the end of each epoch",
    )
    c.add_argument(
        "--keep-checkpoints",
        type=cli.positive_int,
        default=3,
        help="numbered checkpoints kept (older ones are deleted)",
    )
    c.add_argument("--resume", action="store_true", help="continue from SAVE_DIR/model_last.pth")
    cli.add_overwrite_flag(c)
    c.add_argument("--print-freq", type=cli.positive_int, default=10, help="log every N steps")
    c.add_argument(
        "--log-file",
        type=Path,
        default=None,
        help="DLLogger JSON lines; when not given: SAVE_DIR/log.json",
    )
    args = p.parse_args(argv)
    check_flags(p, args)
    return args


def _steps_or_fraction(value: str, zero_ok: bool) -> float:
    low = "[0, 1)" if zero_ok else "(0, 1)"
    what = f"a fraction of all steps in {low} or a whole number of steps"
    try:
        number = float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be {what}, got {value!r}") from None
    # as_steps() reads values >= 1 as counts: refuse 2.5 rather than cut it to 2
    ok = (0 <= number < 1 and (zero_ok or number > 0)) or (
        1 <= number < float("inf") and number.is_integer()
    )
    if not ok:
        raise argparse.ArgumentTypeError(f"must be {what}, got {value!r}")
    return number


def steps_or_fraction(value: str) -> float:
    """argparse type: a fraction of all steps in [0, 1), or a whole number of steps."""
    return _steps_or_fraction(value, zero_ok=True)


def positive_steps_or_fraction(value: str) -> float:
    """argparse type: as `steps_or_fraction`, without 0."""
    return _steps_or_fraction(value, zero_ok=False)


def check_flags(p: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """Flag combinations that cannot work, refused before any data is read."""
    batch, global_batch = args.train_batch_size, args.train_global_batch_size
    cli.check_args(
        p,
        "--no-eval conflicts with --target-bleu (the target is checked by the evaluation "
        "that --no-eval turns off): give one of them"
        if not args.eval and args.target_bleu is not None
        else None,
        cli.conflict(
            args, "--resume", "--overwrite", "one continues the run, the other deletes it"
        ),
        f"--num-layers must be at least 2, got {args.num_layers}" if args.num_layers < 2 else None,
        f"--train-min-length {args.train_min_length} exceeds --train-max-length "
        f"{args.train_max_length}"
        if args.train_min_length > args.train_max_length
        else None,
        f"--train-global-batch-size {global_batch} must be a multiple of --train-batch-size {batch}"
        if global_batch is not None and global_batch % batch
        else None,
    )


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
    cfg = search_config(args, args.beam_size, args.max_length_test)
    start = time.perf_counter()
    mine = list(range(env.rank, len(src_lines), env.world_size))
    ids = [tokenizer.segment(src_lines[i]) for i in mine]
    with prec.autocast():
        hyps = translate_ids(model, ids, args.test_batch_size, cfg, env.device)
    texts = {i: tokenizer.decode(h) for i, h in zip(mine, hyps, strict=True)}
    merged = {k: v for part in distributed.all_gather_object(texts) for k, v in part.items()}
    outputs = [merged[i] for i in range(len(src_lines))]
    bleu = corpus_bleu(outputs, refs, args.bleu)
    tokens = sum(len(h) for h in hyps)
    return bleu, time.perf_counter() - start, tokens


def main(argv: list[str] | None = None) -> int:
    return cli.run_main(lambda: train(parse_args(argv)))


def train(args: argparse.Namespace) -> int:
    env = distributed.init_distributed(args.device)
    prec = cli.create_precision(args, env.device, gpu="fp16")
    cli.set_threads(args.threads, env.local_world_size)
    checkpointer = Checkpointer(
        args.save_dir, prefix="model", suffix=".pth", keep_last=args.keep_checkpoints
    )
    log_file = args.log_file or args.save_dir / "log.json"
    checkpointer.claim(resume=args.resume, overwrite=args.overwrite, outputs=[log_file])
    distributed.seed_everything(args.seed)

    ds = args.dataset_dir
    tokenizer = Tokenizer.from_files(
        ds / args.vocab, ds / args.bpe_codes, args.src_lang, args.tgt_lang,
        pad_to=vocab_multiple(prec.mode),
    )  # fmt: skip
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
        raise ConfigError(
            f"--train-global-batch-size {global_batch} must be a multiple of "
            f"--train-batch-size x processes = {args.train_batch_size * env.world_size}"
        )
    batches_in_epoch = data.batches_per_epoch(
        train, args.train_batch_size, env.world_size, args.num_buckets, args.train_max_length
    )
    if batches_in_epoch < accumulation:
        raise ConfigError(
            f"{ds / args.train_src}: too few sentence pairs for one global batch "
            "(--train-global-batch-size, --train-batch-size)"
        )
    steps_per_epoch = batches_in_epoch // accumulation
    total_steps = steps_per_epoch * args.epochs

    # Inputs are good: from here on the run writes (a failed start leaves no log).
    args.save_dir.mkdir(parents=True, exist_ok=True)
    logger = Logger(log_file)
    logger.log("PARAMETER", {**vars(args), "math": prec.mode, "world_size": env.world_size})
    model = GNMT(
        tokenizer.vocab_size,
        args.hidden_size,
        args.num_layers,
        args.dropout,
        args.share_embedding,
        args.init_decoder_from_encoder,
        decoder_dropout=args.decoder_dropout,
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

    position = DataPosition()  # the epoch, and the next batch (micro-batch) in it
    settings = RunSettings(  # what exact resume depends on: a change is refused
        **{
            "--train-batch-size": args.train_batch_size,
            "global batch": global_batch,
            "--epochs": args.epochs,
            "--num-buckets": args.num_buckets,
            "--decoder-dropout": args.decoder_dropout,
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
                position.epoch, position.batch, args.num_buckets, args.train_max_length,
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
                    logger.log((position.epoch + 1, step), values)  # epochs count from 1
                if run.after_step(step):
                    break

            if run.reason == "signal":
                print(stopped_line(step), flush=True)
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
