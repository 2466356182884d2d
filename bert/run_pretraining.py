"""Pre-train BERT (masked LM + next-sentence prediction) on HDF5 shards with LAMB.

    python -m torch.distributed.run --standalone --nproc_per_node 8 -m bert.run_pretraining \\
        --setup dgxa100_8gpu_fp16 --input_dir DATA/phase1 --output_dir results/bert
    python -m torch.distributed.run ... -m bert.run_pretraining --phase2 \\
        --setup dgxa100_8gpu_fp16 --input_dir DATA/phase2 --output_dir results/bert

Recipe (the defaults; bert/configs/pretraining.yaml holds both phases and the machine
set-ups): phase 1 trains 7038 steps on sequences of 128 tokens (20 predictions each),
global batch 65,536, learning rate 6e-3 with 28.43% warm-up; phase 2 trains 1563 steps
on 512 tokens (80 predictions), global batch 32,768, 4e-3 with 12.8% warm-up, starting
from phase 1's last checkpoint. The global batch is --train_batch_size (per process and
micro-step) x --gradient_accumulation_steps x processes; gradients are all-reduced once
per step, after the last micro-step.

Optimisation: LAMB (common.optim; apex's fused kernel on CUDA when installed) with
weight decay 0.01 except on biases and LayerNorm, gradient-norm clipping to 1.0 inside
LAMB, linear warm-up then polynomial decay (power 0.5) of (1 - step / max_steps), as in
the reference. --optimizer adam: AdamW with the same groups and clipping.

Phase 2 (--phase2) starts from --init_checkpoint, or else from OUTPUT_DIR's last
checkpoint when that is a phase-1 one: the weights and LAMB's moment estimates carry
over, the optimizer's step count and the schedule start afresh (as NVIDIA's recipe
does), and step numbers continue after phase 1's last (--phase1_end_step, by default
the checkpoint's step). --resume_from_checkpoint continues the run in OUTPUT_DIR
exactly (model, optimizer, loss scale, schedule, RNG states, every rank's data position).

Outputs in OUTPUT_DIR: ckpt_step<N>.pt (every --num_steps_per_checkpoint steps, the last
--keep_checkpoints kept, ckpt_last.pt the newest; also on SIGTERM and at the end),
bert_config.json, dllogger.json (--json-summary) and, when a phase completes,
pretrained/ (Hugging Face format: config.json, model.safetensors, vocab.txt) for the
fine-tuning scripts.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from bert.finetune import check_setup_values, parameter_groups
from bert.model import BertConfig, BertForPreTraining
from bert.pretraining_data import (
    MaskingIds,
    Position,
    PretrainingBatches,
    scan_shards,
)
from bert.tokenization import load_vocab
from common import cli, distributed
from common.atomic import atomic_write
from common.benchmark import (
    LatencyRecorder,
    ThroughputMeter,
    log_results,
    markdown_table,
    to_milliseconds,
    write_json,
)
from common.checkpoint import (
    Checkpointer,
    CheckpointError,
    ForeignCheckpointError,
    load_model_weights,
    read_checkpoint,
    restore_state,
)
from common.config import parse_with_config
from common.errors import UserError
from common.logging import Logger, progress
from common.metrics import MetricsWindow
from common.optim import LAMB
from common.precision import Precision
from common.run_control import RunControl, stopped_line
from common.schedules import ScheduledLR
from common.step import OptimizerStep

DEFAULT_SETUPS = Path(__file__).parent / "configs" / "pretraining.yaml"


class PretrainingError(UserError, ValueError):
    """Flags that cannot work together; reported as one line before training starts."""


# --------------------------------------------------------------------------------- flags


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    given = sys.argv[1:] if argv is None else argv
    if any(arg == "--config" or arg.startswith("--config=") for arg in given):
        raise PretrainingError(
            "--config: pick a named set-up with --setup NAME here; --config_file is the "
            "BERT model's JSON, as in NVIDIA's run_pretraining.py"
        )
    p = cli.ArgumentParser(
        prog="python -m bert.run_pretraining",
        description=__doc__.splitlines()[0],
        allow_abbrev=False,
        epilog="The defaults shown are phase 1's. --setup NAME applies a named set-up of "
        "--setup_file (precision, per-GPU batch, accumulation); with --phase2 that file's "
        "phase2 section gives phase 2's values (512 tokens, 80 predictions, global batch "
        "32,768, 1563 steps, learning rate 4e-3, 12.8% warm-up). Flags win over both.",
    )
    d = p.add_argument_group("data")
    d.add_argument("--input_dir", type=Path, default=None, help="folder of HDF5 shards (required)")
    d.add_argument(
        "--max_seq_length", type=cli.positive_int, default=128, help="must match the shards"
    )
    d.add_argument(
        "--max_predictions_per_seq",
        type=cli.positive_int,
        default=20,
        help="at least the shards' P",
    )
    d.add_argument(
        "--dynamic_masking",
        action="store_true",
        help="mask each batch afresh (always on for shards without masked_lm_* fields)",
    )
    d.add_argument(
        "--vocab_file", type=Path, default=None, help="sets vocab_size; saved with the model"
    )

    m = p.add_argument_group("model")
    m.add_argument(
        "--bert_model", choices=("base", "large"), default="large", help="size of a new model"
    )
    m.add_argument(
        "--config_file",
        "--bert_config_file",
        dest="config_file",
        type=Path,
        default=None,
        help="bert_config.json (overrides --bert_model)",
    )
    m.add_argument(
        "--init_checkpoint",
        type=Path,
        default=None,
        help="start from these weights: our ckpt_*.pt, a Hugging Face directory or NVIDIA .pt",
    )

    t = p.add_argument_group("training")
    t.add_argument("--phase2", action="store_true", help="phase 2: continue from phase 1")
    t.add_argument(
        "--phase1_end_step",
        type=cli.nonnegative_int,
        default=None,
        help="when not given: the phase 1 checkpoint's step",
    )
    t.add_argument(
        "--train_batch_size", type=cli.positive_int, default=64, help="per process, micro-step"
    )
    t.add_argument(
        "--gradient_accumulation_steps",
        type=cli.positive_int,
        default=128,
        help="micro-steps per optimizer step",
    )
    t.add_argument(
        "--learning_rate",
        type=cli.nonnegative_float,
        default=6e-3,
        help="peak, for the global batch; 0 keeps the loaded weights (a check)",
    )
    t.add_argument(
        "--warmup_proportion", type=cli.fraction, default=0.2843, help="share of --max_steps"
    )
    t.add_argument(
        "--warmup_steps",
        type=cli.nonnegative_int,
        default=None,
        help="overrides --warmup_proportion",
    )
    t.add_argument(
        "--lr_decay_power", type=cli.nonnegative_float, default=0.5, help="polynomial decay"
    )
    t.add_argument(
        "--decay_steps",
        type=cli.positive_int,
        default=None,
        help="the rate reaches 0 here; when not given: --max_steps",
    )
    t.add_argument(
        "--max_steps", type=cli.positive_int, default=7038, help="optimizer steps of this phase"
    )
    t.add_argument(
        "--steps_this_run",
        type=cli.positive_int,
        default=None,
        help="stop (resumably) after N steps",
    )
    t.add_argument("--optimizer", choices=("lamb", "adam"), default="lamb", help="LAMB or AdamW")
    t.add_argument("--weight_decay", type=cli.nonnegative_float, default=0.01, help="0: none")
    t.add_argument(
        "--max_grad_norm", type=cli.nonnegative_float, default=1.0, help="0: no clipping"
    )
    t.add_argument(
        "--seed", type=cli.nonnegative_int, default=12439, help="weights, data order, masking"
    )

    r = p.add_argument_group("runtime")
    cli.add_precision_flags(r, "tf32 on GPUs from Ampere on, else fp32")
    r.add_argument(
        "--init_loss_scale", type=cli.positive_float, default=2.0**20, help="fp16's first"
    )
    r.add_argument(
        "--device", type=cli.device_arg, default=None, help="when not given: cuda if any"
    )
    r.add_argument("--compile", action="store_true", help="torch.compile the model")
    cli.add_threads_flag(r)

    o = p.add_argument_group("output")
    o.add_argument(
        "--output_dir",
        type=Path,
        default=Path("results/bert_pretraining"),
        help="checkpoints, logs and the pre-trained model go here",
    )
    o.add_argument(
        "--json-summary",
        dest="json_summary",
        type=Path,
        default=None,
        help="DLLogger file; when not given: OUTPUT_DIR/dllogger.json",
    )
    o.add_argument("--log_freq", type=cli.positive_int, default=1, help="log every N steps")
    o.add_argument(
        "--num_steps_per_checkpoint",
        type=cli.nonnegative_int,
        default=200,
        help="save every N steps; 0: only at the end and on SIGTERM",
    )
    o.add_argument(
        "--keep_checkpoints", type=cli.positive_int, default=3, help="numbered saves kept"
    )
    o.add_argument(
        "--resume_from_checkpoint", action="store_true", help="continue OUTPUT_DIR's last save"
    )
    cli.add_overwrite_flag(o)
    o.add_argument("--skip_checkpoint", action="store_true", help="write no checkpoints")
    o.add_argument("--disable_progress_bar", action="store_true", help="no progress bar")

    e = p.add_argument_group("evaluation (at the end of the phase)")
    e.add_argument("--eval_dir", type=Path, default=None, help="HDF5 shards; none: no eval")
    e.add_argument("--eval_batch_size", type=cli.positive_int, default=8, help="per process")
    e.add_argument(
        "--max_eval_steps", type=cli.positive_int, default=100, help="batches per process"
    )

    b = p.add_argument_group("benchmark")
    b.add_argument(
        "--benchmark", action="store_true", help="time steps, report sequences/s, no checkpoints"
    )
    b.add_argument(
        "--benchmark_warmup_steps",
        type=cli.nonnegative_int,
        default=10,
        help="steps left out of the timing",
    )

    args = parse_with_config(
        p,
        argv,
        DEFAULT_SETUPS,
        lambda known: "phase2" if known.phase2 else "phase1",
        name_flag="--setup",
        file_flag="--setup_file",
    )
    check_flags(p, args)
    if args.benchmark:
        args.skip_checkpoint = True
    return args


def check_flags(p: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """Bad set-up values and flag combinations, refused before any shard is read."""
    check_setup_values(p, args)
    cli.check_args(
        p,
        "--input_dir is required: the folder of HDF5 shards" if args.input_dir is None else None,
        cli.conflict(
            args,
            "--resume_from_checkpoint",
            "--overwrite",
            "one continues the run, the other deletes it",
        ),
    )
    if args.learning_rate == 0:  # allowed (checking a loaded model), never silent
        print("warning: --learning_rate 0: the weights will not change", file=sys.stderr)


# ---------------------------------------------------------------------- model and losses


def build_config(args: argparse.Namespace) -> tuple[BertConfig, int]:
    """--config_file or the --bert_model preset, and the number of tokens of the
    vocabulary (--vocab_file's when given); the config's vocab_size is that number padded
    to a multiple of 8, as NVIDIA does (tensor-core friendly)."""
    if args.config_file is not None:
        try:
            config = BertConfig.from_json_file(args.config_file)
        except (OSError, ValueError, TypeError) as exc:
            raise PretrainingError(f"--config_file {args.config_file}: {exc}") from exc
    else:
        config = getattr(BertConfig, args.bert_model)()
    if args.vocab_file is not None:
        config.vocab_size = max(load_vocab(args.vocab_file).values()) + 1
    tokens = config.vocab_size
    config.vocab_size += -tokens % 8
    if args.max_seq_length > config.max_position_embeddings:
        raise PretrainingError(
            f"--max_seq_length {args.max_seq_length} exceeds the model's "
            f"{config.max_position_embeddings} positions"
        )
    return config, tokens


def pretraining_loss(
    mlm_logits: torch.Tensor,
    nsp_logits: torch.Tensor,
    masked_lm_positions: torch.Tensor,
    masked_lm_ids: torch.Tensor,
    next_sentence_labels: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(loss, mlm_loss, nsp_loss) of a micro-batch.

    mlm_logits [B, P, V] at the masked positions; the MLM loss is the mean cross-entropy
    over the real predictions (padding slots have position 0 or label 0). nsp_logits
    [B, 2]: mean cross-entropy against next_sentence_labels [B]. loss = mlm + nsp.
    """
    valid = (masked_lm_positions != 0) & (masked_lm_ids != 0)
    token_loss = F.cross_entropy(
        mlm_logits.float().flatten(0, 1), masked_lm_ids.flatten(), reduction="none"
    )
    mlm = (token_loss * valid.flatten()).sum() / valid.sum().clamp(min=1)
    nsp = F.cross_entropy(nsp_logits.float(), next_sentence_labels)
    return mlm + nsp, mlm.detach(), nsp.detach()


def pretraining_lr(
    step: int, base_lr: float, *, warmup_steps: int, total_steps: int, power: float
) -> float:
    """The rate of the update after `step` updates: linear warm-up to `base_lr` over
    `warmup_steps`, then base_lr * (1 - step / total_steps) ** power (decay measured from
    step 0, as in Google's and NVIDIA's BERT, so it joins the warm-up below base_lr)."""
    if step < warmup_steps:
        return base_lr * (step + 1) / warmup_steps
    return base_lr * max(1.0 - step / total_steps, 0.0) ** power


def build_optimizer(model: torch.nn.Module, args: argparse.Namespace) -> torch.optim.Optimizer:
    groups = parameter_groups(model, args.weight_decay)
    if args.optimizer == "lamb":
        return LAMB(groups, lr=args.learning_rate, max_grad_norm=args.max_grad_norm)
    fused = all(p.is_cuda for g in groups for p in g["params"]) or None
    return torch.optim.AdamW(groups, lr=args.learning_rate, eps=1e-6, fused=fused)


def build_schedule(optimizer: torch.optim.Optimizer, args: argparse.Namespace) -> ScheduledLR:
    for group in optimizer.param_groups:  # a fresh schedule: forget a loaded initial_lr
        group["lr"] = group["initial_lr"] = args.learning_rate
    warmup = args.warmup_steps
    if warmup is None:
        warmup = int(args.warmup_proportion * args.max_steps)

    def lr_at(step: int, base_lr: float) -> float:
        return pretraining_lr(
            step,
            base_lr,
            warmup_steps=warmup,
            total_steps=args.decay_steps or args.max_steps,
            power=args.lr_decay_power,
        )

    return ScheduledLR(optimizer, lr_at)


# ---------------------------------------------------------------------------- start state


def load_weights(model: BertForPreTraining, path: Path) -> dict[str, Any] | None:
    """Load --init_checkpoint's weights into `model`; returns the checkpoint when it is
    one of ours (it may also hold optimizer state), None for a foreign one."""
    if path.is_file():
        try:
            state = read_checkpoint(path)
        except ForeignCheckpointError:
            pass  # a published model: loaded below
        else:
            load_model_weights(
                model, state["model"], source=f"--init_checkpoint {path}", checkpoint=state
            )
            return state
    if not path.exists():
        raise CheckpointError(f"--init_checkpoint {path} does not exist")
    try:
        weights = BertForPreTraining.from_pretrained(path, config=model.config).state_dict()
    except ValueError as exc:  # config files: not JSON, inconsistent values
        raise CheckpointError(f"--init_checkpoint {path}: {exc}") from exc
    own = model.state_dict()
    for key, value in weights.items():
        target = own.get(key)
        if (
            target is not None
            and value.shape[1:] == target.shape[1:]
            and (len(value) < len(target))
        ):  # the vocabulary is padded to a multiple of 8 here: keep the extra rows
            weights[key] = torch.cat([value, target[len(value) :]])
    try:
        model.load_state_dict(weights)
    except RuntimeError as exc:
        raise CheckpointError(f"--init_checkpoint {path} does not fit the model: {exc}") from exc
    return None


@dataclass
class StartingPoint:
    resume: dict[str, Any] | None = None  # the checkpoint to continue exactly
    path: Path | None = None  # where `resume` or phase 2's start came from
    phase1_end: int = 0  # the step phase 1 ended at (0 in phase 1)
    phase_over: bool = False  # phase 1 asked to resume after phase 2 began


def starting_point(
    args: argparse.Namespace,
    env: distributed.DistEnv,
    model: BertForPreTraining,
    optimizer: torch.optim.Optimizer,
    checkpointer: Checkpointer,
) -> StartingPoint:
    """Where this run starts: OUTPUT_DIR's last checkpoint of this phase (with
    --resume_from_checkpoint; restored by the caller once the schedule exists), phase 2
    from phase 1's last checkpoint (weights and LAMB moments loaded here), the
    --init_checkpoint weights, or scratch."""
    phase = 2 if args.phase2 else 1
    latest = checkpointer.latest()
    state = None
    wanted = args.resume_from_checkpoint or (phase == 2 and args.init_checkpoint is None)
    if latest is not None and wanted and not args.benchmark:
        state = read_checkpoint(latest)
    saved_phase = Phase.of(state)
    latest_phase = saved_phase.phase if saved_phase else None
    if args.resume_from_checkpoint and saved_phase and latest_phase == phase:
        return StartingPoint(state, latest, saved_phase.phase1_end_step)
    if phase == 1 and args.resume_from_checkpoint and latest_phase == 2:
        if env.is_main:
            print(f"{latest} is a phase-2 checkpoint: phase 1 is over, nothing to do", flush=True)
        return StartingPoint(phase_over=True)

    source: dict[str, Any] | None = None  # one of our checkpoints, to take phase 1's end from
    if args.init_checkpoint is not None:
        source, latest = load_weights(model, args.init_checkpoint), args.init_checkpoint
    elif phase == 2 and not args.benchmark:
        if latest_phase != 1:
            found = (
                "does not exist"
                if latest is None
                else f"is a phase-{latest_phase} checkpoint (add --resume_from_checkpoint)"
            )
            raise PretrainingError(
                f"phase 2 starts from phase 1's last checkpoint: {checkpointer.last_path} "
                f"{found}; run phase 1 with this --output_dir or pass --init_checkpoint"
            )
        source = state
        load_model_weights(model, state["model"], source=f"checkpoint {latest}", checkpoint=state)
        if env.is_main:
            print(f"phase 2 starts from {latest} (step {state['step']})", flush=True)
    if phase == 1:
        return StartingPoint()

    phase1_end = args.phase1_end_step
    if phase1_end is None:
        phase1_end = source["step"] if source is not None else 0
    if (
        source is not None
        and source.get("optimizer") is not None
        and source["extra"].get("optimizer") == args.optimizer
    ):
        optimizer.load_state_dict(source["optimizer"])
        if args.optimizer == "lamb":  # NVIDIA's phase 2: moments kept, steps from 0
            for group in optimizer.param_groups:
                group["step"] = 0
    return StartingPoint(path=latest, phase1_end=phase1_end)


@dataclass
class Phase:
    """The pre-training phase a checkpoint belongs to, and the step phase 1 ended at."""

    phase: int = 1
    phase1_end_step: int = 0

    def state_dict(self) -> dict[str, int]:
        return {"phase": self.phase, "phase1_end_step": self.phase1_end_step}

    def load_state_dict(self, state: dict[str, int]) -> None:
        self.phase, self.phase1_end_step = int(state["phase"]), int(state["phase1_end_step"])

    @classmethod
    def of(cls, checkpoint: dict[str, Any] | None) -> Phase | None:
        """The phase of one of our checkpoints (version 1 kept it in `extra`)."""
        if checkpoint is None:
            return None
        saved = checkpoint.get("phase")
        if saved is None:
            extra = checkpoint.get("extra") or {}
            if "phase" not in extra:
                return None
            saved = {"phase": extra["phase"], "phase1_end_step": extra.get("phase1_end_step", 0)}
        phase = cls()
        phase.load_state_dict(saved)
        return phase


class StreamPositions:
    """Every rank's place in its shard stream, a checkpoint part: saving gathers them all
    (a collective), restoring gives this rank its own as `start`."""

    def __init__(self, env: distributed.DistEnv) -> None:
        self.env = env
        self.start = Position()
        self.batches: PretrainingBatches | None = None  # the live stream, once it exists

    def state_dict(self) -> dict[str, Any]:
        position = self.batches.position if self.batches is not None else self.start
        return {"ranks": distributed.all_gather_object(position.to_dict())}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.start = position_for_rank(state, self.env)


def position_for_rank(saved: dict[str, Any], env: distributed.DistEnv) -> Position:
    """This rank's data position from a checkpoint; with another number of processes the
    streams cannot continue exactly, so every rank starts the next epoch."""
    ranks = saved["ranks"]
    if len(ranks) == env.world_size:
        return Position.from_dict(ranks[env.rank])
    epoch = max(r["epoch"] for r in ranks) + 1
    if env.is_main:
        print(
            f"warning: the checkpoint was written by {len(ranks)} processes, this run has "
            f"{env.world_size}; the data continues from the start of epoch {epoch}",
            flush=True,
        )
    return Position(epoch=epoch)


# ------------------------------------------------------------------------------ evaluation


@torch.no_grad()
def evaluate(
    model: torch.nn.Module,
    args: argparse.Namespace,
    env: distributed.DistEnv,
    prec: Precision,
    vocab_size: int,
    masking_ids: MaskingIds,
) -> dict[str, float]:
    """Masked-LM and next-sentence accuracy and loss on --eval_dir (--max_eval_steps
    batches of --eval_batch_size per process), summed over all processes."""
    shards = scan_shards(
        args.eval_dir, args.max_seq_length, args.max_predictions_per_seq, not args.dynamic_masking
    )
    batches = PretrainingBatches(
        shards,
        args.eval_batch_size,
        max_predictions=args.max_predictions_per_seq,
        seed=args.seed,
        rank=env.rank,
        world_size=env.world_size,
        dynamic_masking=args.dynamic_masking,
        masking_ids=masking_ids,
        vocab_size=vocab_size,
        prefetch=False,
    )
    # mlm loss sum, mlm correct, mlm count, nsp loss sum, nsp correct, nsp count
    totals = torch.zeros(6, dtype=torch.float64, device=env.device)
    model.eval()
    for _ in range(args.max_eval_steps):
        batch = {k: v.to(env.device) for k, v in next(batches).items()}
        with prec.autocast():
            mlm_logits, nsp_logits = model(
                batch["input_ids"],
                batch["segment_ids"],
                batch["input_mask"],
                masked_lm_positions=batch["masked_lm_positions"],
            )
        labels = batch["masked_lm_ids"]
        valid = (batch["masked_lm_positions"] != 0) & (labels != 0)
        token_loss = F.cross_entropy(
            mlm_logits.float().flatten(0, 1), labels.flatten(), reduction="none"
        )
        nsp_labels = batch["next_sentence_labels"]
        totals += torch.stack(
            [
                (token_loss * valid.flatten()).sum(),
                ((mlm_logits.argmax(-1) == labels) & valid).sum(),
                valid.sum(),
                F.cross_entropy(nsp_logits.float(), nsp_labels, reduction="sum"),
                (nsp_logits.argmax(-1) == nsp_labels).sum(),
                torch.tensor(len(nsp_labels), device=env.device),
            ]
        ).double()
    batches.close()
    model.train()
    t = distributed.all_reduce_sum(totals).tolist()
    return {
        "masked_lm_accuracy": t[1] / max(t[2], 1),
        "masked_lm_loss": t[0] / max(t[2], 1),
        "next_sentence_accuracy": t[4] / max(t[5], 1),
        "next_sentence_loss": t[3] / max(t[5], 1),
    }


# -------------------------------------------------------------------------------- training


def main(argv: list[str] | None = None) -> int:
    return cli.run_main(lambda: train(parse_args(argv)))


def train(args: argparse.Namespace) -> int:
    env = distributed.init_distributed(args.device)
    prec = cli.create_precision(args, env.device, init_scale=args.init_loss_scale)
    phase = 2 if args.phase2 else 1
    cli.set_threads(args.threads, env.local_world_size)
    checkpointer = Checkpointer(args.output_dir, prefix="ckpt", keep_last=args.keep_checkpoints)
    if phase == 1 and not args.benchmark:  # phase 2 continues phase 1's folder
        out = args.output_dir
        checkpointer.claim(
            resume=args.resume_from_checkpoint,
            overwrite=args.overwrite,
            outputs=[args.json_summary or out / "dllogger.json", out / "pretrained"],
            resume_flag="--resume_from_checkpoint",
        )
    config, tokens = build_config(args)
    masking_ids = MaskingIds()
    if args.vocab_file is not None:
        masking_ids = MaskingIds.from_vocab(load_vocab(args.vocab_file))
    elif args.dynamic_masking and tokens <= masking_ids.mask:
        raise PretrainingError(
            "--dynamic_masking needs --vocab_file for the ids of [CLS], [SEP] and [MASK] "
            "(without it they are BERT's uncased ids, beyond this vocabulary)"
        )
    # Every shard is checked before any GPU time is spent.
    shards = scan_shards(
        args.input_dir, args.max_seq_length, args.max_predictions_per_seq, not args.dynamic_masking
    )
    if args.eval_dir is not None:
        scan_shards(
            args.eval_dir,
            args.max_seq_length,
            args.max_predictions_per_seq,
            not args.dynamic_masking,
        )

    distributed.seed_everything(args.seed)  # the same initial weights on every rank
    model = BertForPreTraining(config).to(env.device)
    optimizer = build_optimizer(model, args)

    begin = starting_point(args, env, model, optimizer, checkpointer)
    if begin.phase_over:
        distributed.cleanup()
        return 0
    scheduler = build_schedule(optimizer, args)

    positions = StreamPositions(env)
    phase1_end, step = begin.phase1_end, 0  # step: optimizer steps of this phase
    states = {
        "model": model,
        "optimizer": optimizer,
        "scheduler": scheduler,
        "precision": prec,
        "data_position": positions,
        "phase": Phase(phase, phase1_end),  # saved only: `starting_point` read it
    }
    if begin.resume is not None:
        restore_state(
            begin.resume,
            {k: v for k, v in states.items() if k != "phase"},
            source=f"checkpoint {begin.path}",
        )
        step = begin.resume["step"] - phase1_end
        if env.is_main:
            print(f"resumed from {begin.path} at step {begin.resume['step']}", flush=True)
        if step >= args.max_steps:
            if env.is_main:
                print(f"phase {phase} is complete: nothing to do", flush=True)
                if not (args.output_dir / "pretrained").is_dir():  # a crash before the export
                    export(model, args)
            distributed.cleanup()
            return 0
    else:
        distributed.seed_everything(args.seed, env.rank)  # dropout: one stream per rank

    if env.is_main:
        args.output_dir.mkdir(parents=True, exist_ok=True)
        with atomic_write(args.output_dir / "bert_config.json", "w", encoding="utf-8") as f:
            f.write(json.dumps(config.to_dict(), indent=2, sort_keys=True) + "\n")
    logger = Logger(args.json_summary or args.output_dir / "dllogger.json", stdout=False)
    global_batch = args.train_batch_size * args.gradient_accumulation_steps * env.world_size
    logger.log(
        "PARAMETER",
        {
            **vars(args),
            "phase": phase,
            "world_size": env.world_size,
            "precision": prec.mode,
            "global_batch_size": global_batch,
            "vocab_size": config.vocab_size,
            "shards": len(shards),
        },
    )

    batches = PretrainingBatches(
        shards,
        args.train_batch_size,
        max_predictions=args.max_predictions_per_seq,
        seed=args.seed,
        rank=env.rank,
        world_size=env.world_size,
        position=positions.start,
        dynamic_masking=args.dynamic_masking,
        masking_ids=masking_ids,
        vocab_size=tokens,
        pin_memory=env.device.type == "cuda",
    )
    forward_model = torch.compile(model) if args.compile else model
    ddp_model = distributed.wrap_ddp(forward_model, env)

    positions.batches = batches

    def save() -> None:
        if args.skip_checkpoint:
            return
        extra = {
            "optimizer": args.optimizer,
            "bert_config": config.to_dict(),
            "max_seq_length": args.max_seq_length,
        }
        checkpointer.save(phase1_end + step, states, extra=extra)

    accumulation = args.gradient_accumulation_steps
    end = args.max_steps
    if args.steps_this_run is not None:
        end = min(end, step + args.steps_this_run)
    bar = progress(
        total=args.max_steps,
        initial=step,
        desc=f"phase {phase}",
        enabled=not args.disable_progress_bar,
    )
    # --benchmark times each step (waiting for the device); a training run never waits.
    meter = ThroughputMeter(warmup_steps=args.benchmark_warmup_steps, device=env.device)
    latency = LatencyRecorder(warmup=args.benchmark_warmup_steps, device=env.device)
    clip = args.max_grad_norm if args.optimizer == "adam" else 0.0  # LAMB clips inside
    train_step = OptimizerStep(ddp_model, optimizer, prec, scheduler, clip_norm=clip)
    window = MetricsWindow(unit="sequences", device=env.device)
    final_loss, first_steps = math.nan, step
    run_start = time.perf_counter()
    startup_end = None  # after the first step (compilation, allocator and data warm-up)
    ddp_model.train()
    with RunControl(save, step, max_steps=end, save_every=args.num_steps_per_checkpoint,
                    agree_every=args.log_freq, window=window) as run:  # fmt: skip
        while run.reason is None:
            step_start = time.perf_counter()
            if args.benchmark:
                meter.start()
            micro = [next(batches) for _ in range(accumulation)]
            for batch in train_step.micro_batches(micro):
                batch = {k: v.to(env.device, non_blocking=True) for k, v in batch.items()}
                with prec.autocast():
                    mlm_logits, nsp_logits = ddp_model(
                        batch["input_ids"],
                        batch["segment_ids"],
                        batch["input_mask"],
                        masked_lm_positions=batch["masked_lm_positions"],
                    )
                loss, mlm, nsp = pretraining_loss(
                    mlm_logits,
                    nsp_logits,
                    batch["masked_lm_positions"],
                    batch["masked_lm_ids"],
                    batch["next_sentence_labels"],
                )
                train_step.backward(loss / accumulation)
                window.add("mlm_loss", mlm)
                window.add("nsp_loss", nsp)
            result = train_step.finish()
            step += 1
            window.add_step(result, items=global_batch // env.world_size)
            bar.update(1)
            if args.benchmark:
                meter.update(global_batch)
                latency.add(time.perf_counter() - step_start)
            if startup_end is None:
                if env.device.type == "cuda":
                    torch.cuda.synchronize(env.device)
                startup_end = time.perf_counter()
            stopping = run.after_step(step)
            if step % args.log_freq == 0 or stopping:
                values = window.line(prec)
                final_loss = values["loss"]
                logger.log((batches.position.epoch + 1, phase1_end + step), values)
                if env.is_main:
                    print(
                        f"step {phase1_end + step} | loss {values['loss']:.4f} | mlm_loss "
                        f"{values['mlm_loss']:.4f} | nsp_loss {values['nsp_loss']:.4f} | lr "
                        f"{values['lr']:.3e} | {values['sequences/s']:.1f} sequences/s",
                        flush=True,
                    )
    stop = run.reason if run.reason == "signal" else None
    run_end = time.perf_counter()
    bar.close()
    batches.close()

    steps_run = step - first_steps
    sequences = steps_run * global_batch
    e2e_time = run_end - run_start
    raw_time = run_end - startup_end if startup_end is not None else 0.0
    throughput = (steps_run - 1) * global_batch / raw_time if steps_run > 1 and raw_time else 0.0
    summary: dict[str, Any] = {
        "e2e_train_time": e2e_time,
        "raw_train_time": raw_time,
        "training_sequences_per_second": throughput,
        "sequences_processed": sequences,
        "final_loss": final_loss,
        "step": phase1_end + step,
    }
    if env.is_main:
        print(
            f"0 Total Training Time = {e2e_time:.2f} Training Time W/O start up overhead = "
            f"{raw_time:.2f} Sentences processed = {sequences}\n"
            f"0 Training Performance = {throughput:.4f} sentences/sec\n"
            f"0 Final Loss = {final_loss:.4f}",
            flush=True,
        )
    finished = step >= args.max_steps
    if finished and args.eval_dir is not None and stop is None:
        results = evaluate(model, args, env, prec, tokens, masking_ids)
        summary.update(results)
        if env.is_main:
            print(" ".join(f"{k} = {v:.4f}" for k, v in results.items()), flush=True)
    if args.benchmark:
        report_benchmark(args, env, meter, latency, global_batch, logger)
    logger.log((), summary)
    logger.close()
    if finished and not args.skip_checkpoint and env.is_main:
        export(model, args)
    if stop == "signal" and env.is_main:
        print(stopped_line(phase1_end + step, "--resume_from_checkpoint"), flush=True)
    distributed.cleanup()
    return 0


def export(model: BertForPreTraining, args: argparse.Namespace) -> None:
    """The model in Hugging Face format for fine-tuning: OUTPUT_DIR/pretrained."""
    out = model.save_pretrained(args.output_dir / "pretrained", vocab_file=args.vocab_file)
    print(f"saved the pre-trained model to {out}", flush=True)


def report_benchmark(
    args: argparse.Namespace,
    env: distributed.DistEnv,
    meter: ThroughputMeter,
    latency: LatencyRecorder,
    global_batch: int,
    logger: Logger,
) -> None:
    """Sequences/s (all processes) and step latency percentiles, warm-up excluded."""
    if not latency.latencies:
        raise PretrainingError(
            f"--benchmark timed no steps: run more than --benchmark_warmup_steps "
            f"({args.benchmark_warmup_steps}) steps"
        )
    results = {
        "sequences/s": meter.throughput,
        "global_batch_size": global_batch,
        "max_seq_length": args.max_seq_length,
        "processes": env.world_size,
        **{f"step_{k}": v for k, v in latency.summary().items() if k != "count"},
        "timed_steps": meter.steps,
    }
    log_results(logger, results)
    if env.is_main:
        print(markdown_table([to_milliseconds(results, ("step_",))]), flush=True)
        write_json(args.output_dir / "benchmark.json", results)


if __name__ == "__main__":
    sys.exit(main())
