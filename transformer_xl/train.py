"""Train Transformer-XL (WikiText-103, enwik8, text8, One Billion Word).

    python -m transformer_xl.train --config_file transformer_xl/configs/wt103_base.yaml \\
        --config dgxa100_1gpu_fp16 --work_dir results/txl
    torchrun --nproc_per_node 8 -m transformer_xl.train --config dgxa100_8gpu_fp16 ...

The configs hold the published recipes; any flag overrides them. Each step trains on
one global batch of `--batch_size` streams x `--tgt_len` tokens, split over the
processes and, with `--batch_chunk`, into chunks whose gradients accumulate (each chunk
keeps its own memory). Every `--eval_interval` steps the validation set is scored and
`checkpoint_last.pt` written (`checkpoint_best.pt` on a new best); every
`--save_interval` steps a checkpoint is written as well. A run resumes with `--resume`
(from WORK_DIR) or `--restart PATH`; with each rank's memories saved in the checkpoint,
the continued run is identical to an uninterrupted one. A WORK_DIR that holds another
run is refused unless resumed or started over with `--overwrite`. SIGTERM and Ctrl-C
save and exit. At the end the best checkpoint is scored on the test set.
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from common import cli, distributed
from common.checkpoint import (
    Checkpointer,
    DataPosition,
    PerRank,
    load_model_weights,
    read_checkpoint,
)
from common.config import ConfigError, parse_with_config
from common.logging import Logger
from common.metrics import MetricsWindow
from common.optim import LAMB
from common.precision import (
    Precision,
)
from common.run_control import RunControl, stopped_line
from common.schedules import ScheduledLR, build_scheduler
from common.step import OptimizerStep
from transformer_xl import data
from transformer_xl.model import MemTransformerLM, init_weights, model_config

DEFAULT_CONFIG = Path(__file__).parent / "configs" / "wt103_base.yaml"
CHAR_LEVEL = ("enwik8", "text8")


# --- flags ------------------------------------------------------------------------------


def _int_or_minus_one(value: str, check: Callable[[str], int], what: str) -> int:
    try:
        if int(value) == -1:
            return -1
        return check(value)
    except (ValueError, argparse.ArgumentTypeError):
        raise argparse.ArgumentTypeError(f"must be {what}, got {value!r}") from None


def positive_or_minus_one(value: str) -> int:
    """argparse type: a positive integer, or -1 for "all" / "same as another flag"."""
    return _int_or_minus_one(value, cli.positive_int, "a positive integer or -1")


def clamp_len_arg(value: str) -> int:
    """argparse type for --clamp_len: a distance >= 0, or -1; 0 and -1 clamp nothing."""
    return _int_or_minus_one(value, cli.nonnegative_int, "an integer >= -1")


def check_config_values(p: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """Pass values that came from --config_file through their flag's type and choices
    (argparse checks neither for defaults that are not strings, as YAML numbers are)."""
    where = f"set by config {args.config!r} of {args.config_file}"
    for action in p._actions:
        value = getattr(args, action.dest, None)
        if not action.option_strings or value is None:
            continue
        flag = "/".join(action.option_strings)
        values = value if isinstance(value, list) else [value]
        if action.type not in (None, Path, cli.device_arg):
            try:
                values = [action.type(str(v)) for v in values]
            except (argparse.ArgumentTypeError, ValueError) as err:
                p.error(f"argument {flag}: {err} ({where})")
            setattr(args, action.dest, values if isinstance(value, list) else values[0])
        bad = [v for v in values if action.choices is not None and v not in action.choices]
        if bad:
            known = ", ".join(map(str, action.choices))
            p.error(f"argument {flag}: invalid choice: {bad[0]!r} ({where}; choose from {known})")


def check_flags(p: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """Refuse flag combinations that cannot work, before any data is read."""
    check_config_values(p, args)
    streams_flag = "--local_batch_size" if args.local_batch_size else "--batch_size"
    streams = args.local_batch_size or args.batch_size
    steps_flag = "--max_step_scheduler" if args.max_step_scheduler else "--max_step"
    steps = args.max_step_scheduler or args.max_step
    context_flag, context = (
        ("--mem_len", args.mem_len) if args.mem_len else ("--ext_len", args.ext_len)
    )
    restart_here = (
        args.restart is not None and args.restart.resolve().parent == args.work_dir.resolve()
    )
    cli.check_args(
        p,
        cli.conflict(args, "--no_eval", "--target_perplexity", "perplexity needs evaluation"),
        cli.conflict(args, "--resume", "--restart"),
        cli.conflict(args, "--resume", "--overwrite"),
        f"--restart {args.restart} continues the run in --work_dir {args.work_dir}, which "
        "--overwrite would clear: give one of them"
        if args.overwrite and restart_here
        else None,
        f"{streams_flag} {streams} must be a multiple of --batch_chunk {args.batch_chunk}"
        if streams % args.batch_chunk
        else None,
        f"the cosine schedule needs {steps_flag} ({steps}) above --warmup_step ({args.warmup_step})"
        if args.scheduler == "cosine" and steps <= args.warmup_step
        else None,
        f"--eval_tgt_len {args.eval_tgt_len} is longer than --tgt_len {args.tgt_len} + "
        f"{context_flag} {context}, the context the model is trained with"
        if not args.no_eval and args.eval_tgt_len > args.tgt_len + context
        else None,
        "--roll and --varlen apply to ordered corpora, not --dataset lm1b"
        if args.dataset == "lm1b" and (args.roll or args.varlen)
        else None,
    )


def check_eval_split(corpus: data.Corpus, args: argparse.Namespace, world_size: int = 1) -> None:
    """Raise `ConfigError` when the validation or test split cannot hold one evaluation
    batch of --eval_batch_size x --eval_tgt_len (call once the corpus is loaded, before
    training: otherwise the first evaluation fails after --eval_interval steps)."""
    if args.no_eval:
        return
    if args.eval_batch_size % world_size:
        raise ConfigError(
            f"--eval_batch_size {args.eval_batch_size} must be a multiple of the "
            f"{world_size} processes"
        )
    for split in ("valid", "test"):
        try:
            corpus.iterator(split, args.eval_batch_size, args.eval_tgt_len, ext_len=args.ext_len)
        except data.DataError:
            raise ConfigError(
                f"--data {args.data}: the {split} split ({getattr(corpus, split).numel()} "
                f"tokens) cannot fill one evaluation batch of --eval_batch_size "
                f"{args.eval_batch_size} x --eval_tgt_len {args.eval_tgt_len}; lower either, "
                "or give --no_eval"
            ) from None


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = cli.ArgumentParser(
        prog="python -m transformer_xl.train", description=__doc__.splitlines()[0]
    )
    g = p.add_argument_group("general")
    g.add_argument(
        "--work_dir", type=Path, default=Path("LM-TFM"), help="results folder: checkpoints, logs"
    )
    cli.add_precision_flags(g, "tf32 on GPUs from Ampere on, else fp32")
    g.add_argument(
        "--device", type=cli.device_arg, default=None,
        help="cpu, cuda or cuda:N; when not given: cuda if a GPU is visible, else cpu",
    )  # fmt: skip
    g.add_argument("--restart", type=Path, default=None, help="continue from this checkpoint")
    g.add_argument("--resume", action="store_true", help="continue from WORK_DIR's last one")
    cli.add_overwrite_flag(g)
    cli.add_threads_flag(g)
    g.add_argument(
        "--log_all_ranks", action="store_true", help="every process logs, not only rank 0"
    )
    g.add_argument("--dllog_file", default="train_log.json", help="JSON log, in WORK_DIR")
    g.add_argument("--txtlog_file", default="train_log.log", help="text log, in WORK_DIR")
    g.add_argument("--save_all", action="store_true", help="keep every numbered checkpoint")
    g.add_argument(
        "--no_eval", action="store_true",
        help="turn off evaluation, which by default scores the validation split every "
        "--eval_interval steps and the test split at the end",
    )  # fmt: skip
    g.add_argument(
        "--log_interval", type=cli.positive_int, default=10, help="steps between log lines"
    )
    g.add_argument(
        "--eval_interval", type=cli.positive_int, default=5000,
        help="steps between evaluations (each also saves a checkpoint)",
    )  # fmt: skip
    g.add_argument(
        "--save_interval", type=cli.positive_int, default=None,
        help="steps between checkpoints; when not given: --eval_interval",
    )  # fmt: skip
    g.add_argument(
        "--target_throughput", type=cli.positive_float, default=None,
        help="tokens/s; exit 1 below it",
    )  # fmt: skip
    g.add_argument(
        "--target_perplexity", type=cli.positive_float, default=None,
        help="exit 1 when the best validation perplexity is above it",
    )  # fmt: skip

    d = p.add_argument_group("dataset")
    d.add_argument(
        "--data", type=Path, default=Path("data/wikitext-103"),
        help="dataset folder, as transformer_xl.getdata writes it",
    )  # fmt: skip
    d.add_argument(
        "--dataset", choices=data.DATASET_NAMES, default="wt103", help="the dataset in --data"
    )

    m = p.add_argument_group("model")
    m.add_argument("--n_layer", type=cli.positive_int, default=12, help="layers")
    m.add_argument("--n_head", type=cli.positive_int, default=10, help="attention heads")
    m.add_argument("--d_head", type=cli.positive_int, default=50, help="width of each head")
    m.add_argument(
        "--d_embed", type=positive_or_minus_one, default=-1, help="embedding width; -1: d_model"
    )
    m.add_argument("--d_model", type=cli.positive_int, default=500, help="model width")
    m.add_argument(
        "--d_inner", type=cli.positive_int, default=1000, help="feed-forward inner width"
    )
    m.add_argument("--dropout", type=cli.probability, default=0.0, help="dropout rate")
    m.add_argument("--dropatt", type=cli.probability, default=0.0, help="attention dropout")
    m.add_argument("--pre_lnorm", action="store_true", help="LayerNorm before each block")
    m.add_argument(
        "--attn_type", type=int, choices=(0,), default=0,
        help="attention; 0: relative positions (the only one)",
    )  # fmt: skip
    m.add_argument("--not_tied", action="store_true", help="untie embedding and softmax")
    m.add_argument(
        "--clamp_len", type=clamp_len_arg, default=-1,
        help="clamp relative distances at this; 0 or -1: no clamping",
    )  # fmt: skip
    m.add_argument("--adaptive", action="store_true", help="adaptive input and softmax")
    m.add_argument("--div_val", type=cli.positive_int, default=1, help="adaptive dimension divisor")
    m.add_argument(
        "--init", choices=("normal", "uniform"), default="normal", help="weight initialisation"
    )
    m.add_argument(
        "--init_range", type=cli.positive_float, default=0.1,
        help="uniform init: weights in [-init_range, init_range]",
    )  # fmt: skip
    m.add_argument(
        "--init_std", type=cli.positive_float, default=0.02, help="normal init: std deviation"
    )
    m.add_argument(
        "--proj_init_std", type=cli.positive_float, default=0.01,
        help="std deviation of the adaptive projections",
    )  # fmt: skip

    o = p.add_argument_group("optimizer")
    o.add_argument(
        "--optim", choices=("adam", "sgd", "adagrad", "lamb", "jitlamb"), default="adam",
        help="optimizer (jitlamb: the same LAMB)",
    )  # fmt: skip
    o.add_argument("--lr", type=cli.positive_float, default=0.00025, help="peak learning rate")
    o.add_argument("--mom", type=cli.probability, default=0.0, help="SGD momentum")
    o.add_argument(
        "--scheduler", choices=("cosine", "inv_sqrt", "dev_perf", "constant"), default="cosine",
        help="learning-rate schedule after the warm-up",
    )  # fmt: skip
    o.add_argument(
        "--max_step_scheduler", type=cli.positive_int, default=None,
        help="steps of the cosine schedule; when not given: --max_step",
    )  # fmt: skip
    o.add_argument(
        "--warmup_step", type=cli.nonnegative_int, default=1000, help="linear warm-up steps"
    )
    o.add_argument(
        "--decay_rate", type=cli.fraction, default=0.5,
        help="dev_perf: lr factor when validation stops improving",
    )  # fmt: skip
    o.add_argument("--lr_min", type=cli.nonnegative_float, default=0.0, help="dev_perf: lowest lr")
    o.add_argument(
        "--patience", type=cli.nonnegative_int, default=0,
        help="dev_perf: evaluations without improvement before a decay",
    )  # fmt: skip
    o.add_argument(
        "--eta_min", type=cli.nonnegative_float, default=0.001, help="cosine: the final lr"
    )
    o.add_argument(
        "--clip", type=cli.nonnegative_float, default=0.25, help="gradient norm clip; 0: off"
    )
    o.add_argument("--clip_nonemb", action="store_true", help="clip non-embedding params only")
    o.add_argument(
        "--weight_decay", type=cli.nonnegative_float, default=0.0, help="weight decay (adam, lamb)"
    )

    t = p.add_argument_group("training")
    t.add_argument("--max_step", type=cli.positive_int, default=40000, help="training steps")
    t.add_argument(
        "--batch_size", type=cli.positive_int, default=256, help="global batch (streams)"
    )
    t.add_argument(
        "--local_batch_size", type=cli.positive_int, default=None,
        help="streams per process; when given, --batch_size is this x the processes",
    )  # fmt: skip
    t.add_argument(
        "--batch_chunk", type=cli.positive_int, default=1, help="gradient accumulation chunks"
    )
    t.add_argument("--roll", action="store_true", help="random shift of each stream per epoch")
    t.add_argument("--varlen", action="store_true", help="variable segment lengths")
    t.add_argument(
        "--tgt_len", type=cli.positive_int, default=192, help="tokens predicted per segment"
    )
    t.add_argument(
        "--ext_len", type=cli.nonnegative_int, default=0, help="extended context (no gradient)"
    )
    t.add_argument("--mem_len", type=cli.nonnegative_int, default=192, help="memory length")
    t.add_argument(
        "--same_length", action="store_true", help="every token attends to as many tokens"
    )
    t.add_argument("--seed", type=cli.nonnegative_int, default=1111, help="random seed")

    v = p.add_argument_group("validation")
    v.add_argument(
        "--eval_tgt_len", type=cli.positive_int, default=192,
        help="tokens predicted per evaluation segment",
    )  # fmt: skip
    v.add_argument(
        "--eval_batch_size", type=cli.positive_int, default=16,
        help="global evaluation batch (streams)",
    )  # fmt: skip
    v.add_argument(
        "--eval_max_steps", type=positive_or_minus_one, default=-1,
        help="segments scored per validation; -1: the whole split",
    )  # fmt: skip
    args = parse_with_config(p, argv, DEFAULT_CONFIG, "train")
    check_flags(p, args)
    return args


# --- optimisation ---------------------------------------------------------------------


def build_optimizer(model: MemTransformerLM, args: argparse.Namespace) -> torch.optim.Optimizer:
    params = [p for p in model.parameters() if p.requires_grad]
    # Fused on the GPU: one kernel, and fp16 loss scaling without a host read per step.
    fused = all(p.is_cuda for p in params) or None
    if args.optim == "adam":
        return torch.optim.Adam(params, lr=args.lr, weight_decay=args.weight_decay, fused=fused)
    if args.optim == "sgd":
        return torch.optim.SGD(params, lr=args.lr, momentum=args.mom, fused=fused)
    if args.optim == "adagrad":
        return torch.optim.Adagrad(params, lr=args.lr)
    # The recipe's LAMB: trust ratio on every tensor, no bias correction, and clipping
    # left to --clip (see docs/TRANSFORMER_XL.md).
    return LAMB(
        params,
        lr=args.lr,
        weight_decay=args.weight_decay,
        bias_correction=False,
        max_grad_norm=0.0,
        use_nvlamb=True,
    )


def build_lr_schedule(optimizer: torch.optim.Optimizer, args: argparse.Namespace) -> ScheduledLR:
    total = args.max_step_scheduler or args.max_step
    if args.scheduler == "cosine":
        if total <= args.warmup_step:
            raise ConfigError(
                f"the cosine schedule needs more steps ({total}: --max_step_scheduler or "
                f"--max_step) than --warmup_step ({args.warmup_step})"
            )
        return build_scheduler(
            optimizer, "cosine", warmup_steps=args.warmup_step, total_steps=total,
            eta_min=args.eta_min,
        )  # fmt: skip
    decay = "inverse_sqrt" if args.scheduler == "inv_sqrt" else "constant"
    return build_scheduler(optimizer, decay, warmup_steps=args.warmup_step)


class Plateau:
    """dev_perf: scale the learning rate by `decay_rate` when validation stops improving."""

    def __init__(self, scheduler: ScheduledLR, args: argparse.Namespace) -> None:
        self.scheduler, self.args = scheduler, args
        self.best, self.bad = math.inf, 0

    def update(self, val_loss: float) -> None:
        if val_loss < self.best:
            self.best, self.bad = val_loss, 0
            return
        self.bad += 1
        if self.bad > self.args.patience:
            self.bad = 0
            self.scheduler.base_lrs = [
                max(lr * self.args.decay_rate, self.args.lr_min) for lr in self.scheduler.base_lrs
            ]

    def state_dict(self) -> dict[str, Any]:
        return {"best": self.best, "bad": self.bad}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.best, self.bad = state["best"], state["bad"]


# --- evaluation -------------------------------------------------------------------------


@torch.no_grad()
def evaluate(
    model: MemTransformerLM,
    corpus: data.Corpus,
    split: str,
    args: argparse.Namespace,
    env: distributed.DistEnv,
    prec: Precision,
    max_steps: int = -1,
) -> float:
    """Mean per-token loss of `split`, each rank scoring its share of the batch columns.

    Evaluation segments are `eval_tgt_len` long; the memory grows by what the segment
    shrank, so every token sees as much context as in training.
    """
    model.eval()
    if args.mem_len == 0:
        model.reset_length(args.eval_tgt_len, args.ext_len + args.tgt_len - args.eval_tgt_len, 0)
    else:
        model.reset_length(
            args.eval_tgt_len, args.ext_len, args.mem_len + args.tgt_len - args.eval_tgt_len
        )
    iterator = corpus.iterator(
        split,
        args.eval_batch_size,
        args.eval_tgt_len,
        device=env.device,
        ext_len=args.ext_len,
        world_size=env.world_size,
        rank=env.rank,
    )
    total = torch.zeros((), dtype=torch.float64, device=env.device)
    count = 0
    mems = None
    for i, (inp, target, seq_len) in enumerate(iterator):
        if 0 <= max_steps <= i:
            break
        with prec.autocast():
            loss, mems = model(inp, target, mems)
        total += loss.float().mean().double() * seq_len
        count += seq_len
    model.reset_length(args.tgt_len, args.ext_len, args.mem_len)
    model.train()
    # Every rank holds an equal share of the columns: the mean of the means is the mean.
    return distributed.all_reduce_mean(total).item() / max(count, 1)


# --- checkpoints ------------------------------------------------------------------------


class Memories:
    """The memories of this rank's training streams, one list of layers per batch chunk
    (a per-rank part of the checkpoint, so a resumed run continues the same streams)."""

    def __init__(self, chunks: int, device: torch.device) -> None:
        self.chunks: list[Any] = [None] * chunks
        self.device = device

    def state_dict(self) -> dict[str, Any]:
        return {"chunks": self.chunks}

    def load_state_dict(self, state: dict[str, Any] | list[Any]) -> None:
        """Takes the saved memories when they have this run's batch chunks (in place: the
        loop holds `chunks`); otherwise they stay empty and `restored` says so. Version 1
        saved the bare list; its side files, {"mems": list}."""
        saved = state if isinstance(state, list) else state.get("chunks", state.get("mems"))
        self.restored = len(saved) == len(self.chunks)
        if self.restored:
            self.chunks[:] = [None if m is None else [t.to(self.device) for t in m] for m in saved]

    def load_side_file(self, work_dir: Path, step: int, rank: int) -> bool:
        """Checkpoints of earlier versions of this recipe kept each rank's memories in a
        side file `mems_rank<R>_step<N>.pt`; True when one was found and fitted."""
        old = work_dir / f"mems_rank{rank}_step{step:08d}.pt"
        if not old.is_file():
            return False
        self.load_state_dict(torch.load(old, map_location="cpu", weights_only=True))
        return self.restored


# --- training ---------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    return cli.run_main(lambda: train(parse_args(argv)))


def train(args: argparse.Namespace) -> int:
    env = distributed.init_distributed(args.device)
    prec = cli.create_precision(args, env.device)
    if args.local_batch_size:
        args.batch_size = args.local_batch_size * env.world_size
    if args.batch_size % (env.world_size * args.batch_chunk):
        raise ConfigError(
            f"--batch_size {args.batch_size} must divide into {env.world_size} processes x "
            f"--batch_chunk {args.batch_chunk}"
        )
    if args.dataset == "lm1b" and (args.roll or args.varlen):
        raise ConfigError(
            "--roll and --varlen apply to ordered corpora; lm1b is streamed sentence by "
            "sentence (its recipe: --config_file transformer_xl/configs/lm1b_base.yaml)"
        )
    cli.set_threads(args.threads, env.local_world_size)
    checkpointer = Checkpointer(
        args.work_dir,
        prefix="checkpoint",
        suffix=".pt",
        keep_last=1_000_000 if args.save_all else 1,
    )
    dllog = args.work_dir / args.dllog_file
    outputs = [dllog, args.work_dir / args.txtlog_file, *args.work_dir.glob("mems_rank*.pt")]
    outputs += args.work_dir.glob(f"{dllog.stem}.rank*{dllog.suffix}")  # --log_all_ranks
    restart_here = (
        args.restart is not None and args.restart.resolve().parent == args.work_dir.resolve()
    )
    checkpointer.claim(
        resume=args.resume or restart_here, overwrite=args.overwrite, outputs=outputs
    )
    distributed.seed_everything(args.seed)
    corpus = data.Corpus.load(args.data, args.dataset)
    check_eval_split(corpus, args, env.world_size)  # not first found at step 5000

    # Inputs are good: from here on the run writes (a failed start leaves no log).
    args.work_dir.mkdir(parents=True, exist_ok=True)
    logger = Logger(dllog, all_ranks=args.log_all_ranks, stdout=False)
    text_log = open_text_log(args.work_dir / args.txtlog_file, env)

    def say(line: str) -> None:
        if env.rank == 0 or args.log_all_ranks:
            print(line, flush=True)
            if text_log:
                text_log.write(line + "\n")
                text_log.flush()

    logger.log("PARAMETER", {**vars(args), "world_size": env.world_size, "precision": prec.mode})
    n_token = len(corpus.vocab)
    cutoffs, tie_projs = [], [False]
    if args.adaptive:
        cutoffs = data.cutoffs_for(args.dataset, n_token)
        tie_projs = data.tie_projs_for(args.dataset, n_token)
    model = MemTransformerLM(
        n_token,
        args.n_layer,
        args.n_head,
        args.d_model,
        args.d_head,
        args.d_inner,
        args.dropout,
        args.dropatt,
        tie_weight=not args.not_tied,
        d_embed=args.d_model if args.d_embed < 0 else args.d_embed,
        div_val=args.div_val,
        tie_projs=tie_projs,
        pre_lnorm=args.pre_lnorm,
        tgt_len=args.tgt_len,
        ext_len=args.ext_len,
        mem_len=args.mem_len,
        cutoffs=cutoffs,
        same_length=args.same_length,
        attn_type=args.attn_type,
        clamp_len=args.clamp_len,
    )
    init_weights(model, args.init, args.init_range, args.init_std, args.proj_init_std)
    model.to(env.device)
    n_params = sum(p.numel() for p in model.parameters())
    say(f"Transformer-XL: {n_params / 1e6:.1f} M parameters, vocabulary {n_token}")

    optimizer = build_optimizer(model, args)
    # --clip_nonemb leaves the (adaptive) embeddings and the tied softmax unclipped.
    clipped = list(model.non_embedding_parameters() if args.clip_nonemb else model.parameters())
    scheduler = build_lr_schedule(optimizer, args)
    plateau = Plateau(scheduler, args) if args.scheduler == "dev_perf" else None
    ddp_model = distributed.wrap_ddp(model, env)
    distributed.seed_everything(args.seed, env.rank)  # dropout differs per rank

    local_batch = args.batch_size // env.world_size
    position = DataPosition(epoch=1)  # the epoch, and the next batch in it
    memories = Memories(args.batch_chunk, env.device)
    mems = memories.chunks  # the loop updates them in place
    states = {  # restored in this order: the vocabulary check comes first
        "vocab": corpus.vocab,  # checked, never replaced: the corpus is numbered with it
        "model": ddp_model,
        "optimizer": optimizer,
        "scheduler": scheduler,
        "precision": prec,
        "data_position": position,
        "plateau": plateau,
        "mems": PerRank(memories),
    }
    step, best_val = 0, math.inf
    path = args.restart or (checkpointer.latest() if args.resume else None)
    state = checkpointer.restore(states, path) if path is not None else None
    if state is not None:
        step, best_val = state["step"], state["extra"]["best_val_loss"]
        restored = "mems" not in state["missing"] or memories.load_side_file(
            args.work_dir, step, env.rank
        )
        if not restored:
            say("warning: no saved memories for this step; continuing with empty memories")
        say(f"resumed at step {step} (epoch {position.epoch}, batch {position.batch})")

    best_pending = False  # the last evaluation was the best: the next save is `_best`

    def save() -> None:
        nonlocal best_pending
        extra = {
            "model_config": model_config(model),
            "best_val_loss": best_val,
            "dataset": args.dataset,
        }
        checkpointer.save(step, states, extra=extra, is_best=best_pending)
        best_pending = False

    save_interval = args.save_interval or args.eval_interval
    train_step = OptimizerStep(
        ddp_model, optimizer, prec, scheduler, clip_norm=args.clip, clip_params=clipped
    )
    window = MetricsWindow(unit="tokens", device=env.device)
    run_start = time.perf_counter()
    eval_count = 0
    with RunControl(
        save, step, max_steps=args.max_step, save_every=save_interval,
        agree_every=args.log_interval, window=window,
    ) as run:  # fmt: skip
        ddp_model.train()
        while run.reason is None:
            iterator = corpus.iterator(
                "train", args.batch_size, args.tgt_len, device=env.device, ext_len=args.ext_len,
                world_size=env.world_size, rank=env.rank, roll=args.roll, varlen=args.varlen,
                seed=args.seed, epoch=position.epoch, start=position.batch,
            )  # fmt: skip
            n_batch = iterator.n_batch
            for inp, target, seq_len in iterator:
                pieces = (inp.chunk(args.batch_chunk, 1), target.chunk(args.batch_chunk, 1))
                chunks = list(zip(*pieces, strict=True))
                for c, (inp_c, tgt_c) in enumerate(train_step.micro_batches(chunks)):
                    with prec.autocast():
                        loss, mems[c] = ddp_model(inp_c, tgt_c, mems[c])
                    train_step.backward(loss.float().mean() / args.batch_chunk)
                result = train_step.finish()
                step += 1
                position.batch += 1
                window.add_step(result, items=seq_len * local_batch)

                if step % args.log_interval == 0:
                    values = window.line(prec)
                    say(
                        f"| epoch {position.epoch:3d} step {step:>8d} | batches {position.batch:>6d} / "
                        f"{n_batch:d} | lr {values['lr']:.3e} | ms/batch {values['step_ms']:5.1f} "
                        f"| tok/s {values['tokens/s']:7.0f} | loss {values['loss']:5.2f} | "
                        f"{quality(args.dataset, values['loss'])}"
                    )
                    logger.log((position.epoch, step), values)

                if not args.no_eval and step % args.eval_interval == 0:
                    with window.paused():  # evaluation is not training time
                        eval_count += 1
                        start = time.perf_counter()
                        val = evaluate(model, corpus, "valid", args, env, prec, args.eval_max_steps)
                        say("-" * 100)
                        say(
                            f"| Eval {eval_count:3d} at step {step:>8d} | time: "
                            f"{time.perf_counter() - start:5.2f}s | valid loss {val:5.2f} | "
                            f"{quality(args.dataset, val, 'valid')}"
                        )
                        say("-" * 100)
                        logger.log(
                            (position.epoch, step),
                            {"valid_loss": val, "valid_ppl": math.exp(min(val, 50))},
                        )
                        if plateau:
                            plateau.update(val)
                        best_pending = val < best_val
                        best_val = min(best_val, val)
                        run.save(step=step)
                if run.after_step(step):
                    break
            else:
                position.epoch, position.batch = position.epoch + 1, 0
    if window.steps:  # steps since the last log line (a collective: every rank is here)
        window.line(prec)
    if run.reason == "signal":
        say(stopped_line(step))
    stop = run.reason
    train_time = time.perf_counter() - run_start

    passed = True
    if stop != "signal":
        throughput = window.throughput
        say("-" * 100)
        say(f"Training time: {train_time / 60:.2f} minutes")
        say(f"Training throughput: {throughput:.2f} tok/s")
        summary: dict[str, Any] = {"train_time_min": train_time / 60, "tokens/s": throughput}
        if not args.no_eval:
            best_path = checkpointer.best_path if checkpointer.best_path.is_file() else None
            if best_path is not None:
                best = read_checkpoint(best_path)
                load_model_weights(model, best["model"], source=str(best_path), checkpoint=best)
            test = evaluate(model, corpus, "test", args, env, prec)
            say("=" * 100)
            say(
                f"| End of training | test loss {test:5.2f} | {quality(args.dataset, test, 'test')}"
            )
            say("=" * 100)
            summary.update({"test_loss": test, "test_ppl": math.exp(min(test, 50))})
            summary["valid_loss"] = best_val
            if args.target_perplexity is not None and math.exp(best_val) > args.target_perplexity:
                say(f"target perplexity {args.target_perplexity} not reached")
                passed = False
        if args.target_throughput is not None and throughput < args.target_throughput:
            say(f"target throughput {args.target_throughput} tok/s not reached")
            passed = False
        logger.log((), {**summary, "passed": passed, "steps": step})
    logger.close()
    if text_log:
        text_log.close()
    distributed.cleanup()
    return 0 if passed else 1


def quality(dataset: str, loss: float, prefix: str = "") -> str:
    """Perplexity for word-level data, bits per character for character-level."""
    name = f"{prefix} " if prefix else ""
    if dataset in CHAR_LEVEL:
        return f"{name}bpc {loss / math.log(2):9.5f}"
    return f"{name}ppl {math.exp(min(loss, 50)):9.3f}"


def open_text_log(path: Path, env: distributed.DistEnv):
    if env.rank != 0:
        return None
    return open(path, "a", encoding="utf-8")  # noqa: SIM115 (closed at the end of train)


if __name__ == "__main__":
    sys.exit(main())
