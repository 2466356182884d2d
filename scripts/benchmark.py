"""Every model's training and inference benchmarks on the device at hand, in one report.

    python -m scripts.benchmark                          # CPU: small, quick settings
    python -m scripts.benchmark --device cuda            # a GPU: the recipes' sizes
    python -m scripts.benchmark --models gnmt --docs docs/PERFORMANCE.md

Runs `gnmt.benchmark`, `transformer_xl.benchmark` and `bert.benchmark` with settings
for the device (listed in the report), then writes into --out-dir:

    report.md      the device, software versions, each command and its result tables
                   (the format of docs/PERFORMANCE.md)
    report.json    the same, as data
    <model>.json   each benchmark's own output
    <model>_<table>.png   throughput per configuration, one bar chart per table

`--docs FILE` also puts report.md into FILE as a section marked with the device's
name, replacing that device's previous section (other devices' sections stay).
"""

from __future__ import annotations

import datetime
import json
import os
import platform
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import torch

from common import cli
from common.atomic import atomic_write
from common.benchmark import device_name, markdown_table, to_milliseconds, write_json
from common.distributed import resolve_device

ROOT = Path(__file__).resolve().parent.parent
THROUGHPUT_KEYS = ("tokens/s", "sentences/s", "sequences/s", "throughput")

# Benchmark arguments per model and device kind: quick on a CPU, the recipes on a GPU.
SETTINGS: dict[str, dict[str, list[str]]] = {
    "gnmt": {
        "cpu": [
            "--math", "fp32,bf16", "--batch-size", "32", "--warmup", "1", "--steps", "3",
            "--infer-batch-size", "1,16", "--beam-size", "1,5", "--infer-batches", "3",
        ],
        "cuda": [
            "--math", "fp16,bf16,tf32", "--batch-size", "256", "--warmup", "10", "--steps",
            "50", "--infer-batch-size", "1,32,128", "--beam-size", "1,5",
            "--infer-batches", "20",
        ],
    },
    "transformer_xl": {
        "cpu": [
            "--math", "fp32,bf16", "--model", "small", "--batch_size", "8", "--warmup", "1",
            "--steps", "3", "--types", "pytorch,torchscript", "--infer_steps", "10",
        ],
        "cuda": [
            "--math", "fp16,bf16,tf32", "--model", "base", "--batch_size", "32",
            "--warmup", "10", "--steps", "50", "--types", "pytorch,torchscript,compile",
            "--infer_steps", "100",
        ],
    },
    "bert": {
        "cpu": [
            "--model", "base", "--math", "fp32,bf16", "--seq-len", "128", "--batch-size",
            "1,8", "--mode", "inference,training", "--compare-hf", "--mfu", "--steps", "5",
            "--warmup", "2",
        ],
        "cuda": [
            "--model", "large", "--math", "fp32,tf32,fp16,bf16", "--seq-len", "128,384",
            "--batch-size", "1,2,4,8", "--mode", "inference,training", "--mfu",
        ],
    },
}  # fmt: skip


def run_benchmark(model: str, args: list[str], out: Path) -> dict[str, Any]:
    """Run `python -m <model>.benchmark ARGS --json OUT`; its JSON (fails loudly)."""
    cmd = [sys.executable, "-m", f"{model}.benchmark", *args, "--json", str(out)]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"benchmark failed: {' '.join(cmd)}\n{proc.stdout}\n{proc.stderr}")
    return json.loads(out.read_text())


def tables(result: dict[str, Any]) -> dict[str, list[dict[str, Any]]]:
    """The lists of result rows in a benchmark's JSON, by name."""
    return {
        name: rows
        for name, rows in result.items()
        if isinstance(rows, list) and rows and all(isinstance(r, dict) for r in rows)
    }


def plot(name: str, rows: list[dict[str, Any]], path: Path) -> Path | None:
    """A bar chart of the rows' throughput, labelled by their non-numeric settings."""
    key = next((k for k in THROUGHPUT_KEYS if k in rows[0]), None)
    if key is None:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = [
        " ".join(
            f"{v}" if isinstance(v, str) else f"{k}{v}"
            for k, v in row.items()
            if k not in THROUGHPUT_KEYS and not isinstance(v, float) and k != "model"
        )
        for row in rows
    ]
    fig, ax = plt.subplots(figsize=(max(6, 0.5 * len(rows) + 2), 4))
    ax.bar(range(len(rows)), [row.get(key) or 0 for row in rows])
    ax.set_xticks(range(len(rows)), labels, rotation=60, ha="right", fontsize=8)
    ax.set_ylabel(key)
    ax.set_title(name)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def software() -> dict[str, str]:
    info = {"python": platform.python_version(), "torch": torch.__version__}
    if torch.cuda.is_available():
        info["cuda"] = str(torch.version.cuda)
        info["cudnn"] = str(torch.backends.cudnn.version())
    try:
        import apex  # noqa: F401

        info["apex"] = "installed"
    except ImportError:
        info["apex"] = "not installed"
    return info


def render(device: str, setting: dict[str, Any], results: dict[str, Any]) -> str:
    lines = [
        f"## {device}",
        "",
        f"Measured {setting['date']} with `python -m scripts.benchmark --device "
        f"{setting['device_kind']}`; {setting['threads']} CPU threads; "
        + ", ".join(f"{k} {v}" for k, v in setting["software"].items())
        + ".",
        "",
    ]
    for model, entry in results.items():
        lines += [
            f"### {model}",
            "",
            f"`python -m {model}.benchmark {' '.join(entry['args'])}`",
            "",
        ]
        for name, rows in tables(entry["result"]).items():
            lines.append(f"{name} (latencies in ms):")
            lines.append("")
            lines.append(markdown_table([to_milliseconds(r, ("step_", "latency_")) for r in rows]))
        lines.append("")
    return "\n".join(lines)


def update_docs(path: Path, device: str, section: str) -> None:
    """Put `section` between this device's markers in `path`, replacing an older one."""
    begin, end = f"<!-- benchmark: {device} -->", f"<!-- end benchmark: {device} -->"
    text = path.read_text(encoding="utf-8") if path.exists() else "# Performance\n"
    block = f"{begin}\n{section.rstrip()}\n{end}\n"
    pattern = re.compile(re.escape(begin) + r".*?" + re.escape(end) + r"\n?", re.S)
    text = pattern.sub(lambda _: block, text) if pattern.search(text) else text + "\n" + block
    with atomic_write(path, "w", encoding="utf-8") as f:
        f.write(text)


def main(argv: list[str] | None = None) -> int:
    p = cli.ArgumentParser(
        description=__doc__.splitlines()[0],
    )
    p.add_argument("--device", type=cli.device_arg, default=None, help="default: cuda if any")
    p.add_argument("--models", default="gnmt,transformer_xl,bert", help="comma-separated")
    p.add_argument("--out-dir", type=Path, default=ROOT / "results" / "benchmark")
    p.add_argument("--docs", type=Path, default=None, help="also update this markdown file")
    p.add_argument(
        "--extra", action="append", default=[], metavar="MODEL=ARGS",
        help="more arguments for one model's benchmark, e.g. gnmt='--steps 10'",
    )  # fmt: skip
    args = p.parse_args(argv)
    kind = resolve_device(args.device).type
    device = device_name(torch.device(kind))
    extra = {}
    for item in args.extra:
        model, _, more = item.partition("=")
        extra[model] = more.split()
    args.out_dir.mkdir(parents=True, exist_ok=True)
    setting = {
        "device": device,
        "device_kind": kind,
        "date": datetime.date.today().isoformat(),
        "threads": torch.get_num_threads(),
        "software": software(),
    }
    results: dict[str, Any] = {}
    for model in args.models.split(","):
        bench_args = [*SETTINGS[model][kind], "--device", kind, *extra.get(model, [])]
        print(f"{model}: python -m {model}.benchmark {' '.join(bench_args)}", flush=True)
        result = run_benchmark(model, bench_args, args.out_dir / f"{model}.json")
        plots = [
            str(path)
            for name, rows in tables(result).items()
            if (
                path := plot(
                    f"{model} {name} on {device}", rows, args.out_dir / f"{model}_{name}.png"
                )
            )
        ]
        results[model] = {"args": bench_args, "result": result, "plots": plots}
    section = render(device, setting, results)
    with atomic_write(args.out_dir / "report.md", "w", encoding="utf-8") as f:
        f.write(section)
    write_json(args.out_dir / "report.json", {"setting": setting, "results": results})
    if args.docs:
        update_docs(args.docs, device, section)
    print(section)
    return 0


if __name__ == "__main__":
    sys.exit(main())
