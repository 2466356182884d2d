"""scripts/stability.py: the real toolkit check under three seeds, a failing seed,
--collect without running, the printed SLURM array, one-line flag errors.

The seeds' scores are read back here from each run's own log, not through the module."""

import importlib
import json
import os
import shlex
import shutil
import subprocess
import sys

import numpy as np
import pytest

from scripts import stability
from tests.helpers import LAUNCH_PREFIXES, ROOT, run_python

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
SEEDS = [1, 2, 3]
TOOLKIT_FLAGS = ["--steps", "20", "--device", "cpu", "--print-freq", "20"]


def own_final_accuracy(folder):
    """final_val_accuracy of the log's final summary, read without scripts.stability."""
    records = [
        json.loads(line.removeprefix("DLLL "))
        for line in (folder / "log.json").read_text().splitlines()
        if line.startswith("DLLL ")
    ]
    (summary,) = [r["data"] for r in records if r.get("step") == []]
    return summary["final_val_accuracy"]


def markdown_tables(text):
    """The tables of a markdown report: each a list of rows (header first) of cells."""
    tables, previous = [], ""
    for line in text.splitlines():
        if line.startswith("|"):
            cells = [c.strip() for c in line.strip("|").split("|")]
            if not previous.startswith("|"):
                tables.append([])
            if not set("".join(cells)) <= {"-", ":"}:  # not the rule under the header
                tables[-1].append(cells)
        previous = line
    return tables


def no_run(*args, **kwargs):
    raise AssertionError("a seed was run")


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    """Three seeds of the toolkit check, run through the real entry point."""
    out = tmp_path_factory.mktemp("study") / "st"
    proc = run_python(
        ["-m", "scripts.stability", "--recipe", "scripts.toolkit_check", "--seeds", "1,2,3",
         "--out-dir", out, "--", *TOOLKIT_FLAGS],
        check=False,
    )  # fmt: skip
    return out, proc


@pytest.fixture
def quiet_env(monkeypatch):
    """Seed runs started in this process see no launcher and use one thread."""
    for name in list(os.environ):
        if name.startswith(LAUNCH_PREFIXES):
            monkeypatch.delenv(name)
    monkeypatch.setenv("OMP_NUM_THREADS", "1")


@pytest.mark.slow
def test_every_seed_runs_and_the_study_exits_0(study):
    out, proc = study
    assert proc.returncode == 0, proc.stdout + proc.stderr
    for seed in SEEDS:
        assert f"[seed {seed}] summary | final_val_loss" in proc.stdout
        assert (out / f"seed_{seed}" / "log.json").is_file()
        assert (out / f"seed_{seed}.out").read_text().strip()


@pytest.mark.slow
def test_table_holds_each_runs_own_final_accuracy(study):
    out, _ = study
    report = json.loads((out / "stability.json").read_text())
    assert report["metric"] == "final_val_accuracy" and report["higher_is_better"]
    assert [run["seed"] for run in report["runs"]] == SEEDS
    for run in report["runs"]:
        assert run["status"] == "ok" and run["error"] is None
        assert run["value"] == own_final_accuracy(out / f"seed_{run['seed']}")
    values = {run["value"] for run in report["runs"]}
    assert len(values) > 1  # the seeds do change the run


@pytest.mark.slow
def test_mean_and_sample_std_match_numpy(study):
    out, _ = study
    report = json.loads((out / "stability.json").read_text())
    values = np.array([own_final_accuracy(out / f"seed_{s}") for s in SEEDS])
    summary = report["summary"]
    assert (summary["seeds"], summary["succeeded"], summary["failed"]) == (3, 3, 0)
    assert summary["mean"] == pytest.approx(np.mean(values), rel=1e-12)
    assert summary["std"] == pytest.approx(np.std(values, ddof=1), rel=1e-12)
    assert (summary["min"], summary["max"]) == (values.min(), values.max())


@pytest.mark.slow
def test_markdown_shows_the_json_numbers(study):
    out, _ = study
    report = json.loads((out / "stability.json").read_text())
    seeds, stats = markdown_tables((out / "stability.md").read_text())
    assert seeds == [
        ["seed", "final_val_accuracy", "status"],
        *([str(run["seed"]), f"{run['value']:.6g}", "ok"] for run in report["runs"]),
    ]
    summary = report["summary"]
    assert stats == [
        ["succeeded", "failed", "mean", "std", "min", "max"],
        ["3", "0", *(f"{summary[k]:.6g}" for k in ("mean", "std", "min", "max"))],
    ]


@pytest.mark.slow
def test_box_plot_is_a_png(study):
    out, _ = study
    assert (out / "stability.png").read_bytes().startswith(PNG_SIGNATURE)


@pytest.mark.slow
def test_collect_reproduces_the_report_without_running(study, tmp_path, monkeypatch, capsys):
    out, _ = study
    copy = tmp_path / "copy"
    shutil.copytree(out, copy)
    for ext in ("md", "json", "png"):
        (copy / f"stability.{ext}").unlink()

    monkeypatch.setattr(subprocess, "Popen", no_run)
    code = stability.main(
        ["--recipe", "scripts.toolkit_check", "--seeds", "1,2,3", "--out-dir", str(copy),
         "--collect"]
    )  # fmt: skip
    assert code == 0, capsys.readouterr().err
    for ext in ("md", "json"):
        assert (copy / f"stability.{ext}").read_text() == (out / f"stability.{ext}").read_text()
    assert (copy / "stability.png").read_bytes().startswith(PNG_SIGNATURE)


@pytest.mark.slow
def test_a_failing_seed_is_reported_while_the_others_complete(
    tmp_path, monkeypatch, capsys, quiet_env
):
    real_command = stability.run_command

    def seed_2_fails(recipe, flags, seed, folder):
        if seed == 2:
            return [sys.executable, "-c", "print('diverged at step 7'); raise SystemExit(3)"]
        return real_command(recipe, flags, seed, folder)

    monkeypatch.setattr(stability, "run_command", seed_2_fails)
    out = tmp_path / "st"
    code = stability.main(
        ["--recipe", "scripts.toolkit_check", "--seeds", "1,2,3", "--out-dir", str(out),
         "--", *TOOLKIT_FLAGS]
    )  # fmt: skip
    err = capsys.readouterr().err
    assert code == 1
    assert "seed 2 failed: exit status 3\n    diverged at step 7" in err
    assert "failed seeds: 2" in err

    report = json.loads((out / "stability.json").read_text())
    runs = {run["seed"]: run for run in report["runs"]}
    assert runs[2]["status"] == "failed" and runs[2]["value"] is None
    assert runs[2]["tail"] == ["diverged at step 7"]
    for seed in (1, 3):  # the seed after the failure ran too
        assert runs[seed]["value"] == own_final_accuracy(out / f"seed_{seed}")
    values = [runs[1]["value"], runs[3]["value"]]
    assert report["summary"]["failed"] == 1
    assert report["summary"]["mean"] == pytest.approx(np.mean(values), rel=1e-12)
    assert report["summary"]["std"] == pytest.approx(np.std(values, ddof=1), rel=1e-12)

    md = (out / "stability.md").read_text()
    seeds, _ = markdown_tables(md)
    assert seeds[2] == ["2", "", "failed: exit status 3"]
    assert "## Seed 2 failed" in md and "diverged at step 7" in md
    assert (out / "stability.png").read_bytes().startswith(PNG_SIGNATURE)


def write_summary(folder, name, data):
    folder.mkdir(parents=True)
    lines = [
        {"type": "LOG", "step": "PARAMETER", "data": {"seed": 1}},
        {"type": "LOG", "step": [], "data": data},
    ]
    (folder / name).write_text("".join(f"DLLL {json.dumps(r)}\n" for r in lines))


def test_a_summary_without_the_metric_fails_naming_what_it_has(tmp_path):
    recipe = stability.RECIPES["gnmt.train"]
    write_summary(tmp_path / "seed_1", "log.json", {"steps": 10, "best_bleu": None})
    result = stability.collect(recipe, 1, tmp_path / "seed_1", "bleu")
    assert result.value is None
    assert result.error == "the final summary has no bleu (it has steps, best_bleu)"
    result = stability.collect(recipe, 1, tmp_path / "seed_1", None)
    assert result.error == "best_bleu is None, not a finite number"


def test_glue_default_metric_is_the_tasks_headline_score(tmp_path):
    recipe = stability.RECIPES["bert.run_glue"]
    write_summary(tmp_path / "cola", "dllogger.json", {"dev_mcc": 0.55})
    write_summary(tmp_path / "mrpc", "dllogger.json", {"dev_accuracy": 0.86, "dev_f1": 0.9})
    assert stability.collect(recipe, 1, tmp_path / "cola", None).metric == "dev_mcc"
    mrpc = stability.collect(recipe, 1, tmp_path / "mrpc", None)
    assert (mrpc.metric, mrpc.value) == ("dev_accuracy", 0.86)


@pytest.mark.parametrize("module", stability.RECIPES)
def test_recipe_takes_the_flags_stability_sets(module, capsys):
    recipe = stability.RECIPES[module]
    with pytest.raises(SystemExit):
        importlib.import_module(module).parse_args(["--help"])
    help_text = capsys.readouterr().out
    for flag in (recipe.seed_flag, recipe.out_flag, recipe.log_flag):
        assert f"{flag} " in help_text
    assert recipe.log_name in help_text  # the log's default name
    if recipe.run_sub:
        script = (ROOT / recipe.run_sub).read_text()  # both taken from the environment:
        assert f"{recipe.results_var}=${{{recipe.results_var}:-" in script
        assert "${EXTRA_ARGS:-}" in script


def test_existing_seed_folder_is_refused_before_any_run(tmp_path, monkeypatch, capsys):
    (tmp_path / "seed_2").mkdir()
    monkeypatch.setattr(subprocess, "Popen", no_run)
    code = stability.main(
        ["--recipe", "scripts.toolkit_check", "--seeds", "1,2", "--out-dir", str(tmp_path)]
    )
    err = capsys.readouterr().err
    assert code == 1 and err.count("\n") == 1
    assert err.startswith(f"error: {tmp_path / 'seed_2'}: seed folder of an earlier run")
    assert not (tmp_path / "seed_1").exists()


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--recipe", "nope"], "argument --recipe: invalid choice: 'nope'"),
        (["--seeds", "1,x"], "argument --seeds: must be an integer >= 0, got 'x'"),
        (["--seeds", "1,1"], "argument --seeds: '1,1' names a seed twice"),
        (["--seeds", "3"], "argument --seeds: '3': a spread needs at least two seeds"),
        (["--steps", "5"], "unrecognized arguments: --steps 5 (recipe flags go after --)"),
        (["--", "--seed", "4"], "--seed is set per seed by stability"),
        (["--", "--save-dir=x"], "--save-dir is set per seed by stability"),
        (["--collect", "--", "--steps", "5"], "--collect runs nothing"),
        (["--collect", "--slurm"], "--collect conflicts with --slurm"),
        (["--slurm"], "--slurm: scripts.toolkit_check has no run.sub"),
    ],
)
def test_bad_flags_end_with_one_line_and_status_2(argv, message, tmp_path, capsys):
    base = ["--recipe", "scripts.toolkit_check", "--seeds", "1,2", "--out-dir", str(tmp_path)]
    with pytest.raises(SystemExit) as exc:
        stability.parse_args(base + argv)
    err = capsys.readouterr().err
    assert exc.value.code == 2
    assert err.count("\n") == 1 and err.startswith("python -m scripts.stability: error: ")
    assert message in err


def test_slurm_prints_one_array_task_per_seed(tmp_path, capsys):
    out = tmp_path / "st x"  # a space: the quoting must hold
    code = stability.main(
        ["--recipe", "transformer_xl.train", "--seeds", "5,6,7", "--out-dir", str(out),
         "--slurm", "--", "--config", "dgx1_8gpu_fp16", "--max_step", "100"]
    )  # fmt: skip
    text = capsys.readouterr().out
    assert code == 0 and not out.exists()  # printed, nothing submitted or written
    command = next(line for line in text.splitlines() if line.startswith("mkdir -p "))
    words = shlex.split(command.split(" && ", 1)[1])
    assert words[:2] == ["sbatch", "--array=0-2"]
    assert words[words.index("--ntasks-per-node") + 1] == "16"  # from run.sub's header
    assert f"--out-dir {shlex.quote(str(out))} --collect" in text

    # Run the array's second task with a stand-in for bash that shows what run.sub gets.
    out.mkdir()
    fake = tmp_path / "bin"
    fake.mkdir()
    (fake / "bash").write_text('#!/bin/sh\necho "$WORK_DIR|$EXTRA_ARGS|$*"\n')
    (fake / "bash").chmod(0o755)
    task = words[words.index("--wrap") + 1]
    env = {"PATH": f"{fake}:{os.environ['PATH']}", "SLURM_ARRAY_TASK_ID": "1"}
    subprocess.run([shutil.which("bash"), "-c", task], env=env, check=True)
    seen = (out / "seed_6.out").read_text().strip()
    assert seen == (
        f"{out}/seed_6|--config dgx1_8gpu_fp16 --max_step 100 --seed 6|"
        "transformer_xl/scripts/run.sub train"
    )
