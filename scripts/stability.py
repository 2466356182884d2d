"""Seed-to-seed spread of a recipe's final score: the same run under several seeds.

    python -m scripts.stability --recipe bert.run_squad --seeds 1,2,3 --out-dir results/st \\
        -- --init_checkpoint MODEL_DIR --do_train --train_file train-v1.1.json \\
           --do_predict --predict_file dev-v1.1.json --do_eval
    python -m scripts.stability --recipe gnmt.train --seeds 1,2,3 --out-dir results/st --slurm \\
        -- --epochs 6                           # prints the sbatch command, submits nothing
    python -m scripts.stability --recipe gnmt.train --seeds 1,2,3 --out-dir results/st --collect

Each seed runs one after the other as `python -m MODULE FLAGS SEED_FLAG S OUT_FLAG
OUT_DIR/seed_S`, FLAGS being everything after `--`; its console output goes to
OUT_DIR/seed_S.out and to this console, each line prefixed with the seed. The score of
a run is the metric of its DLLogger log's final summary (step []); a run that exits
with an error, or whose summary lacks a finite value of the metric, is failed: its seed
and the tail of its output are printed, the report marks it, the other seeds still run
and the exit status is 1. Written into OUT_DIR, atomically:

    stability.md    a table of the seeds' scores, and their mean, sample std, min, max
    stability.json  the same numbers
    stability.png   a box plot of the scores, each seed's point labelled

Recipes (seed flag, output folder flag, log in that folder, default metric):

    gnmt.train             --seed  --save-dir    log.json         best_bleu
    transformer_xl.train   --seed  --work_dir    train_log.json   test_ppl (lower: better)
    bert.run_pretraining   --seed  --output_dir  dllogger.json    final_loss (lower: better)
    bert.run_squad         --seed  --output_dir  dllogger.json    f1
    bert.run_glue          --seed  --output_dir  dllogger.json    dev_mcc (CoLA), else
                                                                  dev_accuracy, else
                                                                  dev_matched_accuracy (MNLI)
    scripts.toolkit_check  --seed  --save-dir    log.json         final_val_accuracy

stability sets those three per run, so they are refused among FLAGS. A seed folder
that exists already is refused (the runs would mix), except with --collect, which runs
nothing and only reads the logs of OUT_DIR/seed_S: after a SLURM array (--slurm), or to
add seeds to a study (run the new seeds, then --collect all of them).
"""

from __future__ import annotations

import argparse
import collections
import math
import os
import shlex
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from common import cli
from common.atomic import atomic_write
from common.benchmark import markdown_table, write_json
from common.errors import UserError
from common.logging import read_dllogger
from scripts.plot_log import save_figure

ROOT = Path(__file__).resolve().parent.parent
TAIL_LINES = 20  # lines of a failed run's output shown in the report


@dataclass(frozen=True)
class Recipe:
    module: str
    out_flag: str  # the run's folder: checkpoints and the log
    log_name: str  # the DLLogger log inside that folder
    log_flag: str  # the flag that would move the log elsewhere
    metrics: tuple[str, ...]  # the default metric: the first of these the summary holds
    run_sub: str | None = None  # the SLURM script, from the repository root
    results_var: str = ""  # the run.sub variable naming the run's folder
    sub_args: tuple[str, ...] = ()  # run.sub's own arguments
    seed_flag: str = "--seed"


RECIPES = {
    r.module: r
    for r in (
        Recipe(
            "gnmt.train", "--save-dir", "log.json", "--log-file", ("best_bleu",),
            run_sub="gnmt/scripts/run.sub", results_var="RESULTS",
        ),
        Recipe(
            "transformer_xl.train", "--work_dir", "train_log.json", "--dllog_file",
            ("test_ppl",), run_sub="transformer_xl/scripts/run.sub", results_var="WORK_DIR",
            sub_args=("train",),
        ),
        Recipe(
            "bert.run_pretraining", "--output_dir", "dllogger.json", "--json-summary",
            ("final_loss",), run_sub="bert/scripts/run_pretraining.sub",
            results_var="RESULTS_DIR",
        ),
        Recipe("bert.run_squad", "--output_dir", "dllogger.json", "--json-summary", ("f1",)),
        Recipe(
            "bert.run_glue", "--output_dir", "dllogger.json", "--json-summary",
            ("dev_mcc", "dev_accuracy", "dev_matched_accuracy"),
        ),
        Recipe(
            "scripts.toolkit_check", "--save-dir", "log.json", "--log-file",
            ("final_val_accuracy",),
        ),
    )
}  # fmt: skip


def higher_is_better(metric: str) -> bool:
    """Scores (BLEU, F1, accuracy) grow as a model improves; losses and perplexities shrink."""
    return not any(word in metric.lower() for word in ("loss", "ppl", "perplexity"))


# ------------------------------------------------------------------------------- CLI


def seeds_arg(value: str) -> list[int]:
    """argparse type: comma-separated distinct seeds >= 0, at least two ("1,2,3")."""
    seeds = [cli.nonnegative_int(part.strip()) for part in value.split(",")]
    if len(set(seeds)) != len(seeds):
        raise argparse.ArgumentTypeError(f"{value!r} names a seed twice")
    if len(seeds) < 2:
        raise argparse.ArgumentTypeError(f"{value!r}: a spread needs at least two seeds")
    return seeds


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    argv = sys.argv[1:] if argv is None else list(argv)
    split = argv.index("--") if "--" in argv else len(argv)
    own, recipe_flags = argv[:split], argv[split + 1 :]
    p = cli.ArgumentParser(
        prog="python -m scripts.stability",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        usage="%(prog)s --recipe MODULE --seeds S1,S2,... --out-dir DIR [options] "
        "[-- RECIPE FLAGS]",
    )
    p.add_argument("--recipe", required=True, choices=RECIPES, help="the module to run")
    p.add_argument("--seeds", required=True, type=seeds_arg, help="comma-separated, e.g. 1,2,3")
    p.add_argument("--out-dir", required=True, type=Path, help="seed folders and the report")
    p.add_argument(
        "--metric", default=None, help="a name of the final summary (default: the recipe's)"
    )
    p.add_argument(
        "--collect", action="store_true", help="run nothing: read the logs of DIR/seed_S"
    )
    p.add_argument(
        "--slurm", action="store_true",
        help="print an sbatch array command for the recipe's run.sub (submits nothing)",
    )  # fmt: skip
    args, unknown = p.parse_known_args(own)
    if unknown:
        p.error(f"unrecognized arguments: {' '.join(unknown)} (recipe flags go after --)")
    args.recipe_flags = recipe_flags
    check_flags(p, args)
    return args


def _names_flag(flags: list[str], flag: str) -> bool:
    return any(f == flag or f.startswith(flag + "=") for f in flags)


def check_flags(p: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """Flag combinations that cannot work, refused before any run starts."""
    recipe = RECIPES[args.recipe]
    own = (recipe.seed_flag, recipe.out_flag, recipe.log_flag)
    taken = next((f for f in own if _names_flag(args.recipe_flags, f)), None)
    spaced = next((f for f in args.recipe_flags if not f or any(c.isspace() for c in f)), None)
    with_sub = [name for name, r in RECIPES.items() if r.run_sub]
    cli.check_args(
        p,
        cli.conflict(args, "--collect", "--slurm", "--slurm only prints how to run the seeds"),
        f"{taken} is set per seed by stability: leave it out of the recipe flags"
        if taken
        else None,
        "--collect runs nothing: leave out the recipe flags" if args.collect and args.recipe_flags
        else None,
        f"--slurm: {args.recipe} has no run.sub (those with one: {', '.join(with_sub)})"
        if args.slurm and not recipe.run_sub
        else None,
        f"--slurm: recipe flag {spaced!r} holds a space, which run.sub's EXTRA_ARGS would split"
        if args.slurm and spaced is not None
        else None,
    )  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    return cli.run_main(lambda: stability(parse_args(argv)))


def stability(args: argparse.Namespace) -> int:
    recipe = RECIPES[args.recipe]
    if args.collect and not args.out_dir.is_dir():
        raise UserError(f"--out-dir {args.out_dir} is no folder: there is nothing to collect")
    if not args.collect:
        refuse_used_folders(args.out_dir, args.seeds)
    if args.slurm:
        print(slurm_instructions(args, recipe))
        return 0
    results = []
    for seed in args.seeds:
        folder = seed_folder(args.out_dir, seed)
        if args.collect:
            result = collect(recipe, seed, folder, args.metric)
        else:
            result = run_seed(recipe, args.recipe_flags, seed, folder, args.metric)
        if result.error:
            print(failure_text(result), file=sys.stderr, flush=True)
        results.append(result)
    metric = args.metric or next((r.metric for r in results if r.value is not None), None)
    report = build_report(recipe, metric or " or ".join(recipe.metrics), results)
    for path in write_report(report, args.out_dir):
        print(path)
    print(summary_line(report), flush=True)
    failed = [r.seed for r in results if r.error]
    if failed:
        print(f"failed seeds: {', '.join(map(str, failed))}", file=sys.stderr)
    return 1 if failed else 0


def seed_folder(out_dir: Path, seed: int) -> Path:
    return out_dir / f"seed_{seed}"


def refuse_used_folders(out_dir: Path, seeds: list[int]) -> None:
    used = [str(seed_folder(out_dir, s)) for s in seeds if seed_folder(out_dir, s).exists()]
    if used:
        raise UserError(
            f"{', '.join(used)}: seed folder{'s' if len(used) > 1 else ''} of an earlier run: "
            "pass a new --out-dir, leave those seeds out, or add --collect to report on them "
            "without running"
        )


# ----------------------------------------------------------------------------- runs


@dataclass
class SeedResult:
    seed: int
    value: float | None = None
    metric: str | None = None  # the summary name the value came from
    error: str | None = None  # why the run counts as failed
    tail: list[str] | None = None  # the last lines of its output, when it failed


def run_command(recipe: Recipe, flags: list[str], seed: int, folder: Path) -> list[str]:
    """The run of one seed: the recipe's flags, then the seed and the folder (so they win)."""
    return [
        sys.executable, "-m", recipe.module, *flags,
        recipe.seed_flag, str(seed), recipe.out_flag, str(folder),
    ]  # fmt: skip


def run_seed(
    recipe: Recipe, flags: list[str], seed: int, folder: Path, metric: str | None
) -> SeedResult:
    """Run one seed to the end, its output copied to FOLDER.out and this console."""
    command = run_command(recipe, flags, seed, folder)
    output = folder.with_suffix(".out")
    output.parent.mkdir(parents=True, exist_ok=True)
    print(f"[seed {seed}] {shlex.join(command)}", flush=True)
    env = dict(os.environ, PYTHONUNBUFFERED="1")  # lines as they come, not at exit
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    tail: collections.deque[str] = collections.deque(maxlen=TAIL_LINES)
    with (
        open(output, "w", encoding="utf-8") as log,
        subprocess.Popen(
            command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env
        ) as proc,
    ):
        for line in proc.stdout:
            log.write(line)
            tail.append(line.rstrip("\n"))
            print(f"[seed {seed}] {line}", end="", flush=True)
    if proc.returncode != 0:
        return SeedResult(seed, error=f"exit status {proc.returncode}", tail=list(tail))
    result = collect(recipe, seed, folder, metric)
    if result.error:
        result.tail = list(tail)
    return result


def collect(recipe: Recipe, seed: int, folder: Path, metric: str | None) -> SeedResult:
    """The score of a finished run from its log; a failed result says what is missing."""
    try:
        summary = final_summary(folder / recipe.log_name)
    except (OSError, ValueError) as exc:
        return SeedResult(seed, error=str(exc), tail=output_tail(folder))
    names = (metric,) if metric else recipe.metrics
    name = next((n for n in names if n in summary), None)
    if name is None:
        wanted, has = " or ".join(names), ", ".join(summary) or "nothing"
        error = f"the final summary has no {wanted} (it has {has})"
        return SeedResult(seed, error=error, tail=output_tail(folder))
    value = summary[name]
    if not isinstance(value, int | float) or isinstance(value, bool) or not math.isfinite(value):
        error = f"{name} is {value!r}, not a finite number"
        return SeedResult(seed, metric=name, error=error, tail=output_tail(folder))
    return SeedResult(seed, value=float(value), metric=name)


def final_summary(log: Path) -> dict[str, Any]:
    """The values of the log's final summary records (step []), later ones winning: a run
    may log its scores and its benchmark numbers as two, a resumed run logs again."""
    if not log.is_file():
        raise FileNotFoundError(f"no log {log}: the run did not start or wrote it elsewhere")
    summary: dict[str, Any] = {}
    for record in read_dllogger(log):
        if record.get("type") == "LOG" and record.get("step") == []:
            summary.update(record.get("data") or {})
    if not summary:
        raise ValueError(f"{log} has no final summary: the run did not finish")
    return summary


def output_tail(folder: Path) -> list[str] | None:
    """The last lines of a seed's console output (FOLDER.out), when it was kept."""
    try:
        lines = folder.with_suffix(".out").read_text(encoding="utf-8").splitlines()
    except OSError:
        return None
    return lines[-TAIL_LINES:]


def failure_text(result: SeedResult) -> str:
    text = f"seed {result.seed} failed: {result.error}"
    if result.tail:
        text += "\n" + "\n".join(f"    {line}" for line in result.tail)
    return text


# --------------------------------------------------------------------------- report


def build_report(recipe: Recipe, metric: str, results: list[SeedResult]) -> dict[str, Any]:
    """The study as data: one entry per seed, and statistics over the seeds that
    succeeded (std: sample standard deviation, ddof=1; None below two values)."""
    values = np.array([r.value for r in results if r.value is not None], dtype=np.float64)
    stats: dict[str, float | None] = dict.fromkeys(("mean", "std", "min", "max"))
    if values.size:
        stats.update(mean=values.mean(), min=values.min(), max=values.max())
    if values.size > 1:
        stats["std"] = values.std(ddof=1)
    return {
        "recipe": recipe.module,
        "metric": metric,
        "higher_is_better": higher_is_better(metric),
        "runs": [
            {
                "seed": r.seed,
                "folder": f"seed_{r.seed}",
                "value": r.value,
                "status": "failed" if r.error else "ok",
                "error": r.error,
                "tail": r.tail if r.error else None,
            }
            for r in results
        ],
        "summary": {
            "seeds": len(results),
            "succeeded": int(values.size),
            "failed": len(results) - int(values.size),
            **{k: None if v is None else float(v) for k, v in stats.items()},
        },
    }


def summary_line(report: dict[str, Any]) -> str:
    s = report["summary"]
    if s["mean"] is None:
        return f"{report['metric']}: no seed succeeded"
    spread = f" ± {s['std']:.6g} (sample std)" if s["std"] is not None else ""
    return (
        f"{report['metric']}: mean {s['mean']:.6g}{spread}, min {s['min']:.6g}, "
        f"max {s['max']:.6g} over {s['succeeded']} of {s['seeds']} seeds"
    )


def markdown(report: dict[str, Any]) -> str:
    metric, summary = report["metric"], report["summary"]
    better = "higher" if report["higher_is_better"] else "lower"
    seed_rows = [
        {
            "seed": run["seed"],
            metric: run["value"],
            "status": "ok" if run["error"] is None else f"failed: {run['error']}",
        }
        for run in report["runs"]
    ]
    stat_rows = [{k: summary[k] for k in ("succeeded", "failed", "mean", "std", "min", "max")}]
    text = [
        f"# Seed stability: {report['recipe']}",
        "",
        f"{metric} of each seed's final summary ({better} is better); std is the sample "
        "standard deviation, over the seeds that succeeded.",
        "",
        markdown_table(seed_rows, floatfmt=".6g"),
        markdown_table(stat_rows, floatfmt=".6g"),
    ]
    for run in report["runs"]:
        if run["error"] is not None:
            text += [f"## Seed {run['seed']} failed", "", run["error"], ""]
            if run["tail"]:
                text += ["```", *run["tail"], "```", ""]
    return "\n".join(text)


def write_report(report: dict[str, Any], out_dir: Path) -> list[Path]:
    """stability.md, stability.json and (with a score to show) stability.png in out_dir."""
    md, js, png = (out_dir / f"stability.{ext}" for ext in ("md", "json", "png"))
    with atomic_write(md, "w", encoding="utf-8") as f:
        f.write(markdown(report))
    write_json(js, report)
    if not report["summary"]["succeeded"]:
        return [md, js]
    box_plot(report, png)
    return [md, js, png]


def box_plot(report: dict[str, Any], path: Path) -> None:
    """The scores' box with every seed's point on it, labelled with the seed."""
    # Its own Agg canvas: no pyplot, no global backend to switch.
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    runs = [run for run in report["runs"] if run["value"] is not None]
    values = [run["value"] for run in runs]
    fig = Figure(figsize=(4, 5), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    ax.boxplot(values, positions=[0], widths=0.5)
    ax.scatter([0.5] * len(values), values, color="C0", zorder=3)  # beside the box
    for run in runs:
        ax.annotate(f"seed {run['seed']}", (0.5, run["value"]), xytext=(6, 0),
                    textcoords="offset points", fontsize=8, va="center")  # fmt: skip
    ax.set_xlim(-0.5, 1.1)
    better = "higher" if report["higher_is_better"] else "lower"
    ax.set(xticks=[], ylabel=f"{report['metric']} ({better} is better)")
    failed = report["summary"]["failed"]
    ax.set_title(
        f"{report['recipe']}: {len(values)} seeds" + (f", {failed} failed" if failed else ""),
        fontsize=10,
    )
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    save_figure(fig, path)


# ---------------------------------------------------------------------------- SLURM


def sbatch_options(run_sub: Path) -> list[str]:
    """The `#SBATCH` options of a job script: sbatch --wrap does not read them."""
    options = []
    for line in run_sub.read_text(encoding="utf-8").splitlines():
        if line.startswith("#SBATCH "):
            options += shlex.split(line.removeprefix("#SBATCH "))
    return options


def slurm_instructions(args: argparse.Namespace, recipe: Recipe) -> str:
    """An sbatch array command, one task per seed, and how to collect the scores after.

    Each task picks its seed by SLURM_ARRAY_TASK_ID and runs the recipe's run.sub with
    the run's folder in run.sub's variable and the recipe flags and seed in EXTRA_ARGS;
    run.sub's #SBATCH options are given on the command line, as --wrap ignores them."""
    out = shlex.quote(str(args.out_dir))
    extra = shlex.quote(shlex.join([*args.recipe_flags, recipe.seed_flag]) + " ")
    task = (
        f"seeds=({' '.join(map(str, args.seeds))}); seed=${{seeds[$SLURM_ARRAY_TASK_ID]}}; "
        f'{recipe.results_var}={out}/seed_"$seed" EXTRA_ARGS={extra}"$seed" '
        f"exec bash {shlex.join([recipe.run_sub, *recipe.sub_args])} "
        f'>> {out}/seed_"$seed".out 2>&1'
    )
    sbatch = [
        "sbatch", f"--array=0-{len(args.seeds) - 1}", *sbatch_options(ROOT / recipe.run_sub),
        "--output", f"{args.out_dir}/slurm-%A_%a.out", "--wrap", task,
    ]  # fmt: skip
    collect = shlex.join(
        [
            "python", "-m", "scripts.stability", "--recipe", args.recipe,
            "--seeds", ",".join(map(str, args.seeds)), "--out-dir", str(args.out_dir),
            *(["--metric", args.metric] if args.metric else []), "--collect",
        ]
    )  # fmt: skip
    return "\n".join(
        [
            f"# From the repository root; {recipe.run_sub}'s variables (its header lists",
            "# them) may be set in front of sbatch. One array task per seed, each writing",
            f"# {args.out_dir}/seed_S (console output: {args.out_dir}/seed_S.out):",
            f"mkdir -p {out} && {shlex.join(sbatch)}",
            "# When every task has ended, the report (stability.md/.json/.png):",
            collect,
        ]
    )


if __name__ == "__main__":
    sys.exit(main())
