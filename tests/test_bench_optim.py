"""The optimizer benchmark runs end to end and reports every statistic."""

import json

from common.logging import read_dllogger
from scripts import bench_optim


def test_bench_optim_writes_table_json_and_dllogger_lines(tmp_path, capsys):
    out, log = tmp_path / "optim.json", tmp_path / "log.json"
    args = ["--config", "tiny", "--device", "cpu", "--warmup", "1", "--steps", "2"]
    assert bench_optim.main([*args, "--json", str(out), "--log-file", str(log)]) == 0
    table = capsys.readouterr().out
    assert "| optimizer |" in table and "| lamb " in table and "| adamw " in table
    result = json.loads(out.read_text())
    assert [r["optimizer"] for r in result["ms_per_step"]] == ["lamb", "adamw"]
    assert result["parameters"] == sum(
        p.numel() for p in bench_optim.bert_shaped_parameters("tiny", "cpu")
    )
    logged = [r for r in read_dllogger(log) if r["type"] == "LOG"]
    assert [r["step"] for r in logged] == [["lamb"], ["adamw"]]
    assert {"count", "avg", "p50", "p90", "p95", "p99", "p100"} <= set(logged[0]["data"])
    assert logged[0]["data"]["count"] == 2
