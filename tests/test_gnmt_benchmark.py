"""gnmt.benchmark: runs end to end on a tiny model and reports what it promises."""

import json

import pytest

from gnmt import benchmark


def test_benchmark_writes_training_and_search_results(tmp_path, capsys):
    out = tmp_path / "bench.json"
    args = [
        "--device", "cpu", "--math", "fp32,bf16", "--vocab-size", "64", "--hidden-size", "16",
        "--batch-size", "4", "--warmup", "1", "--steps", "2", "--infer-batch-size", "1,3",
        "--beam-size", "1,2", "--infer-batches", "2", "--decode-len", "4", "--json", str(out),
    ]  # fmt: skip
    assert benchmark.main(args) == 0
    result = json.loads(out.read_text())
    assert [r["math"] for r in result["train"]] == ["fp32", "bf16"]
    assert all(r["tokens/s"] > 0 and r["step_p50"] > 0 for r in result["train"])
    combos = [(r["math"], r["batch"], r["beam"]) for r in result["infer"]]
    assert combos == [(m, b, k) for m in ("fp32", "bf16") for b in (1, 3) for k in (1, 2)]
    for r in result["infer"]:
        # A random model may emit the end token early, never beyond --decode-len.
        assert 1 <= r["tokens/sentence"] <= 4
        assert r["tokens/s"] == pytest.approx(r["sentences/s"] * r["tokens/sentence"])
        assert r["latency_p50"] <= r["latency_p100"]
    assert "| math | batch | beam |" in capsys.readouterr().out
