"""What SQuAD and GLUE fine-tuning share: flags, model loading, AdamW with linear
warm-up and decay, the training loop, batched inference and their summaries.

    add_finetune_args(parser)                        # the flags both scripts take
    tokenizer, model = load_model(BertForQuestionAnswering, args)
    result = train(model, tensors, squad_loss, args, env, prec, logger)
    report_training(result, env, logger)             # "e2e train time: ... | training sequences/s"
    result = infer(model, tensors, forward, batch_size, prec, env.device)
    report_inference(result, logger)                 # "e2e inference time: ... | inference ..."

Batches. Features are tensors [N, max_seq_length]; each epoch visits them in a seeded
random order. Step i of an epoch trains on the global batch order[i*G:(i+1)*G], G =
train_batch_size x processes; rank r takes the r-th contiguous share and cuts it into
`gradient_accumulation_steps` micro-batches (all but the last under DDP's no_sync).
So a step sees the same examples whatever the number of processes, and the data
position is just the step (an incomplete last global batch of an epoch is left out).
Each micro-batch is cut to its longest sequence (rounded up to a multiple of 8):
padding is masked out, so this only saves time. With --torch_compile shapes stay
static instead.

Optimisation. AdamW (fused on CUDA) without weight decay on biases and LayerNorm
weights; the learning rate rises linearly over the first `warmup_proportion` of the
steps and falls linearly to 0 at the last (steps from `num_train_epochs`; --max_steps
stops earlier without changing the schedule, so a stopped run continues exactly).
Gradients are unscaled (fp16) and clipped to --max_grad_norm before each step.

Checkpoints go to OUTPUT_DIR/checkpoints (every --save_checkpoints_steps steps, at the
end, and on SIGTERM); --resume continues from the last one with model, optimizer,
schedule, loss scale, RNG states and data position restored.
"""

from __future__ import annotations

import argparse
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from bert.model import BertPreTrainedModel, check_vocab
from bert.tokenization import FullTokenizer
from common import cli, distributed
from common.benchmark import LatencyRecorder, ThroughputMeter
from common.checkpoint import Checkpointer, RunSettings
from common.errors import UserError
from common.logging import Logger, progress
from common.metrics import MetricsWindow
from common.precision import (
    Precision,
)
from common.run_control import RunControl, stopped_line
from common.schedules import ScheduledLR, build_scheduler
from common.step import OptimizerStep

SPECIAL_TOKENS = ("[CLS]", "[SEP]")
Batch = dict[str, torch.Tensor]
LossFn = Callable[[torch.nn.Module, Batch], torch.Tensor]


class FinetuneError(UserError, ValueError):
    """Bad flags, model or vocabulary: reported as one line before any training."""


# --------------------------------------------------------------------------------- flags


def add_finetune_args(p: argparse.ArgumentParser) -> None:
    """Flags of both fine-tuning scripts (each sets its own defaults for batch size,
    learning rate, epochs and sequence length)."""
    m = p.add_argument_group("model")
    m.add_argument(
        "--bert_model",
        default=None,
        help="model name for logs (base, large, bert-large-uncased) or a model directory",
    )
    m.add_argument(
        "--init_checkpoint",
        default=None,
        help="Hugging Face-format directory, our save_pretrained output or a .pt file "
        "(NVIDIA's, with --config_file)",
    )
    m.add_argument(
        "--config_file",
        "--bert_config_file",
        dest="config_file",
        default=None,
        help="BERT config JSON for a checkpoint file without config.json beside it",
    )
    m.add_argument(
        "--vocab_file", default=None, help="when not given: vocab.txt of the model directory"
    )
    m.add_argument(
        "--do_lower_case",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="lower-case and strip accents (uncased models)",
    )

    t = p.add_argument_group("training")
    t.add_argument("--do_train", action="store_true", help="fine-tune on the training data")
    t.add_argument(
        "--train_batch_size", type=cli.positive_int, default=32, help="per process and step"
    )
    t.add_argument(
        "--learning_rate", type=cli.positive_float, default=5e-5, help="peak (after warm-up)"
    )
    t.add_argument(
        "--num_train_epochs",
        type=cli.positive_float,
        default=3.0,
        help="passes over the data; sets the schedule's length",
    )
    t.add_argument(
        "--max_steps",
        type=cli.positive_int,
        default=None,
        help="stop after this many steps (schedule unchanged); when not given: every epoch",
    )
    t.add_argument("--warmup_proportion", type=cli.fraction, default=0.1, help="share of the steps")
    t.add_argument(
        "--gradient_accumulation_steps",
        type=cli.positive_int,
        default=1,
        help="micro-batches per step (must divide --train_batch_size)",
    )
    t.add_argument(
        "--weight_decay", type=cli.nonnegative_float, default=0.01, help="AdamW's, 0: none"
    )
    t.add_argument("--adam_epsilon", type=cli.positive_float, default=1e-6, help="AdamW's eps")
    t.add_argument(
        "--max_grad_norm", type=cli.nonnegative_float, default=1.0, help="0: no clipping"
    )
    t.add_argument(
        "--seed", type=cli.nonnegative_int, default=42, help="data order, dropout, new heads"
    )

    r = p.add_argument_group("runtime")
    cli.add_precision_flags(r, "tf32 on GPUs from Ampere on, else fp32")
    r.add_argument(
        "--device", type=cli.device_arg, default=None, help="when not given: cuda if any"
    )
    r.add_argument(
        "--torch_compile", action="store_true", help="torch.compile the model (static shapes)"
    )
    cli.add_threads_flag(r)

    o = p.add_argument_group("output")
    o.add_argument(
        "--output_dir",
        type=Path,
        default=Path("results"),
        help="the model, predictions, checkpoints/ and logs go here",
    )
    o.add_argument(
        "--json-summary",
        dest="json_summary",
        type=Path,
        default=None,
        help="DLLogger log file; when not given: OUTPUT_DIR/dllogger.json",
    )
    o.add_argument("--log_freq", type=cli.positive_int, default=50, help="log every N steps")
    o.add_argument(
        "--save_checkpoints_steps",
        type=cli.nonnegative_int,
        default=1000,
        help="save every N steps; 0: only at the end and on SIGTERM",
    )
    o.add_argument(
        "--keep_checkpoints", type=cli.positive_int, default=1, help="numbered saves kept"
    )
    o.add_argument("--resume", action="store_true", help="continue from OUTPUT_DIR/checkpoints")
    cli.add_overwrite_flag(o)


def finetune_problems(args: argparse.Namespace) -> list[str | None]:
    """Combinations of the shared flags that cannot work (for `cli.check_args`)."""
    batch, micro_batches = args.train_batch_size, args.gradient_accumulation_steps
    return [
        cli.conflict(
            args, "--resume", "--overwrite", "one continues the run, the other deletes it"
        ),
        f"--train_batch_size {batch} must be a multiple of --gradient_accumulation_steps "
        f"{micro_batches}"
        if batch % micro_batches
        else None,
    ]


_CHECKED_TYPES = (
    cli.positive_int,
    cli.nonnegative_int,
    cli.positive_float,
    cli.nonnegative_float,
    cli.probability,
    cli.fraction,
    cli.any_float,
)


def check_setup_values(
    parser: argparse.ArgumentParser,
    args: argparse.Namespace,
    name_flag: str = "--setup",
    file_flag: str = "--setup_file",
) -> None:
    """Check the values a named set-up gave (argparse defaults, which argparse converts
    only when they are strings) with the flag's own type and choices; a bad one ends the
    run naming the flag and the set-up, as a bad command-line value does."""
    name = getattr(args, name_flag.lstrip("-").replace("-", "_"), None)
    source = getattr(args, file_flag.lstrip("-").replace("-", "_"), None)
    origin = f"from {name_flag} {name} of {source}"
    for action in parser._actions:
        default = action.default
        if (
            not action.option_strings
            or default is None
            or getattr(args, action.dest, None) != default
        ):
            continue  # given on the command line, or nothing to check
        flag = next((f for f in action.option_strings if f[2:] == action.dest), None)
        flag = flag or action.option_strings[0]
        if action.type in _CHECKED_TYPES and not isinstance(default, str):
            try:
                setattr(args, action.dest, action.type(str(default)))
            except argparse.ArgumentTypeError as exc:
                parser.error(f"argument {flag}: {exc} ({origin})")
        if action.choices is not None and default not in action.choices:
            choices = ", ".join(map(str, action.choices))
            parser.error(f"argument {flag}: {default!r} is not one of {choices} ({origin})")


# --------------------------------------------------------------------------------- model


def check_same_vocab(given: Path, own: Path) -> None:
    """--vocab_file must be the model folder's own vocabulary: another one (even of the
    same size) numbers the words otherwise and the model silently answers nonsense."""
    try:
        ours, theirs = given.read_bytes().splitlines(), own.read_bytes().splitlines()
    except OSError as exc:
        raise FinetuneError(f"--vocab_file {given}: {exc.strerror}") from exc
    if ours == theirs:
        return
    line = next((i for i, (a, b) in enumerate(zip(ours, theirs, strict=False)) if a != b), None)
    where = (
        f"line {line + 1} differs"
        if line is not None
        else f"{len(ours)} entries against {len(theirs)}"
    )
    raise FinetuneError(
        f"--vocab_file {given} is not the vocabulary of the model in {own.parent} "
        f"({where}): leave --vocab_file out to use {own}"
    )


def load_model(
    model_cls: type[BertPreTrainedModel], args: argparse.Namespace, **model_kwargs: Any
) -> tuple[FullTokenizer, BertPreTrainedModel]:
    """The tokenizer and `model_cls` from --init_checkpoint (or a --bert_model directory),
    with the vocabulary checked against the word embeddings and --max_seq_length
    against the positions."""
    source = args.init_checkpoint
    if source is None and args.bert_model and Path(args.bert_model).exists():
        source = args.bert_model
    if source is None:
        raise FinetuneError(
            "--init_checkpoint is required: a Hugging Face-format model directory, our "
            "save_pretrained output, or a .pt checkpoint file with --config_file"
        )
    own = Path(source) / "vocab.txt"  # the vocabulary the model was trained with
    vocab = args.vocab_file
    if vocab is None and own.is_file():
        vocab = own
    if vocab is None:
        raise FinetuneError(f"--vocab_file is required: {source} holds no vocab.txt")
    if own.is_file() and Path(vocab).resolve() != own.resolve():
        check_same_vocab(Path(vocab), own)
    try:
        model = model_cls.from_pretrained(source, config=args.config_file, **model_kwargs)
    except ValueError as exc:  # config files: missing, not JSON, inconsistent values
        raise FinetuneError(str(exc)) from exc
    try:
        tokenizer = FullTokenizer(vocab, do_lower_case=args.do_lower_case)
        check_vocab(model, tokenizer)
    except ValueError as exc:
        raise FinetuneError(str(exc)) from exc
    missing = [t for t in SPECIAL_TOKENS if t not in tokenizer.vocab]
    if missing:
        raise FinetuneError(f"vocabulary {vocab} lacks {', '.join(missing)}")
    if args.max_seq_length > model.config.max_position_embeddings:
        raise FinetuneError(
            f"--max_seq_length {args.max_seq_length} exceeds the model's "
            f"{model.config.max_position_embeddings} positions ({source})"
        )
    return tokenizer, model


def classification_loss(model: torch.nn.Module, batch: Batch) -> torch.Tensor:
    """Cross entropy of a sequence classifier (run_glue, run_re) on `batch["labels"]`."""
    return torch.nn.functional.cross_entropy(class_logits(model, batch).float(), batch["labels"])


def class_logits(model: torch.nn.Module, batch: Batch) -> torch.Tensor:
    """A sequence classifier's logits [B, labels]."""
    return model(batch["input_ids"], batch["token_type_ids"], batch["attention_mask"])


def parameter_groups(model: torch.nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    """Two AdamW groups: weights with `weight_decay`, biases and LayerNorm without."""
    decay, no_decay = [], []
    for name, param in model.named_parameters():
        if param.requires_grad:
            exempt = name.endswith("bias") or "LayerNorm" in name
            (no_decay if exempt else decay).append(param)
    return [
        {"params": decay, "weight_decay": weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]


def build_optimizer(
    model: torch.nn.Module, args: argparse.Namespace, device: torch.device
) -> torch.optim.AdamW:
    return torch.optim.AdamW(
        parameter_groups(model, args.weight_decay),
        lr=args.learning_rate,
        eps=args.adam_epsilon,
        fused=True if device.type == "cuda" else None,
    )


def build_lr_schedule(
    optimizer: torch.optim.Optimizer, total_steps: int, warmup_proportion: float
) -> ScheduledLR:
    """Linear warm-up over `warmup_proportion` of `total_steps`, then linear decay to 0."""
    warmup = min(int(warmup_proportion * total_steps), total_steps - 1)
    return build_scheduler(optimizer, "linear", warmup_steps=warmup, total_steps=total_steps)


# -------------------------------------------------------------------------------- batches


def epoch_order(n: int, seed: int, epoch: int) -> torch.Tensor:
    """The order in which epoch `epoch` visits `n` features (the same on every rank)."""
    generator = torch.Generator().manual_seed(seed * 100_003 + epoch)
    return torch.randperm(n, generator=generator)


def select(tensors: Batch, index: torch.Tensor, device: torch.device, trim: bool = True) -> Batch:
    """Rows `index` of every tensor on `device`; with `trim`, sequence tensors are cut
    after the longest attention mask (rounded up to a multiple of 8)."""
    batch = {k: v[index] for k, v in tensors.items()}
    if trim:
        width = batch["attention_mask"].size(1)
        longest = int(batch["attention_mask"].sum(1).max())
        keep = min(width, -(-longest // 8) * 8)
        batch = {
            k: v[:, :keep] if v.dim() == 2 and v.size(1) == width else v for k, v in batch.items()
        }
    return {k: v.to(device, non_blocking=True) for k, v in batch.items()}


# ------------------------------------------------------------------------------- training


@dataclass
class TrainResult:
    steps: int
    total_steps: int
    final_loss: float
    train_time: float  # seconds from the first step to the last, checkpoints included
    sequences_per_second: float  # all processes, warm-up steps excluded
    interrupted: bool  # stopped by SIGTERM: resume before using the model


def train(
    model: BertPreTrainedModel,
    tensors: Batch,
    loss_fn: LossFn,
    args: argparse.Namespace,
    env: distributed.DistEnv,
    prec: Precision,
    logger: Logger,
) -> TrainResult:
    """Fine-tune `model` (already on env.device) on `tensors` [N, ...]; `loss_fn(model,
    batch)` returns the mean loss of a micro-batch. See the module docstring."""
    world, local = env.world_size, args.train_batch_size
    accumulation = args.gradient_accumulation_steps
    if accumulation < 1 or local % accumulation:
        raise FinetuneError(
            f"--train_batch_size {local} must be a multiple of "
            f"--gradient_accumulation_steps {accumulation}"
        )
    micro = local // accumulation
    n = len(tensors["input_ids"])
    global_batch = local * world
    steps_per_epoch = n // global_batch
    if steps_per_epoch == 0:
        raise FinetuneError(
            f"{n} training features are fewer than one global batch ({global_batch} = "
            f"--train_batch_size {local} x {world} processes)"
        )
    total_steps = max(int(steps_per_epoch * args.num_train_epochs), 1)
    optimizer = build_optimizer(model, args, env.device)
    scheduler = build_lr_schedule(optimizer, total_steps, args.warmup_proportion)
    ddp_model = distributed.wrap_ddp(model, env)
    forward_model = torch.compile(ddp_model) if args.torch_compile else ddp_model
    checkpointer = Checkpointer(
        args.output_dir / "checkpoints", prefix="finetune", keep_last=args.keep_checkpoints
    )
    run_info = {"global_batch": global_batch, "features": n, "total_steps": total_steps}
    states = {  # restored in this order: the settings check comes first
        "settings": RunSettings(**run_info),
        "model": model,
        "optimizer": optimizer,
        "scheduler": scheduler,
        "precision": prec,
    }

    step = 0
    distributed.seed_everything(args.seed, env.rank)  # dropout: its own stream per rank
    if args.resume:
        state = checkpointer.restore(states)
        if state is not None:
            step = state["step"]
            print(f"resumed from step {step} of {total_steps}", flush=True)

    def save() -> None:
        checkpointer.save(step, states)

    logger.log(
        "PARAMETER",
        {**run_info, "steps_per_epoch": steps_per_epoch, "micro_batch": micro, "world_size": world},
    )
    train_step = OptimizerStep(
        ddp_model, optimizer, prec, scheduler, clip_norm=args.max_grad_norm,
        clip_params=model.parameters(),
    )  # fmt: skip
    window = MetricsWindow(unit="sequences", device=env.device)
    bar = progress(total=total_steps, initial=step, desc="training")
    trim = not args.torch_compile
    final_loss, start = math.nan, time.perf_counter()
    end = min(total_steps, args.max_steps) if args.max_steps else total_steps
    ddp_model.train()
    try:
        with RunControl(save, step, max_steps=end, save_every=args.save_checkpoints_steps,
                        agree_every=args.log_freq, window=window) as run:  # fmt: skip
            while run.reason is None:
                epoch, first = divmod(step, steps_per_epoch)
                order = epoch_order(n, args.seed, epoch)
                for i in range(first, steps_per_epoch):
                    mine = order[i * global_batch + env.rank * local :][:local]
                    parts = [mine[m * micro : (m + 1) * micro] for m in range(accumulation)]
                    for part in train_step.micro_batches(parts):
                        batch = select(tensors, part, env.device, trim)
                        with prec.autocast():
                            loss = loss_fn(forward_model, batch)
                        train_step.backward(loss / accumulation)
                    result = train_step.finish()
                    step += 1
                    window.add_step(result, items=local)
                    bar.update(1)
                    stopping = run.after_step(step)
                    if step % args.log_freq == 0 or stopping:
                        values = window.line(prec)
                        final_loss = values["loss"]
                        logger.log((epoch + 1, step), values)  # epochs count from 1
                        if env.is_main:
                            print(
                                f"epoch {epoch + 1} step {step}/{total_steps} | loss {final_loss:.4f}"
                                f" | lr {values['lr']:.3e} | {values['sequences/s']:.1f} "
                                "sequences/s",
                                flush=True,
                            )
                    if stopping:
                        break
    finally:
        bar.close()
    train_time = time.perf_counter() - start
    if run.reason == "signal" and env.is_main:
        print(stopped_line(step), flush=True)
    return TrainResult(
        steps=step,
        total_steps=total_steps,
        final_loss=final_loss,
        train_time=train_time,
        sequences_per_second=window.throughput,
        interrupted=run.reason == "signal",
    )


# ------------------------------------------------------------------------------ inference


@dataclass
class InferenceResult:
    outputs: list[np.ndarray]  # one per feature, in the order of the input tensors
    e2e_time: float  # seconds, everything included
    sequences_per_second: float  # warm-up batches excluded
    latency: dict[str, float]  # seconds per batch: avg, p50, p90, p95, p99, p100


@torch.no_grad()
def infer(
    model: torch.nn.Module,
    tensors: Batch,
    forward: Callable[[torch.nn.Module, Batch], torch.Tensor],
    batch_size: int,
    prec: Precision,
    device: torch.device,
    compile_model: bool = False,
) -> InferenceResult:
    """`forward(model, batch)` -> [B, ...] over all features in batches, shortest first
    (less padding), in eval mode; outputs come back in input order as float32 arrays."""
    start = time.perf_counter()
    model.eval()
    runner = torch.compile(model) if compile_model else model
    lengths = tensors["attention_mask"].sum(1)
    order = torch.argsort(lengths, stable=True)
    batches = list(order.split(batch_size))
    warmup = min(10, len(batches) // 10)
    meter = ThroughputMeter(warmup_steps=warmup, device=device)
    latency = LatencyRecorder(warmup=warmup, device=device)
    outputs: list[np.ndarray | None] = [None] * len(order)
    for index in progress(batches, desc="inference"):
        batch = select(tensors, index, device, trim=not compile_model)
        meter.start()
        with latency.measure(), prec.autocast():
            result = forward(runner, batch)
        meter.update(len(index))
        for row, i in zip(result.float().cpu().numpy(), index.tolist(), strict=True):
            outputs[i] = row
    return InferenceResult(
        outputs=outputs,
        e2e_time=time.perf_counter() - start,
        sequences_per_second=meter.throughput,
        latency=latency.summary() if latency.latencies else {},
    )


def stopped_early(
    result: TrainResult,
    model: BertPreTrainedModel,
    tokenizer: FullTokenizer,
    args: argparse.Namespace,
    env: distributed.DistEnv,
    logger: Logger,
) -> bool:
    """After `train`: an interrupted run (its checkpoint is what resumes) closes its log
    and process group and answers True, for the caller to return; a finished one saves
    the fine-tuned model (main process) and answers False."""
    if result.interrupted:
        logger.close()
        distributed.cleanup()
        return True
    if env.is_main:
        model.save_pretrained(args.output_dir, vocab_file=tokenizer.vocab_file)
    return False


def report_training(
    result: TrainResult, env: distributed.DistEnv, logger: Logger, **extra: Any
) -> None:
    """The run's summary as the reference prints it, and as a DLLogger summary line."""
    logger.log(
        (),
        {
            "e2e_train_time": result.train_time,
            "training_sequences_per_second": result.sequences_per_second,
            "final_loss": result.final_loss,
            "steps": result.steps,
            **extra,
        },
    )
    if env.is_main:
        print(
            f"e2e train time: {result.train_time:.2f} s | training sequences/s: "
            f"{result.sequences_per_second:.2f} | final loss: {result.final_loss:.4f} | "
            f"steps: {result.steps}/{result.total_steps}",
            flush=True,
        )


def report_inference(result: InferenceResult, logger: Logger, name: str = "") -> None:
    """Time, throughput and batch latencies (DLLogger), time and throughput (stdout);
    `name` prefixes the keys and the line (e.g. "dev_matched")."""
    prefix = f"{name}_" if name else ""
    latency = {f"{prefix}latency_{k}": v for k, v in result.latency.items() if k != "count"}
    logger.log(
        (),
        {
            f"{prefix}e2e_inference_time": result.e2e_time,
            f"{prefix}inference_sequences_per_second": result.sequences_per_second,
            f"{prefix}inference_sequences": len(result.outputs),
            **latency,
        },
    )
    print(
        f"{name + ': ' if name else ''}e2e inference time: {result.e2e_time:.2f} s | "
        f"inference sequences/s: {result.sequences_per_second:.2f} | "
        f"{len(result.outputs)} sequences",
        flush=True,
    )


def claim_output_dir(args: argparse.Namespace, outputs: list[str] = ()) -> None:
    """Training into an OUTPUT_DIR that holds another fine-tuning run (its checkpoints,
    log or `outputs` such as predictions) is refused unless resumed (--resume) or started
    over (--overwrite deletes them first). Prediction alone writes beside a model."""
    if not args.do_train:
        return
    out = args.output_dir
    log = args.json_summary or out / "dllogger.json"
    checkpointer = Checkpointer(out / "checkpoints", prefix="finetune")
    found = [log, *(out / name for name in outputs)]
    checkpointer.claim(resume=args.resume, overwrite=args.overwrite, outputs=found, folder=out)


def open_logger(args: argparse.Namespace) -> Logger:
    """The DLLogger file (--json-summary, default OUTPUT_DIR/dllogger.json); rank 0 writes."""
    return Logger(args.json_summary or args.output_dir / "dllogger.json", stdout=False)
