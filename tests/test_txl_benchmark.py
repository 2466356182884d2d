"""transformer_xl.benchmark: runs end to end on a tiny model and reports what it promises."""

import json

from transformer_xl import benchmark


def test_benchmark_reports_training_and_each_runtime(tmp_path):
    out = tmp_path / "bench.json"
    args = [
        "--device", "cpu", "--math", "fp32,bf16", "--model", "small", "--vocab_size", "300",
        "--batch_size", "2", "--tgt_len", "8", "--mem_len", "8", "--warmup", "1", "--steps",
        "2", "--eval_batch_size", "2", "--eval_tgt_len", "4", "--eval_mem_len", "8",
        "--types", "pytorch,torchscript", "--infer_warmup", "1", "--infer_steps", "2",
        "--json", str(out),
    ]  # fmt: skip
    assert benchmark.main(args) == 0
    result = json.loads(out.read_text())
    assert [r["math"] for r in result["train"]] == ["fp32", "bf16"]
    assert all(r["tokens/s"] > 0 and r["step_p50"] > 0 for r in result["train"])
    runs = [(r["math"], r["type"]) for r in result["infer"]]
    assert runs == [(m, t) for m in ("fp32", "bf16") for t in ("pytorch", "torchscript")]
    assert all(r["latency_p50"] <= r["latency_p100"] for r in result["infer"])
    assert result["setting"]["model"] == "small"
