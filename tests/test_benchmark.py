"""Throughput meter, latency recorder, percentiles and result output, on a fake clock."""

import json
import os

import numpy as np
import pytest
import torch

from common.benchmark import (
    LatencyRecorder,
    ThroughputMeter,
    log_results,
    markdown_table,
    percentiles,
    write_json,
)
from common.logging import Logger, read_dllogger
from tests.helpers import requires_cuda


def fake_clock(*times):
    """A clock returning `times` in order (and failing loudly if read once too often)."""
    return iter(times).__next__


def test_throughput_excludes_warmup_steps():
    # reads: construction, then one per update()
    meter = ThroughputMeter(warmup_steps=2, clock=fake_clock(0.0, 5.0, 6.0, 7.0, 7.5, 8.0))
    meter.update(100)  # warm-up: 0 -> 5
    meter.update(100)  # warm-up: 5 -> 6
    assert meter.steps == 0 and meter.throughput == 0.0
    meter.update(64)  # 6 -> 7
    meter.update(32)  # 7 -> 7.5
    meter.update(32)  # 7.5 -> 8
    assert meter.steps == 3
    assert meter.items == 128
    assert meter.elapsed == 2.0
    assert meter.throughput == 64.0


def test_start_excludes_time_between_steps():
    meter = ThroughputMeter(clock=fake_clock(0.0, 10.0, 11.0, 20.0, 22.0))
    meter.start()  # 10 (the 10 s since construction do not count)
    meter.update(50)  # 11
    meter.start()  # 20 (evaluation or logging in between)
    meter.update(50)  # 22
    assert meter.elapsed == 3.0
    assert meter.throughput == pytest.approx(100 / 3)


def test_reset_starts_over_with_warmup():
    meter = ThroughputMeter(warmup_steps=1, clock=fake_clock(0.0, 1.0, 2.0, 10.0, 11.0, 13.0))
    meter.update(1)
    meter.update(1)
    assert meter.steps == 1
    meter.reset()  # 10
    meter.update(8)  # warm-up again: 10 -> 11
    meter.update(8)  # 11 -> 13
    assert (meter.steps, meter.items, meter.elapsed, meter.throughput) == (1, 8.0, 2.0, 4.0)


def test_meter_rejects_negative_warmup():
    with pytest.raises(ValueError, match="warmup_steps"):
        ThroughputMeter(warmup_steps=-1)
    with pytest.raises(ValueError, match="warmup"):
        LatencyRecorder(warmup=-1)


def test_cuda_device_synchronises_before_each_clock_read(monkeypatch):
    """The CUDA path without a GPU: synchronize is called, with the device, per read."""
    calls = []
    monkeypatch.setattr(torch.cuda, "synchronize", lambda device=None: calls.append(device))
    meter = ThroughputMeter(device="cuda:0", clock=fake_clock(0.0, 1.0))
    meter.update(1)
    assert calls == [torch.device("cuda:0")] * 2
    rec = LatencyRecorder(device=torch.device("cuda"), clock=fake_clock(0.0, 1.0))
    with rec.measure():
        pass
    assert len(calls) == 4
    cpu = ThroughputMeter(device="cpu", clock=fake_clock(0.0, 1.0))
    cpu.update(1)
    assert len(calls) == 4  # a cpu device never synchronises


def test_latency_recorder_excludes_warmup_calls():
    rec = LatencyRecorder(warmup=2, clock=fake_clock(0.0, 1.0, 1.0, 1.5, 2.0, 2.25, 3.0, 3.5))
    for _ in range(4):
        with rec.measure():
            pass
    assert rec.latencies == [0.25, 0.5]
    rec.add(0.25)
    assert rec.latencies == [0.25, 0.5, 0.25]
    rec.latencies.append(99.0)  # a copy: the recorder is unchanged
    assert rec.summary() == {
        "count": 3,
        "avg": 1.0 / 3,
        "p50": 0.25,
        "p90": 0.45,
        "p95": 0.475,
        "p99": 0.495,
        "p100": 0.5,
    }


def test_latency_summary_throughput():
    rec = LatencyRecorder()
    for seconds in (0.5, 0.25, 0.25):
        rec.add(seconds)
    summary = rec.summary(items_per_call=8)
    assert summary["throughput"] == 24.0  # 3 calls x 8 items / 1 s
    assert summary["count"] == 3 and summary["avg"] == 1 / 3


def test_failed_block_is_not_recorded():
    rec = LatencyRecorder(clock=fake_clock(0.0))
    with pytest.raises(RuntimeError), rec.measure():
        raise RuntimeError("out of memory")
    assert rec.latencies == []
    with pytest.raises(ValueError, match="no latencies recorded after 0 warm-up calls"):
        rec.summary()


def test_percentiles_equal_numpy():
    rng = np.random.default_rng(0)
    ps = (0, 1, 12.5, 33.3, 50, 66.7, 90, 95, 99, 99.9, 100)
    for n in (1, 2, 3, 7, 100, 1001):
        values = rng.lognormal(size=n)
        ours = percentiles(values.tolist(), ps)
        assert list(ours) == [f"p{p:g}" for p in ps]
        assert list(ours.values()) == np.percentile(values, ps).tolist()  # to the bit


def test_percentiles_small_cases():
    assert percentiles([4, 1, 3, 2]) == {
        "p50": 2.5,
        "p90": 3.7,
        "p95": 3.8499999999999996,  # the float numpy gives too
        "p99": 3.9699999999999998,
        "p100": 4.0,
    }
    assert percentiles([7], ps=(0, 50, 100)) == {"p0": 7.0, "p50": 7.0, "p100": 7.0}
    with pytest.raises(ValueError, match="no values"):
        percentiles([])
    with pytest.raises(ValueError, match="outside"):
        percentiles([1.0], ps=(101,))


def test_markdown_table():
    rows = [
        {"model": "gnmt", "batch": 128, "tokens/s": 12345.678, "note": None},
        {"model": "bert|large", "batch": 8, "tokens/s": np.float32(99.5), "note": "fp16"},
    ]
    assert markdown_table(rows) == (
        "| model       | batch | tokens/s | note |\n"
        "| ----------- | ----: | -------: | ---- |\n"
        "| gnmt        |   128 | 12345.68 |      |\n"
        "| bert\\|large |     8 |    99.50 | fp16 |\n"
    )
    assert markdown_table(rows, columns=["batch", "x"], floatfmt=".1f") == (
        "| batch | x   |\n| ----: | --- |\n|   128 |     |\n|     8 |     |\n"
    )
    assert markdown_table([], columns=["a"]) == "| a   |\n| --- |\n"
    with pytest.raises(ValueError):
        markdown_table([])


def test_write_json_is_atomic(tmp_path):
    path = tmp_path / "results" / "bench.json"
    write_json(path, {"throughput": 12.5, "p50": 0.01})
    assert json.loads(path.read_text()) == {"throughput": 12.5, "p50": 0.01}

    with pytest.raises(TypeError):
        write_json(path, {"bad": object()})
    assert json.loads(path.read_text()) == {"throughput": 12.5, "p50": 0.01}  # untouched

    write_json(path, [1, 2])
    assert json.loads(path.read_text()) == [1, 2]
    assert os.listdir(path.parent) == ["bench.json"]  # no temporary files left


def test_write_json_cleans_up_when_the_rename_fails(tmp_path, monkeypatch):
    def fail(src, dst):
        raise OSError("disk gone")

    monkeypatch.setattr(os, "replace", fail)
    with pytest.raises(OSError, match="disk gone"):
        write_json(tmp_path / "bench.json", {"a": 1})
    assert os.listdir(tmp_path) == []


def test_log_results_writes_one_summary_line_with_units(tmp_path):
    results = {
        "count": 3,
        "avg": 0.25,
        "p99": 0.5,
        "latency_p99.9": 0.5,
        "throughput": 24.0,
        "tokens/s": 1000.0,
        "batch_size": 8,
    }
    with Logger(tmp_path / "log.json", stdout=False) as logger:
        log_results(logger, results)
    records = read_dllogger(tmp_path / "log.json")
    meta = {r["metric"]: r["metadata"] for r in records if r["type"] == "METADATA"}
    assert meta == {
        "avg": {"unit": "s", "format": ":.6f"},
        "p99": {"unit": "s", "format": ":.6f"},
        "latency_p99.9": {"unit": "s", "format": ":.6f"},
        "throughput": {"unit": "items/s", "format": ":.1f"},
        "tokens/s": {"unit": "tokens/s", "format": ":.1f"},
    }
    (log,) = [r for r in records if r["type"] == "LOG"]
    assert log["step"] == [] and log["data"] == results


def test_log_results_console_line(capsys):
    with Logger() as logger:
        log_results(logger, {"avg": 0.0125, "throughput": 640.0}, step=5)
    assert capsys.readouterr().out == "step 5 | avg 0.012500 s | throughput 640.0 items/s\n"


@pytest.mark.gpu
@requires_cuda
def test_cuda_timing_waits_for_kernels():
    x = torch.randn(2048, 2048, device="cuda")
    meter = ThroughputMeter(device="cuda")
    rec = LatencyRecorder(device="cuda")
    for _ in range(3):
        meter.start()
        with rec.measure():
            y = x @ x
        meter.update(1)
    assert meter.steps == 3 and meter.elapsed > 0 and meter.throughput > 0
    assert len(rec.latencies) == 3 and all(t > 0 for t in rec.latencies)
    assert torch.isfinite(y).all()


def test_to_milliseconds_converts_only_the_timed_keys():
    from common.benchmark import to_milliseconds

    row = {"math": "fp32", "tokens/s": 10.0, "step_avg": 0.5, "latency_p90": 0.002}
    assert to_milliseconds(row, ("step_", "latency_")) == {
        "math": "fp32",
        "tokens/s": 10.0,
        "avg (ms)": 500.0,
        "p90 (ms)": 2.0,
    }


def test_device_name_names_the_cpu():
    from common.benchmark import device_name

    assert isinstance(device_name("cpu"), str) and device_name("cpu")
