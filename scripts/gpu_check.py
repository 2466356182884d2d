"""The prepared GPU check (`make gpu-check`): every GPU path of the recipes, in one timed run.

    python -m scripts.gpu_check                         # on a machine with an NVIDIA GPU
    python -m scripts.gpu_check --out-dir $OUT          # the report where you want it
    python -m scripts.gpu_check --from-json REPORT.json --docs docs/PERFORMANCE.md
    python -m scripts.gpu_check --smoke                 # the same plan, tiny, on the CPU

Parts, each with its own time budget inside --budget-s (a part that would not fit is
reported as skipped, one that runs over is stopped and reported):

- tests: every `gpu`-marked test;
- train: each recipe (GNMT, Transformer-XL, BERT pre-training) trained briefly at a small
  size in fp16, bf16 and tf32 from generated data: the loss must fall and fp16 loss
  scaling may skip only a few steps; then a run stopped half-way and resumed must end
  with the straight run's weights;
- compile: the torch.compile paths (BERT pre-training, Transformer-XL evaluation);
- bench: throughput at the published sizes (GNMT 4x1024, Transformer-XL base and large,
  BERT-large phase 1 at sequence 128 and phase 2 at 512, SQuAD fine-tuning and
  inference, model FLOP utilisation), and the LAMB step (apex's kernel when installed).

The report (report.md and report.json in --out-dir) names the device, driver, CUDA,
cuDNN, torch and apex, and gives every figure with the command that produced it and,
where the project has one, its target. --docs puts the markdown into a file as the
device's section (see scripts.benchmark.update_docs). Without a GPU it says so in one
line and exits 1; --smoke runs the plan at toy sizes on the CPU, to check the plan itself.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

from common import cli
from common.atomic import atomic_write
from common.benchmark import device_name, markdown_table, write_json
from common.checkpoint import read_checkpoint
from common.logging import read_dllogger
from scripts.benchmark import update_docs

ROOT = Path(__file__).resolve().parent.parent
GROUPS = ("tests", "train", "compile", "bench")


class CheckFailed(Exception):
    """A part ran but its result is wrong (loss did not fall, resume differs, ...)."""


@dataclass
class Scale:
    """Sizes and precisions of one plan: the recipes' on a GPU, toy ones with --smoke."""

    device: str
    train_precisions: list[str]
    resume_precision: str
    train_steps: int
    bench: dict[str, list[str]]  # extra arguments per benchmark part
    max_skipped: int = 3  # fp16 steps skipped by loss scaling in a short run
    resume_tolerance: float = 1e-3  # max |w_resumed - w_straight| (GPU kernels may race)


GPU_BENCH = {
    "gnmt": ["--math", "fp16,bf16", "--batch-size", "256", "--warmup", "5", "--steps", "30",
             "--infer-batch-size", "128", "--beam-size", "5", "--infer-batches", "5",
             "--decode-len", "30"],
    "txl_base": ["--model", "base", "--math", "fp16,bf16", "--batch_size", "32", "--tgt_len",
                 "192", "--mem_len", "192", "--warmup", "5", "--steps", "30"],
    "txl_large": ["--model", "large", "--math", "fp16,bf16", "--batch_size", "16",
                  "--tgt_len", "384", "--mem_len", "384", "--warmup", "5", "--steps", "20"],
    "phase1": ["--bert_model", "large", "--train_batch_size", "256", "--max_steps", "25",
               "--benchmark_warmup_steps", "5", "--precision", "fp16"],
    "phase2": ["--bert_model", "large", "--train_batch_size", "32", "--max_steps", "25",
               "--benchmark_warmup_steps", "5", "--precision", "fp16"],
    "mfu": ["--model", "large", "--task", "pretrain", "--mode", "training", "--seq-len", "128",
            "--batch-size", "64", "--math", "fp16,bf16", "--mfu", "--steps", "20",
            "--warmup", "5"],
    "squad_train": ["--model", "large", "--task", "squad", "--mode", "training", "--seq-len",
                    "384", "--batch-size", "32", "--math", "fp16,bf16", "--steps", "20",
                    "--warmup", "5"],
    "squad_infer": ["--model", "large", "--task", "squad", "--mode", "inference",
                    "--seq-len", "384", "--batch-size", "1,8,64", "--math", "fp16,bf16",
                    "--steps", "50", "--warmup", "10"],
    "ner_train": ["--model", "base", "--task", "ner", "--num-labels", "3", "--mode",
                  "training", "--seq-len", "128", "--batch-size", "32", "--math", "fp16,bf16",
                  "--steps", "20", "--warmup", "5"],
    "optim": ["--config", "large", "--steps", "10"],
}  # fmt: skip

SMOKE_BENCH = {
    "gnmt": ["--math", "fp32,bf16", "--vocab-size", "64", "--hidden-size", "16",
             "--batch-size", "4", "--warmup", "1", "--steps", "2", "--infer-batch-size", "2",
             "--beam-size", "2", "--infer-batches", "1", "--decode-len", "4"],
    "txl_base": ["--model", "small", "--vocab_size", "200", "--math", "fp32", "--batch_size",
                 "2", "--tgt_len", "8", "--mem_len", "8", "--warmup", "1", "--steps", "2"],
    "txl_large": ["--model", "small", "--vocab_size", "200", "--math", "bf16", "--batch_size",
                  "2", "--tgt_len", "8", "--mem_len", "8", "--warmup", "1", "--steps", "2"],
    "phase1": ["--config_file", str(ROOT / "bert/configs/bert_tiny_config.json"),
               "--train_batch_size", "4", "--max_steps", "3", "--benchmark_warmup_steps", "1",
               "--precision", "bf16"],
    "phase2": ["--config_file", str(ROOT / "bert/configs/bert_tiny_config.json"),
               "--train_batch_size", "2", "--max_steps", "3", "--benchmark_warmup_steps", "1",
               "--precision", "bf16"],
    "mfu": ["--model", "tiny", "--task", "pretrain", "--mode", "training", "--seq-len", "16",
            "--batch-size", "2", "--math", "fp32", "--mfu", "--peak-size", "64", "--steps",
            "2", "--warmup", "1"],
    "squad_train": ["--model", "tiny", "--task", "squad", "--mode", "training", "--seq-len",
                    "16", "--batch-size", "2", "--math", "bf16", "--steps", "2", "--warmup",
                    "1"],
    "squad_infer": ["--model", "tiny", "--task", "squad", "--mode", "inference", "--seq-len",
                    "16", "--batch-size", "1,2", "--math", "fp32", "--steps", "2", "--warmup",
                    "1"],
    "ner_train": ["--model", "tiny", "--task", "ner", "--num-labels", "3", "--mode",
                  "training", "--seq-len", "16", "--batch-size", "2", "--math", "fp32",
                  "--steps", "2", "--warmup", "1"],
    "optim": ["--config", "base", "--steps", "1", "--warmup", "1"],
}  # fmt: skip

# The project's targets on one H100/H200 (docs/PERFORMANCE.md): (figure, lower bound).
TARGETS = {
    "gnmt": ("train fp16 tokens/s", 280_000),
    "txl_base": ("train fp16 tokens/s", 120_000),
    "phase1": ("sequences/s", 1_500),
    "phase2": ("sequences/s", 500),
    "squad_train": ("training fp16 sequences/s", 250),
    "mfu": ("training fp16 mfu", 0.50),
}

# Phase sequence lengths and masked positions, as in bert/configs/pretraining.yaml.
PHASES = {"phase1": (128, 20), "phase2": (512, 80)}


def phase_shape(phase: str, scale: Scale) -> tuple[int, int]:
    """(sequence length, masked positions) of a phase's benchmark at this scale."""
    return PHASES[phase] if scale.device == "cuda" else (32, 5)


def scale_for(smoke: bool) -> Scale:
    if smoke:
        return Scale("cpu", ["fp32", "bf16"], "bf16", 12, SMOKE_BENCH)
    return Scale("cuda", ["fp16", "bf16", "tf32"], "fp16", 20, GPU_BENCH)


# --- running parts ---------------------------------------------------------------------


@dataclass
class PartResult:
    group: str
    name: str
    status: str = "skipped"  # pass, fail, timeout or skipped
    seconds: float = 0.0
    figures: dict[str, Any] = field(default_factory=dict)
    commands: list[str] = field(default_factory=list)
    detail: str = ""


class Context:
    """What a part needs: the plan's scale, its work folder, and a timed command runner."""

    def __init__(self, scale: Scale, work_dir: Path) -> None:
        self.scale, self.work = scale, work_dir
        self.deadline = float("inf")
        self.result = PartResult("", "")

    def run(self, args: list[str]) -> subprocess.CompletedProcess:
        """`python ARGS` from the repository root, within the part's budget; its output
        goes to a log file in the work folder. A non-zero exit is a failed check."""
        shown = " ".join(str(a) for a in args)
        self.result.commands.append(f"python {shown}")
        left = self.deadline - time.monotonic()
        if left <= 0:
            raise subprocess.TimeoutExpired(shown, 0)
        env = {**os.environ, "PYTHONPATH": str(ROOT), "PYTHONUNBUFFERED": "1"}
        proc = subprocess.run(
            [sys.executable, *map(str, args)],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=left,
        )
        log = self.work / "logs" / f"{self.result.group}_{self.result.name}.log"
        log.parent.mkdir(parents=True, exist_ok=True)
        with log.open("a", encoding="utf-8") as f:
            f.write(f"$ python {shown}\n{proc.stdout}\n{proc.stderr}\n")
        if proc.returncode != 0:
            tail = (proc.stderr or proc.stdout).strip().splitlines()[-3:]
            raise CheckFailed(f"exit {proc.returncode}: {' | '.join(tail)}")
        return proc


@dataclass
class Part:
    group: str
    name: str
    budget_s: float
    fn: Callable[[Context], dict[str, Any]]


def run_parts(parts: list[Part], ctx: Context, budget_s: float) -> list[PartResult]:
    """Run `parts` in order. Each gets its own budget (an upper bound: most parts take
    well under it), cut to what is left of `budget_s`; a part is skipped when less than
    a third of its budget is left, and stopped when it runs over."""
    end = time.monotonic() + budget_s
    results = []
    for part in parts:
        ctx.result = result = PartResult(part.group, part.name)
        results.append(result)
        left = end - time.monotonic()
        if left < part.budget_s / 3:
            result.detail = (
                f"not run: {left:.0f} s of the budget left, the part needs up to "
                f"{part.budget_s:.0f} s"
            )
            print(f"[skip] {part.group}/{part.name}: {result.detail}", flush=True)
            continue
        start = time.monotonic()
        allowed = min(part.budget_s, left)
        ctx.deadline = start + allowed
        try:
            result.figures = part.fn(ctx)
            result.status = "pass"
        except subprocess.TimeoutExpired:
            result.status, result.detail = "timeout", f"stopped at its {allowed:.0f} s budget"
        except CheckFailed as exc:
            result.status, result.detail = "fail", str(exc)
        except Exception as exc:  # a broken part must not stop the others or lose the report
            result.status, result.detail = "fail", f"{type(exc).__name__}: {exc}"
        result.seconds = time.monotonic() - start
        print(f"[{result.status}] {part.group}/{part.name} {result.seconds:.0f} s "
              f"{result.figures or ''} {result.detail}", flush=True)  # fmt: skip
    return results


# --- the parts ----------------------------------------------------------------------------


def gpu_tests(ctx: Context) -> dict[str, Any]:
    proc = ctx.run(["-m", "pytest", "-m", "gpu", "-q", "-p", "no:cacheprovider", "tests"])
    return {"pytest": proc.stdout.strip().splitlines()[-1]}


def prepare_data(work: Path, scale: Scale) -> dict[str, Path]:
    """Generated training data for every recipe and shards for the BERT benchmarks."""
    from bert.pretraining_data import synthetic_shards, synthetic_vocab
    from gnmt import prepare_data as gnmt_prepare
    from gnmt import toy_data as gnmt_toy
    from transformer_xl import toy_data as txl_toy

    data = work / "data"
    paths = {"gnmt": data / "gnmt", "txl": data / "txl", "bert": data / "bert"}
    if not (paths["gnmt"] / "vocab.bpe.100").exists():
        gnmt_toy.generate(data / "gnmt_raw", train=400, dev=8, test=8, seed=5)
        raw = data / "gnmt_raw"
        gnmt_prepare.prepare(raw / "train", [raw / "dev"], raw / "test", paths["gnmt"], merges=100)
        txl_toy.generate(paths["txl"], articles=60, seed=6)
        synthetic_shards(paths["bert"] / "shards", num_shards=2, samples_per_shard=256,
                         seq_length=32, max_predictions=5, vocab_size=64)  # fmt: skip
        (paths["bert"] / "vocab.txt").write_text("\n".join(synthetic_vocab(64)) + "\n")
        tiny = {"vocab_size": 64, "hidden_size": 64, "num_hidden_layers": 2,
                "num_attention_heads": 2, "intermediate_size": 128,
                "max_position_embeddings": 64}  # fmt: skip
        (paths["bert"] / "tiny.json").write_text(json.dumps(tiny))
    for phase in PHASES:
        bench = scale.bench[phase]
        batch = int(bench[bench.index("--train_batch_size") + 1])
        steps = int(bench[bench.index("--max_steps") + 1])
        folder = data / phase
        if not folder.exists():
            seq, preds = phase_shape(phase, scale)
            synthetic_shards(folder, num_shards=1, samples_per_shard=batch * (steps + 1),
                             seq_length=seq, max_predictions=preds,
                             vocab_size=30522 if scale.device == "cuda" else 64)  # fmt: skip
        paths[phase] = folder
    return paths


def recipe_command(recipe: str, data: dict[str, Path], out: Path, math: str, steps: int,
                   device: str, resume: bool = False) -> list[str]:  # fmt: skip
    """A short training run of `recipe` at a small size, logging every step."""
    if recipe == "gnmt":
        d = data["gnmt"]
        args = ["-m", "gnmt.train", "--dataset-dir", d, "--vocab", "vocab.bpe.100",
                "--bpe-codes", "bpe.100", "--train-src", "train.tok.clean.bpe.100.en",
                "--train-tgt", "train.tok.clean.bpe.100.de", "--save-dir", out, "--math", math,
                "--hidden-size", "64", "--train-batch-size", "16", "--warmup-steps", "5",
                "--no-eval", "--save-freq", steps, "--max-steps", steps, "--epochs", "100",
                "--print-freq", "1", "--device", device]  # fmt: skip
        return [*args, "--resume"] if resume else args
    if recipe == "transformer_xl":
        args = ["-m", "transformer_xl.train", "--config_file", "", "--data", data["txl"],
                "--work_dir", out, "--precision", math, "--n_layer", "2", "--d_model", "64",
                "--n_head", "2", "--d_head", "32", "--d_inner", "128", "--dropout", "0.1",
                "--tgt_len", "32", "--mem_len", "32", "--batch_size", "8", "--optim", "lamb",
                "--lr", "0.01", "--warmup_step", "5", "--max_step_scheduler", "400",
                "--no_eval", "--save_interval", steps, "--max_step", steps, "--log_interval",
                "1", "--device", device]  # fmt: skip
        return [*args, "--resume"] if resume else args
    d = data["bert"]
    args = ["-m", "bert.run_pretraining", "--input_dir", d / "shards", "--output_dir", out,
            "--config_file", d / "tiny.json", "--vocab_file", d / "vocab.txt",
            "--max_seq_length", "32", "--max_predictions_per_seq", "5", "--train_batch_size",
            "16", "--gradient_accumulation_steps", "1", "--learning_rate", "0.02",
            "--warmup_proportion", "0.1", "--max_steps", steps, "--decay_steps", "400",
            "--log_freq", "1", "--num_steps_per_checkpoint", steps, "--device", device,
            "--precision", math, "--disable_progress_bar", "--setup_file", ""]  # fmt: skip
    return [*args, "--resume_from_checkpoint"] if resume else args


RECIPE_OUTPUTS = {  # (DLLogger file, last checkpoint) in a run's output folder
    "gnmt": ("log.json", "model_last.pth"),
    "transformer_xl": ("train_log.json", "checkpoint_last.pt"),
    "bert": ("dllogger.json", "ckpt_last.pt"),
}


def logged_losses(path: Path) -> tuple[list[float], int]:
    """The training losses of a DLLogger file (the common `loss` of every recipe's log
    lines, common.metrics) and the last skipped-step count."""
    losses, skipped = [], 0
    for record in read_dllogger(path):
        data = record["data"]
        if "loss" in data and isinstance(record["step"], list) and record["step"]:
            losses.append(float(data["loss"]))
            skipped = int(data.get("skipped_steps", skipped))
    return losses, skipped


def max_weight_difference(a: Path, b: Path) -> float:
    wa, wb = read_checkpoint(a)["model"], read_checkpoint(b)["model"]
    if wa.keys() != wb.keys():
        raise CheckFailed(f"{a} and {b} hold different parameters")
    return max((wa[k].float() - wb[k].float()).abs().max().item() for k in wa)


def train_part(recipe: str) -> Callable[[Context], dict[str, Any]]:
    def run(ctx: Context) -> dict[str, Any]:
        scale, data = ctx.scale, prepare_data(ctx.work, ctx.scale)
        log_name, last = RECIPE_OUTPUTS[recipe]
        steps, figures = scale.train_steps, {}
        for math in scale.train_precisions:
            out = ctx.work / f"train_{recipe}_{math}"
            ctx.run(recipe_command(recipe, data, out, math, steps, scale.device))
            losses, skipped = logged_losses(out / log_name)
            if len(losses) < 4:
                raise CheckFailed(f"{math}: {len(losses)} losses logged, expected {steps}")
            first, final = sum(losses[:3]) / 3, sum(losses[-3:]) / 3
            figures[f"{math} loss"] = f"{first:.3f} -> {final:.3f}"
            if math == "fp16":
                figures["fp16 skipped steps"] = skipped
            if not final < first:
                raise CheckFailed(f"{math}: the loss did not fall ({first:.3f} -> {final:.3f})")
            if skipped > scale.max_skipped:
                raise CheckFailed(f"{math}: loss scaling skipped {skipped} of {steps} steps")
        math = scale.resume_precision
        resumed = ctx.work / f"resume_{recipe}_{math}"
        ctx.run(recipe_command(recipe, data, resumed, math, steps // 2, scale.device))
        ctx.run(recipe_command(recipe, data, resumed, math, steps, scale.device, resume=True))
        diff = max_weight_difference(ctx.work / f"train_{recipe}_{math}" / last, resumed / last)
        figures[f"resume {math} max |dw|"] = diff
        if diff > scale.resume_tolerance:
            raise CheckFailed(f"resumed {math} run ends {diff:.2e} away from the straight run")
        return figures

    return run


def compile_bert(ctx: Context) -> dict[str, Any]:
    data = prepare_data(ctx.work, ctx.scale)
    out = ctx.work / "compile_bert"
    args = recipe_command("bert", data, out, "bf16", ctx.scale.train_steps, ctx.scale.device)
    ctx.run([*args, "--compile"])
    losses, _ = logged_losses(out / RECIPE_OUTPUTS["bert"][0])
    if not losses or not sum(losses[-3:]) < sum(losses[:3]):
        raise CheckFailed(f"compiled BERT: the loss did not fall ({losses[:3]} ... {losses[-3:]})")
    return {"bf16 loss": f"{losses[0]:.3f} -> {losses[-1]:.3f}"}


def compile_txl_eval(ctx: Context) -> dict[str, Any]:
    """The compiled evaluation of the Transformer-XL trained in the `train` part must
    score the validation split as the eager one does."""
    data = prepare_data(ctx.work, ctx.scale)
    model_dir = ctx.work / f"train_transformer_xl_{ctx.scale.resume_precision}"
    model = model_dir / RECIPE_OUTPUTS["transformer_xl"][1]
    if not model.exists():
        raise CheckFailed(f"{model} is missing: the train part of transformer_xl did not run")
    losses = {}
    for kind in ("pytorch", "compile"):
        work = ctx.work / f"eval_{kind}"
        ctx.run(["-m", "transformer_xl.eval", "--config_file", "", "--data", data["txl"],
                 "--model", model, "--work_dir", work, "--split", "valid", "--type", kind,
                 "--tgt_len", "32", "--mem_len", "32", "--batch_size", "8", "--device",
                 ctx.scale.device])  # fmt: skip
        records = read_dllogger(work / "eval_log.json")
        losses[kind] = [r["data"]["loss"] for r in records if r["step"] == ["valid"]][-1]
    if not abs(losses["compile"] - losses["pytorch"]) <= 1e-3 * abs(losses["pytorch"]):  # nan
        raise CheckFailed(f"compiled loss {losses['compile']} vs eager {losses['pytorch']}")
    return {f"valid loss {k}": round(v, 5) for k, v in losses.items()}


def flatten(rows: list[dict[str, Any]], keys: tuple[str, ...], value: str) -> dict[str, Any]:
    """{"<row[keys]...> <value>": row[value]} for each row of a benchmark table."""
    return {" ".join(str(r[k]) for k in keys) + f" {value}": r[value] for r in rows if value in r}


def bench_part(name: str) -> Callable[[Context], dict[str, Any]]:
    def run(ctx: Context) -> dict[str, Any]:
        extra = ctx.scale.bench[name]
        out = ctx.work / f"bench_{name}.json"
        device = ["--device", ctx.scale.device]
        if name == "gnmt":
            ctx.run(["-m", "gnmt.benchmark", *device, *extra, "--json", out])
            result = json.loads(out.read_text())
            return {
                **{f"train {r['math']} tokens/s": r["tokens/s"] for r in result["train"]},
                **flatten(result["infer"], ("math", "batch", "beam"), "sentences/s"),
            }
        if name.startswith("txl"):
            ctx.run(["-m", "transformer_xl.benchmark", *device, "--mode", "train", *extra,
                     "--json", out])  # fmt: skip
            result = json.loads(out.read_text())
            return {f"train {r['math']} tokens/s": r["tokens/s"] for r in result["train"]}
        if name in PHASES:
            seq, preds = phase_shape(name, ctx.scale)
            data = prepare_data(ctx.work, ctx.scale)
            folder = ctx.work / f"bench_{name}"
            ctx.run(["-m", "bert.run_pretraining", "--benchmark", "--input_dir", data[name],
                     "--output_dir", folder, "--max_seq_length", seq, "--max_predictions_per_seq",
                     preds, "--gradient_accumulation_steps", "1", "--setup_file", "",
                     "--disable_progress_bar", *device, *extra])  # fmt: skip
            result = json.loads((folder / "benchmark.json").read_text())
            return {"sequences/s": result["sequences/s"], "step p50 s": result["step_p50"]}
        if name == "optim":
            ctx.run(["-m", "scripts.bench_optim", *device, *extra, "--json", out])
            result = json.loads(out.read_text())
            return {f"{r['optimizer']} step ms": r["avg"] for r in result["ms_per_step"]}
        ctx.run(["-m", "bert.benchmark", *device, *extra, "--json", out])
        rows = json.loads(out.read_text())["rows"]
        figures = {}
        for r in rows:
            label = f"{r['mode']} {r['math']}"
            if r["mode"] == "inference":
                label += f" batch {r['batch']}"
            figures[f"{label} sequences/s"] = r["sequences/s"]
            if "mfu" in r:
                figures[f"{label} mfu"] = r["mfu"]
        return figures

    return run


def plan(scale: Scale) -> list[Part]:
    """The parts in order of value, so that a tight budget cuts the least useful last.

    On a CPU without AVX-512 (or made to behave like one with ATEN_CPU_CAPABILITY=avx2)
    --smoke leaves the compile parts out: PyTorch's CPU compiler gave wrong results
    there (NaN for Transformer-XL's evaluation, which eval.py now refuses) and crashed
    on BERT in bf16. On a GPU they always run."""
    gpu = scale.device == "cuda"
    b = 1.0 if gpu else 2.0  # the CPU is slower per step but the smoke sizes are tiny
    parts = [Part("tests", "gpu-marked tests", 90, gpu_tests)] if gpu else []
    parts += [Part("train", r, 60 * b, train_part(r)) for r in ("gnmt", "transformer_xl", "bert")]
    parts += [
        Part("bench", "gnmt", 50, bench_part("gnmt")),
        Part("bench", "txl_base", 35, bench_part("txl_base")),
        Part("bench", "phase1", 35, bench_part("phase1")),
        Part("bench", "phase2", 35, bench_part("phase2")),
        Part("bench", "squad_train", 30, bench_part("squad_train")),
        Part("bench", "mfu", 30, bench_part("mfu")),
        Part("bench", "squad_infer", 30, bench_part("squad_infer")),
        *(
            [
                Part("compile", "bert", 120 * b, compile_bert),
                Part("compile", "txl_eval", 90 * b, compile_txl_eval),
            ]
            if gpu or torch.backends.cpu.get_cpu_capability() == "AVX512"
            else []
        ),  # fmt: skip
        Part("bench", "txl_large", 35, bench_part("txl_large")),
        Part("bench", "ner_train", 25, bench_part("ner_train")),
        Part("bench", "optim", 25, bench_part("optim")),
    ]
    return parts


# --- the report ---------------------------------------------------------------------------


def environment(device: str) -> dict[str, str]:
    info = {
        "device": device_name(torch.device(device)),
        "date": datetime.date.today().isoformat(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "cuda": str(torch.version.cuda),
        "cudnn": str(torch.backends.cudnn.version()) if torch.cuda.is_available() else "none",
        "driver": nvidia_driver(),
    }
    try:
        import apex  # noqa: F401

        info["apex"] = "installed"
    except ImportError:
        info["apex"] = "not installed"
    return info


def nvidia_driver() -> str:
    try:
        out = subprocess.run(
            ["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
            capture_output=True, text=True, timeout=30, check=True,
        ).stdout  # fmt: skip
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return out.strip().splitlines()[0] if out.strip() else "unknown"


def with_targets(results: list[PartResult]) -> list[dict[str, Any]]:
    """Each target with the figure measured for it (None when its part did not run)."""
    rows = []
    by_name = {r.name: r for r in results}
    for part, (figure, bound) in TARGETS.items():
        value = by_name[part].figures.get(figure) if part in by_name else None
        met = None if value is None else value >= bound
        rows.append({"part": part, "figure": figure, "target": f">= {bound:g}", "measured": value,
                     "met": {True: "yes", False: "no", None: "not measured"}[met]})  # fmt: skip
    return rows


def render(report: dict[str, Any]) -> str:
    env, results = report["environment"], [PartResult(**r) for r in report["parts"]]
    lines = [
        f"## GPU check: {env['device']}",
        "",
        f"`{report['command']}` on {env['date']}, {report['seconds']:.0f} s of a "
        f"{report['budget_s']:.0f} s budget: "
        + ", ".join(f"{k} {v}" for k, v in env.items() if k not in ("device", "date"))
        + ".",
        "",
        markdown_table(
            [
                {
                    "group": r.group,
                    "part": r.name,
                    "status": r.status,
                    "seconds": round(r.seconds, 1),
                    "detail": r.detail,
                }
                for r in results
            ]
        ),  # fmt: skip
    ]
    if report["targets"]:
        lines += ["Targets on one GPU:", "", markdown_table(report["targets"])]
    for r in results:
        if not r.figures and not r.commands:
            continue
        lines += ["", f"### {r.group}/{r.name} ({r.status})", ""]
        lines += [f"- `{c}`" for c in r.commands]
        if r.figures:
            lines += ["", markdown_table([{"figure": k, "value": v} for k, v in r.figures.items()])]
    return "\n".join(lines) + "\n"


def collect_logs(logs: Path, out: Path) -> None:
    """Every command's output, part by part, in one file next to the report."""
    out.parent.mkdir(parents=True, exist_ok=True)
    parts = sorted(logs.glob("*.log")) if logs.is_dir() else []
    with atomic_write(out, "w", encoding="utf-8") as f:
        for log in parts:
            f.write(f"===== {log.stem}\n{log.read_text(encoding='utf-8')}\n")


def write_report(report: dict[str, Any], out_dir: Path) -> str:
    out_dir.mkdir(parents=True, exist_ok=True)
    text = render(report)
    with atomic_write(out_dir / "report.md", "w", encoding="utf-8") as f:
        f.write(text)
    write_json(out_dir / "report.json", report)
    return text


def positive_seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = 0.0
    if not value > 0:
        raise argparse.ArgumentTypeError(f"{text!r}: expected a number of seconds above 0")
    return value


def groups_arg(text: str) -> set[str]:
    groups = {g.strip() for g in text.split(",") if g.strip()}
    if not groups or not groups <= set(GROUPS):
        raise argparse.ArgumentTypeError(
            f"{text!r}: expected comma-separated of {', '.join(GROUPS)}"
        )
    return groups


def parse_args(argv: list[str] | None = None):
    p = cli.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out-dir", type=Path, default=ROOT / "results" / "gpu_check")
    p.add_argument(
        "--work-dir", type=Path, default=None, help="the runs' files; default: a temporary folder"
    )
    p.add_argument("--docs", type=Path, default=None, help="also put the report into this file")
    p.add_argument("--budget-s", type=positive_seconds, default=470.0, help="all parts together")
    p.add_argument(
        "--only", type=groups_arg, default=",".join(GROUPS), help=f"comma-separated of {GROUPS}"
    )
    p.add_argument("--smoke", action="store_true", help="the plan at toy sizes on the CPU")
    p.add_argument("--from-json", type=Path, default=None, help="render this report.json only")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.from_json:
        report = json.loads(args.from_json.read_text())
        text = render(report)
    else:
        if not args.smoke and not torch.cuda.is_available():
            reason = "this torch is a CPU build" if torch.version.cuda is None else "none visible"
            print(f"gpu_check: no CUDA device ({reason}); it runs on a machine with an NVIDIA "
                  "GPU (--smoke runs its plan on the CPU)", file=sys.stderr)  # fmt: skip
            return 1
        scale = scale_for(args.smoke)
        parts = [p for p in plan(scale) if p.group in args.only]
        work = args.work_dir or Path(tempfile.mkdtemp(prefix="gpu_check_"))
        ctx = Context(scale, work)
        start = time.monotonic()
        results = run_parts(parts, ctx, args.budget_s)
        collect_logs(work / "logs", args.out_dir / "commands.log")
        report = {
            "command": "python -m scripts.gpu_check " + " ".join(argv or sys.argv[1:]),
            "environment": environment(scale.device),
            "budget_s": args.budget_s,
            "seconds": time.monotonic() - start,
            "parts": [asdict(r) for r in results],
            "targets": with_targets(results) if scale.device == "cuda" else [],
        }
        text = write_report(report, args.out_dir)
    if args.docs:
        update_docs(args.docs, f"gpu-check {report['environment']['device']}", text)
    print(text)
    failed = [r for r in report["parts"] if r["status"] in ("fail", "timeout")]
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
