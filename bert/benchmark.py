"""BERT throughput and latency on random inputs, ours and Hugging Face's side by side.

    python -m bert.benchmark --model base --seq-len 128,384 --batch-size 1,2,4,8 \\
        --math fp16,tf32,fp32 --device cuda --task squad --json results/bert_bench.json
    python -m bert.benchmark --device cpu --model base --seq-len 128 --batch-size 1,8 \\
        --math fp32,bf16 --compare-hf
    python -m bert.benchmark --device cpu --mode training --batch-size 8 --compare-hf --mfu
    bert/scripts/inference_benchmark.sh [MODEL] [TASK]      (the seed's whole grid)

Models have random weights (BertConfig.base(), .large(), or `tiny`: hidden 64, 2 layers)
and random inputs with a full attention mask; --task picks the head: squad
(BertForQuestionAnswering), classify (BertForSequenceClassification) or pretrain
(BertForPreTraining, MLM logits for every position). Each combination of sequence length,
batch size and precision is timed --steps times after --warmup untimed calls (CUDA is
synchronised around each): inference is one forward pass in eval mode without autograd;
training is one fine-tuning step, the one run_squad/run_glue take (common.step:
forward, loss, backward, gradient clipping to 1.0, AdamW step, zeroing the gradients).
Precisions asked for by --math that the device cannot run are an error; of the default
list, those are skipped with a note. Results: a table in the layout of NVIDIA's inference tables (sentences/s, latency
average and percentiles in ms), the same rows as JSON (--json, latencies in seconds) and
as DLLogger lines (--log-file).

--compare-hf builds transformers' class for the task from the same configuration
(attn_implementation="sdpa"), copies our weights into it, checks that both give the same
outputs, and times the two in alternation on the same inputs, so that load from other
processes falls on both alike; a second table gives ours/HF. --mfu measures the device's
matmul peak in the precision before each combination (`matmul_peak`; the best seen over
the run counts) and reports model FLOP utilisation: the model's FLOP/s (`model_flops`
over the mean latency) over that peak. On a CPU the setting line says whether the CPU has
bf16 matrix instructions (avx512_bf16, amx_bf16), which bf16 autocast needs to be fast,
and the 1-minute load average at the start and the end: other processes on the same
cores slow every figure, and the comparison table's median-based ratio is the one least
disturbed by them.
"""

from __future__ import annotations

import argparse
import itertools
import os
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from bert.model import (
    BertConfig,
    BertForPreTraining,
    BertForQuestionAnswering,
    BertForSequenceClassification,
    BertForTokenClassification,
)
from common import cli
from common.benchmark import (
    LatencyRecorder,
    device_name,
    log_results,
    markdown_table,
    write_json,
)
from common.distributed import resolve_device
from common.logging import Logger
from common.precision import Precision, PrecisionError, check_supported
from common.step import OptimizerStep

MODELS: dict[str, Callable[[], BertConfig]] = {
    "tiny": lambda: BertConfig(
        hidden_size=64, num_hidden_layers=2, num_attention_heads=2, intermediate_size=256
    ),
    "base": BertConfig.base,
    "large": BertConfig.large,
}
NER_IGNORED = 0.2  # share of positions without a tag: specials, continuation pieces
TASKS = ("squad", "classify", "ner", "pretrain")
MODES = ("inference", "training")
PERCENTILES = ("avg", "p50", "p90", "p95", "p99", "p100")
MLM_FRACTION = 0.15  # of positions that carry a masked-LM label in `pretrain` training


# --- FLOPs -------------------------------------------------------------------------------


def model_flops(
    config: BertConfig, task: str, batch: int, seq_len: int, training: bool, num_labels: int = 2
) -> float:
    """Matmul FLOPs of one forward pass (inference) or one training step.

    A weight matrix of shape [out, in] applied to one token costs 2·in·out FLOPs (a
    multiply and an add per weight). With H hidden size, I intermediate size, L layers,
    V vocabulary, C labels, S sequence length and B batch size, the matmul weights are

        per token:     P_tok = L·(4·H² + 2·H·I)          Q, K, V, attention output, FFN
                             + head: squad 2·H           start and end logits
                                     ner H·C             a tag per token
                                     pretrain H² + H·V   MLM transform and decoder
        per sequence:  P_seq = classify H² + H·C         pooler and classifier on [CLS]
                               pretrain H² + 2·H         pooler and next-sentence head

    and attention adds Q·Kᵀ and probabilities·V, 2·S²·H each per layer and sequence:

        forward  = 2·P_tok·B·S + 2·P_seq·B + 4·S²·H·L·B
        training = 3·forward                             (backward: twice the forward)

    Embedding lookups, biases, LayerNorm, softmax, GELU and the optimizer are not
    counted: they are a few percent of the work and not matrix products.
    """
    h, i, v = config.hidden_size, config.intermediate_size, config.vocab_size
    per_token = config.num_hidden_layers * (4 * h * h + 2 * h * i)
    per_sequence = 0
    if task == "squad":
        per_token += 2 * h
    elif task == "ner":
        per_token += h * num_labels
    elif task == "classify":
        per_sequence += h * h + h * num_labels
    elif task == "pretrain":
        per_token += h * h + h * v
        per_sequence += h * h + 2 * h
    else:
        raise ValueError(f"unknown task {task!r}; choose one of {', '.join(TASKS)}")
    attention = 4 * seq_len**2 * h * config.num_hidden_layers
    forward = batch * (2 * per_token * seq_len + 2 * per_sequence + attention)
    return float(3 * forward if training else forward)


def matmul_peak(
    math: str, device: torch.device, size: int, repeats: int = 10, budget_s: float = 3.0
) -> float:
    """The device's matmul FLOP/s in `math`: the best of `repeats` timed products of two
    random [size, size] matrices (fp16/bf16 operands for fp16/bf16, fp32 otherwise, with
    TensorFloat-32 allowed for tf32: call after `Precision.create(math, ...)`). The best,
    not the mean: on a machine shared with other work, the quietest run is the peak.
    Timing stops early once `budget_s` is spent (bf16 on a CPU without bf16 units runs
    at a few GFLOP/s: one 2048^3 product takes seconds)."""
    dtype = {"fp16": torch.float16, "bf16": torch.bfloat16}.get(math, torch.float32)
    g = torch.Generator(device=device).manual_seed(0)
    a = torch.randn(size, size, device=device, dtype=dtype, generator=g)
    b = torch.randn(size, size, device=device, dtype=dtype, generator=g)
    inner = 10 if device.type == "cuda" else 1  # a GPU product is too short to time alone
    best, deadline = float("inf"), None
    for i in range(repeats + 1):  # the first call is warm-up
        _sync(device)
        start = time.perf_counter()
        for _ in range(inner):
            torch.mm(a, b)
        _sync(device)
        if i == 0:
            deadline = time.perf_counter() + budget_s
            continue
        best = min(best, (time.perf_counter() - start) / inner)
        if time.perf_counter() > deadline:
            break
    return 2 * size**3 / best


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def cpu_bf16_units() -> list[str]:
    """The CPU's bf16 matrix instructions among avx512_bf16 and amx_bf16 (/proc/cpuinfo)."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return []
    flags = next(
        (line.split(":", 1)[1].split() for line in text.splitlines() if line.startswith("flags")),
        [],
    )
    return [flag for flag in ("avx512_bf16", "amx_bf16") if flag in flags]


# --- models, inputs, steps ---------------------------------------------------------------


@dataclass
class Batch:
    """Random inputs [B, S] and the targets of the task's loss."""

    input_ids: torch.Tensor
    token_type_ids: torch.Tensor
    attention_mask: torch.Tensor
    targets: tuple[torch.Tensor, ...]


def random_batch(
    config: BertConfig, task: str, batch: int, seq_len: int, num_labels: int, device: torch.device
) -> Batch:
    """Uniform token ids, a sentence pair split at the middle, every position a token."""
    g = torch.Generator().manual_seed(batch * 1000 + seq_len)
    ids = torch.randint(0, config.vocab_size, (batch, seq_len), generator=g)
    types = (torch.arange(seq_len) >= seq_len // 2).long().expand(batch, -1).contiguous()
    if task == "squad":
        targets = tuple(torch.randint(0, seq_len, (batch,), generator=g) for _ in range(2))
    elif task == "classify":
        targets = (torch.randint(0, num_labels, (batch,), generator=g),)
    elif task == "ner":  # a tag per token; [CLS], [SEP] and later word pieces are ignored
        tags = torch.randint(0, num_labels, (batch, seq_len), generator=g)
        tags[torch.rand(batch, seq_len, generator=g) < NER_IGNORED] = -100
        targets = (tags,)
    else:
        labels = torch.randint(0, config.vocab_size, (batch, seq_len), generator=g)
        labels[torch.rand(batch, seq_len, generator=g) >= MLM_FRACTION] = -100
        targets = (labels, torch.randint(0, 2, (batch,), generator=g))
    return Batch(
        ids.to(device),
        types.to(device),
        torch.ones_like(ids).to(device),
        tuple(t.to(device) for t in targets),
    )


def build_ours(config: BertConfig, task: str, num_labels: int) -> nn.Module:
    if task == "squad":
        return BertForQuestionAnswering(config)
    if task == "classify":
        return BertForSequenceClassification(config, num_labels=num_labels)
    if task == "ner":
        return BertForTokenClassification(config, num_labels=num_labels)
    return BertForPreTraining(config)


def build_hf(config: BertConfig, task: str, num_labels: int, ours: nn.Module) -> nn.Module:
    """transformers' model for `task` with our configuration and a copy of our weights."""
    import transformers

    hf_config = transformers.BertConfig(
        **config.to_dict(), num_labels=num_labels, attn_implementation="sdpa"
    )
    cls = {
        "squad": transformers.BertForQuestionAnswering,
        "classify": transformers.BertForSequenceClassification,
        "ner": transformers.BertForTokenClassification,
        "pretrain": transformers.BertForPreTraining,
    }[task]
    model = cls(hf_config)
    # HF ties cls.predictions.decoder.bias to cls.predictions.bias, which is copied.
    result = model.load_state_dict(ours.state_dict(), strict=False)
    missing = [k for k in result.missing_keys if k != "cls.predictions.decoder.bias"]
    if missing or result.unexpected_keys:
        raise RuntimeError(
            f"weights do not map onto {cls.__name__}: missing {missing}, "
            f"unexpected {result.unexpected_keys}"
        )
    return model


def outputs(impl: str, model: nn.Module, batch: Batch) -> tuple[torch.Tensor, ...]:
    """The task's logits as a tuple, for either implementation."""
    if impl == "ours":
        out = model(batch.input_ids, batch.token_type_ids, batch.attention_mask)
        return out if isinstance(out, tuple) else (out,)
    out = model(
        input_ids=batch.input_ids,
        token_type_ids=batch.token_type_ids,
        attention_mask=batch.attention_mask,
    )
    if "start_logits" in out:
        return out.start_logits, out.end_logits
    if "prediction_logits" in out:
        return out.prediction_logits, out.seq_relationship_logits
    return (out.logits,)


def task_loss(task: str, logits: tuple[torch.Tensor, ...], batch: Batch) -> torch.Tensor:
    """Fine-tuning loss (mean cross-entropies) in fp32."""
    logits = tuple(x.float() for x in logits)
    if task == "squad":
        start, end = logits
        return (
            F.cross_entropy(start, batch.targets[0]) + F.cross_entropy(end, batch.targets[1])
        ) / 2
    if task == "classify":
        return F.cross_entropy(logits[0], batch.targets[0])
    if task == "ner":
        return F.cross_entropy(
            logits[0].flatten(0, 1), batch.targets[0].flatten(), ignore_index=-100
        )
    mlm, nsp = logits
    mlm_loss = F.cross_entropy(mlm.flatten(0, 1), batch.targets[0].flatten(), ignore_index=-100)
    return mlm_loss + F.cross_entropy(nsp, batch.targets[1])


def max_output_difference(task: str, ours: nn.Module, hf: nn.Module, batch: Batch) -> float:
    """Largest absolute difference of the two models' fp32 eval-mode outputs."""
    ours.eval()
    hf.eval()
    with torch.inference_mode():
        a, b = outputs("ours", ours, batch), outputs("hf", hf, batch)
    return max((x.float() - y.float()).abs().max().item() for x, y in zip(a, b, strict=True))


@dataclass
class Runner:
    """One implementation under test: how one timed call runs, and its latencies."""

    impl: str
    call: Callable[[Batch], Any]
    recorder: LatencyRecorder


def make_runner(
    impl: str, model: nn.Module, mode: str, task: str, prec: Precision, warmup: int
) -> Runner:
    device = prec.device
    if mode == "inference":
        model.eval()

        def call(batch: Batch) -> Any:
            with torch.inference_mode(), prec.autocast():
                return outputs(impl, model, batch)

    else:
        model.train()
        optimizer = torch.optim.AdamW(model.parameters(), lr=1e-5)
        step = OptimizerStep(model, optimizer, prec, clip_norm=1.0)  # fine-tuning's step

        def call(batch: Batch) -> Any:
            with prec.autocast():
                loss = task_loss(task, outputs(impl, model, batch), batch)
            step.backward(loss)
            return step.finish().loss

    return Runner(impl, call, LatencyRecorder(warmup=warmup, device=device))


def time_runners(runners: list[Runner], batch: Batch, warmup: int, steps: int) -> None:
    """Call every runner `warmup + steps` times, in turn, each call timed on its own."""
    for _ in range(warmup + steps):
        for runner in runners:
            with runner.recorder.measure():
                runner.call(batch)


def result_row(runner: Runner, setting: dict[str, Any], flops: float) -> dict[str, Any]:
    summary = runner.recorder.summary(items_per_call=setting["batch"])
    return {
        **setting,
        "impl": runner.impl,
        "sequences/s": summary["throughput"],
        **{f"latency_{k}": summary[k] for k in PERCENTILES},
        "model_flops": flops,
        "flop/s": flops / summary["avg"],
    }


# --- reporting ---------------------------------------------------------------------------


def display_row(row: dict[str, Any]) -> dict[str, Any]:
    """A result row in the columns of NVIDIA's inference tables (latencies in ms)."""
    out = {
        "Model": row["model"],
        "Sequence Length": row["seq_len"],
        "Batch Size": row["batch"],
        "Precision": row["math"],
        "Implementation": row["impl"],
        "Throughput-Average(sent/sec)": row["sequences/s"],
        "Latency-Average(ms)": row["latency_avg"] * 1e3,
    }
    for p in PERCENTILES[1:]:
        out[f"Latency-{p[1:]}%(ms)"] = row[f"latency_{p}"] * 1e3
    if "mfu" in row:
        out["GFLOP/s"] = row["flop/s"] / 1e9
        out["MFU(%)"] = row["mfu"] * 100
    return out


def comparison_rows(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """ours / HF throughput for each combination timed with both: from the mean latency
    (as sequences/s) and from the median latency."""
    key_names = ("mode", "model", "seq_len", "batch", "math")
    hf = {tuple(r[k] for k in key_names): r for r in rows if r["impl"] == "hf"}
    out = []
    for row in rows:
        other = hf.get(tuple(row[k] for k in key_names))
        if row["impl"] != "ours" or other is None:
            continue
        out.append(
            {
                "mode": row["mode"],
                "model": row["model"],
                "seq_len": row["seq_len"],
                "batch": row["batch"],
                "math": row["math"],
                "ours sequences/s": row["sequences/s"],
                "hf sequences/s": other["sequences/s"],
                "ours/hf": row["sequences/s"] / other["sequences/s"],
                # Medians shrug off the odd call slowed by other processes.
                "ours/hf p50": other["latency_p50"] / row["latency_p50"],
            }
        )
    return out


# --- command line ------------------------------------------------------------------------


def _ints(text: str) -> list[int]:
    try:
        return [cli.positive_int(v) for v in text.split(",")]
    except argparse.ArgumentTypeError:
        raise argparse.ArgumentTypeError(
            f"must be comma-separated positive integers, got {text!r}"
        ) from None


def _choices(allowed: tuple[str, ...]) -> Callable[[str], list[str]]:
    def parse(text: str) -> list[str]:
        values = text.split(",")
        unknown = [v for v in values if v not in allowed]
        if unknown:
            raise argparse.ArgumentTypeError(f"unknown {unknown}; choose from {', '.join(allowed)}")
        return values

    return parse


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = cli.ArgumentParser(prog="python -m bert.benchmark", description=__doc__.splitlines()[0])
    p.add_argument(
        "--model", choices=sorted(MODELS), default="base", help="tiny: hidden 64, 2 layers"
    )
    p.add_argument("--task", choices=TASKS, default="squad", help="which head")
    p.add_argument(
        "--mode", type=_choices(MODES), default=["inference"], help="inference and/or training"
    )
    p.add_argument("--seq-len", type=_ints, default=[128, 384], help="comma-separated")
    p.add_argument("--batch-size", type=_ints, default=[1, 2, 4, 8], help="comma-separated")
    p.add_argument(
        "--math",
        type=_choices(("fp32", "tf32", "fp16", "bf16")),
        default=None,
        help="comma-separated precisions; unset: fp32,tf32,fp16,bf16 on a GPU, fp32,bf16 on "
        "the CPU. Those the device cannot run are skipped with a note",
    )
    p.add_argument(
        "--device", type=cli.device_arg, default=None, help="when not given: cuda if any"
    )
    p.add_argument(
        "--steps",
        type=cli.positive_int,
        default=None,
        help="timed calls; unset: 1024 on a GPU, 20 on the CPU",
    )
    p.add_argument(
        "--warmup",
        type=cli.nonnegative_int,
        default=None,
        help="untimed calls; unset: 20 on a GPU, 3 on the CPU",
    )
    p.add_argument(
        "--num-labels",
        type=cli.positive_int,
        default=2,
        help="classes of --task classify, tags of --task ner",
    )
    p.add_argument("--compile", action="store_true", help="torch.compile the model(s)")
    p.add_argument(
        "--compare-hf", action="store_true", help="also time transformers' BERT (same weights)"
    )
    p.add_argument("--mfu", action="store_true", help="report model FLOP utilisation")
    p.add_argument(
        "--peak-size",
        type=cli.positive_int,
        default=None,
        help="matmul size for --mfu; unset: 8192 on a GPU, 2048 on the CPU",
    )
    p.add_argument(
        "--threads", type=cli.positive_int, default=None, help="CPU threads; unset: torch's choice"
    )
    p.add_argument("--seed", type=cli.nonnegative_int, default=0, help="for the random weights")
    p.add_argument("--json", type=Path, default=None, help="write all results here")
    p.add_argument("--log-file", type=Path, default=None, help="DLLogger lines")
    args = p.parse_args(argv)
    check_flags(p, args)
    args.device = str(resolve_device(args.device))
    gpu = args.device.startswith("cuda")
    args.math = args.math or (["fp32", "tf32", "fp16", "bf16"] if gpu else ["fp32", "bf16"])
    args.steps = args.steps if args.steps is not None else (1024 if gpu else 20)
    args.warmup = args.warmup if args.warmup is not None else (20 if gpu else 3)
    args.peak_size = args.peak_size or (8192 if gpu else 2048)
    return args


def check_flags(p: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """Precisions the device cannot run and sequences longer than the model's positions,
    refused before any model is built."""
    problem = None
    if args.math:  # asked for by name: each one must run here
        try:
            cli.device_for_precisions(args.device, args.math)
        except PrecisionError as exc:
            problem = str(exc)
    longest = MODELS[args.model]().max_position_embeddings
    cli.check_args(
        p,
        problem,
        f"--seq-len {max(args.seq_len)} exceeds the model's maximum of {longest}"
        if max(args.seq_len) > longest
        else None,
    )


def runnable_precisions(maths: list[str], device: torch.device) -> tuple[list[str], list[dict]]:
    """(precisions the device runs, [{"math", "reason"} for those it cannot])."""
    ok, skipped = [], []
    for math in maths:
        try:
            check_supported(math, device)
        except PrecisionError as err:
            skipped.append({"math": math, "reason": str(err)})
            continue
        ok.append(math)
    return ok, skipped


def describe(args: argparse.Namespace, device: torch.device) -> dict[str, Any]:
    """The setting line: device, software, model and what the CPU offers for bf16."""
    setting: dict[str, Any] = {
        "device": device_name(device),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "model": args.model,
        "task": args.task,
        "steps": args.steps,
        "warmup": args.warmup,
        "load": round(os.getloadavg()[0], 2),  # 1-minute load average: other work running
    }
    if device.type == "cpu":
        setting["cpu_bf16"] = ",".join(cpu_bf16_units()) or "none"
        setting["mkldnn"] = torch.backends.mkldnn.is_available()
    return setting


def run_grid(
    args: argparse.Namespace,
    config: BertConfig,
    models: dict[str, nn.Module],
    maths: list[str],
    peaks: dict[str, float],
) -> list[dict[str, Any]]:
    """Time every mode x sequence length x batch size x precision; one row per model each.
    With --mfu, `peaks` keeps the best matmul FLOP/s measured before each combination."""
    device = next(models["ours"].parameters()).device
    rows = []
    for mode, seq_len, batch_size in itertools.product(args.mode, args.seq_len, args.batch_size):
        batch = random_batch(config, args.task, batch_size, seq_len, args.num_labels, device)
        training = mode == "training"
        flops = model_flops(config, args.task, batch_size, seq_len, training, args.num_labels)
        for math in maths:
            prec = Precision.create(math, device)  # also its matmul settings (tf32)
            if args.mfu:
                peak = matmul_peak(math, device, args.peak_size)
                peaks[math] = max(peaks.get(math, 0.0), peak)
            runners = [
                make_runner(impl, model, mode, args.task, prec, args.warmup)
                for impl, model in models.items()
            ]
            time_runners(runners, batch, args.warmup, args.steps)
            combo = {
                "mode": mode,
                "model": args.model,
                "task": args.task,
                "seq_len": seq_len,
                "batch": batch_size,
                "math": math,
            }
            for runner in runners:
                rows.append(result_row(runner, combo, flops))
                print(
                    f"{mode} {runner.impl} seq {seq_len} batch {batch_size} {math}: "
                    f"{rows[-1]['sequences/s']:.2f} sequences/s",
                    flush=True,
                )
            del runners  # free the optimizer states before the next combination makes new ones
    return rows


def print_tables(rows: list[dict[str, Any]], task: str) -> list[dict[str, Any]]:
    """The result tables, per mode, and the ours/HF comparison (returned)."""
    for mode in MODES:
        mode_rows = [display_row(r) for r in rows if r["mode"] == mode]
        if mode_rows:
            what = "one forward pass" if mode == "inference" else "one fine-tuning step"
            print(f"\n{mode.capitalize()} ({task}; latency of {what}):")
            print(markdown_table(mode_rows))
    comparison = comparison_rows(rows)
    if comparison:
        print("Ours vs Hugging Face transformers (same weights, same inputs, timed in turn):")
        print(markdown_table(comparison))
    return comparison


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    config = MODELS[args.model]()
    maths, skipped = runnable_precisions(args.math, device)
    for skip in skipped:
        print(f"note: skipping {skip['math']} on {device.type}: {skip['reason']}", flush=True)
    setting = describe(args, device)
    if args.compare_hf:
        try:
            import transformers
        except ImportError:
            print(
                "error: --compare-hf needs transformers (pip install transformers)", file=sys.stderr
            )
            return 1
        setting["transformers"] = transformers.__version__
    print(" | ".join(f"{k} {v}" for k, v in setting.items()), flush=True)
    torch.manual_seed(args.seed)
    models = {"ours": build_ours(config, args.task, args.num_labels).to(device)}
    if args.compare_hf:
        models["hf"] = build_hf(config, args.task, args.num_labels, models["ours"]).to(device)
        probe = random_batch(config, args.task, 1, min(args.seq_len), args.num_labels, device)
        diff = max_output_difference(args.task, models["ours"], models["hf"], probe)
        setting["max_abs_output_difference"] = diff
        print(f"same weights: largest |ours - hf| over the fp32 outputs: {diff:.3g}", flush=True)
    if args.compile:
        models = {impl: torch.compile(model) for impl, model in models.items()}

    peaks: dict[str, float] = {}
    rows = run_grid(args, config, models, maths, peaks)
    for math, peak in peaks.items():
        print(f"matmul peak {math}: {peak / 1e9:.1f} GFLOP/s ({args.peak_size}^3, best seen)")
    with Logger(args.log_file, stdout=False) as logger:
        for row in rows:
            if row["math"] in peaks:
                row["mfu"] = row["flop/s"] / peaks[row["math"]]
            step = (row["mode"], row["impl"], row["math"], row["seq_len"], row["batch"])
            log_results(logger, row, step=step)
    setting["load_at_end"] = round(os.getloadavg()[0], 2)
    print(
        f"1-minute load average: {setting['load']} at the start, {setting['load_at_end']} at the end"
    )
    comparison = print_tables(rows, args.task)
    if args.json:
        results = {"setting": setting, "peak_flop/s": peaks, "rows": rows}
        results.update({"comparison": comparison, "skipped": skipped})
        write_json(args.json, results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
