"""bert.benchmark: runs end to end on a tiny model and reports what it promises; the FLOP
count matches a hand count. Nothing here asserts on speed."""

import json
import subprocess

import pytest
import torch

from bert import benchmark
from bert.model import BertConfig
from common.logging import read_dllogger
from tests.helpers import ROOT, clean_env

TINY = ["--model", "tiny", "--device", "cpu", "--steps", "2", "--warmup", "1"]


def run(tmp_path, *flags):
    out = tmp_path / "bench.json"
    assert benchmark.main([*TINY, *flags, "--json", str(out)]) == 0
    return json.loads(out.read_text())


def test_a_row_per_combination_with_throughput_and_ordered_latencies(tmp_path):
    log = tmp_path / "bench.log"
    flags = ["--seq-len", "8,16", "--batch-size", "1,2", "--math", "fp32,bf16"]
    result = run(tmp_path, *flags, "--log-file", str(log))
    combos = [(r["seq_len"], r["batch"], r["math"]) for r in result["rows"]]
    assert combos == [(s, b, m) for s in (8, 16) for b in (1, 2) for m in ("fp32", "bf16")]
    for row in result["rows"]:
        assert row["impl"] == "ours" and row["mode"] == "inference" and row["task"] == "squad"
        assert row["sequences/s"] > 0
        assert row["latency_avg"] > 0
        assert row["latency_p50"] <= row["latency_p90"] <= row["latency_p99"] <= row["latency_p100"]
        assert row["sequences/s"] == pytest.approx(row["batch"] / row["latency_avg"])
    logged = [r for r in read_dllogger(log) if r["type"] == "LOG"]
    assert len(logged) == len(result["rows"])


def test_a_precision_asked_for_that_the_cpu_cannot_run_is_an_error_before_any_timing(
    tmp_path, capsys
):
    with pytest.raises(SystemExit) as exit_info:
        run(tmp_path, "--seq-len", "8", "--batch-size", "1", "--math", "fp32,fp16")
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "--math fp16: fp16 needs a CUDA GPU" in err
    assert not (tmp_path / "bench.json").exists()


def test_the_default_precisions_skip_what_the_device_cannot_run_with_a_note():
    ok, skipped = benchmark.runnable_precisions(
        ["fp32", "tf32", "fp16", "bf16"], torch.device("cpu")
    )
    assert ok == ["fp32", "bf16"]
    assert [s["math"] for s in skipped] == ["tf32", "fp16"]


def test_table_has_the_seed_columns(tmp_path, capsys):
    run(tmp_path, "--seq-len", "8", "--batch-size", "1", "--math", "fp32")
    header = next(line for line in capsys.readouterr().out.splitlines() if "Model" in line)
    columns = [c.strip() for c in header.strip("|").split("|")]
    assert columns == [
        "Model", "Sequence Length", "Batch Size", "Precision", "Implementation",
        "Throughput-Average(sent/sec)", "Latency-Average(ms)", "Latency-50%(ms)",
        "Latency-90%(ms)", "Latency-95%(ms)", "Latency-99%(ms)", "Latency-100%(ms)",
    ]  # fmt: skip


@pytest.mark.parametrize("task", ["squad", "classify", "ner", "pretrain"])
def test_training_mode_times_a_full_step_for_each_task(tmp_path, task):
    result = run(
        tmp_path,
        "--mode",
        "training",
        "--task",
        task,
        "--seq-len",
        "8",
        "--batch-size",
        "2",
        "--math",
        "fp32",
    )
    (row,) = result["rows"]
    assert row["mode"] == "training" and row["task"] == task and row["sequences/s"] > 0


def test_compare_hf_times_both_on_the_same_weights(tmp_path):
    pytest.importorskip("transformers")
    flags = [
        "--seq-len",
        "8",
        "--batch-size",
        "1,2",
        "--math",
        "fp32",
        "--mode",
        "inference,training",
    ]
    result = run(tmp_path, *flags, "--compare-hf", "--task", "pretrain")
    assert result["setting"]["max_abs_output_difference"] < 1e-4
    impls = [(r["mode"], r["batch"], r["impl"]) for r in result["rows"]]
    assert impls == [
        (m, b, i) for m in ("inference", "training") for b in (1, 2) for i in ("ours", "hf")
    ]
    rows = {(r["mode"], r["batch"], r["impl"]): r for r in result["rows"]}
    assert len(result["comparison"]) == 4
    for comp in result["comparison"]:
        ours, hf = (rows[(comp["mode"], comp["batch"], impl)] for impl in ("ours", "hf"))
        assert comp["ours/hf"] == pytest.approx(ours["sequences/s"] / hf["sequences/s"])
        assert comp["ours/hf p50"] == pytest.approx(hf["latency_p50"] / ours["latency_p50"])


def test_mfu_is_model_flops_per_second_over_the_measured_peak(tmp_path):
    result = run(
        tmp_path,
        "--seq-len",
        "8",
        "--batch-size",
        "2",
        "--math",
        "fp32,bf16",
        "--mfu",
        "--peak-size",
        "256",
    )
    assert set(result["peak_flop/s"]) == {"fp32", "bf16"}
    for row in result["rows"]:
        config = benchmark.MODELS["tiny"]()
        assert row["model_flops"] == benchmark.model_flops(config, "squad", 2, 8, training=False)
        assert row["flop/s"] == pytest.approx(row["model_flops"] / row["latency_avg"])
        assert row["mfu"] == pytest.approx(row["flop/s"] / result["peak_flop/s"][row["math"]])


# --- FLOP count by hand ------------------------------------------------------------------

# hidden 64, intermediate 256, 2 layers, vocabulary 100; batch 2, sequence length 8.
CONFIG = BertConfig(
    vocab_size=100,
    hidden_size=64,
    num_hidden_layers=2,
    num_attention_heads=2,
    intermediate_size=256,
)
# Encoder weights per layer: Q, K, V, output 4 * 64 * 64 = 16384; FFN 2 * 64 * 256 = 32768.
ENCODER = 2 * (16384 + 32768)  # 98304 weights applied to every token
TOKENS = 2 * 8
# Attention, per layer and sequence: Q K^T and P V, 2 * S^2 * H FLOPs each.
ATTENTION = 2 * 2 * (2 * 8 * 8 * 64 + 2 * 8 * 8 * 64)  # batch * layers * ... = 65536


def test_model_flops_squad_by_hand():
    forward = 2 * (ENCODER + 2 * 64) * TOKENS + ATTENTION  # start/end head: 2 * 64 weights
    assert forward == 3_215_360
    assert benchmark.model_flops(CONFIG, "squad", 2, 8, training=False) == forward
    assert benchmark.model_flops(CONFIG, "squad", 2, 8, training=True) == 3 * forward


def test_model_flops_classify_by_hand():
    per_sequence = 64 * 64 + 64 * 3  # pooler, 3-way classifier, on [CLS] only
    forward = 2 * ENCODER * TOKENS + 2 * per_sequence * 2 + ATTENTION
    assert benchmark.model_flops(CONFIG, "classify", 2, 8, False, num_labels=3) == forward


def test_model_flops_ner_by_hand():
    per_token = 64 * 5  # a 5-way tag classifier on every token
    forward = 2 * (ENCODER + per_token) * TOKENS + ATTENTION
    assert benchmark.model_flops(CONFIG, "ner", 2, 8, False, num_labels=5) == forward


def test_model_flops_pretrain_by_hand():
    per_token = ENCODER + 64 * 64 + 64 * 100  # MLM transform and decoder at every position
    per_sequence = 64 * 64 + 64 * 2  # pooler and next-sentence head
    forward = 2 * per_token * TOKENS + 2 * per_sequence * 2 + ATTENTION
    assert benchmark.model_flops(CONFIG, "pretrain", 2, 8, training=False) == forward


# --- the grid script ---------------------------------------------------------------------


def test_inference_script_writes_tables_json_and_logs(tmp_path):
    env = clean_env(
        {"SEQ_LENS": "8", "BATCH_SIZES": "1", "STEPS": "1", "WARMUP": "0", "RESULTS": str(tmp_path)}
    )
    script = ROOT / "bert" / "scripts" / "inference_benchmark.sh"
    proc = subprocess.run(
        ["bash", script, "tiny", "classify", "--math", "fp32"],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    (results,) = tmp_path.glob("inference_tiny_classify_*.json")  # *: cpu or cuda
    stem = results.with_suffix("")
    rows = json.loads(results.read_text())["rows"]
    assert [(r["model"], r["task"], r["seq_len"], r["batch"]) for r in rows] == [
        ("tiny", "classify", 8, 1)
    ]
    assert "Throughput-Average(sent/sec)" in stem.with_suffix(".txt").read_text()
    assert stem.with_suffix(".log").read_text().startswith("DLLL ")
