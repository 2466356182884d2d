"""scripts.benchmark: every model's benchmark in one report, plots, docs section."""

import json

import pytest

from scripts import benchmark

TINY = [
    "gnmt=--hidden-size 16 --vocab-size 64 --batch-size 2 --steps 1 --infer-batch-size 1 "
    "--beam-size 1 --infer-batches 1 --decode-len 3",
    "transformer_xl=--vocab_size 100 --batch_size 2 --tgt_len 4 --mem_len 4 --steps 1 "
    "--eval_tgt_len 4 --eval_mem_len 4 --infer_steps 1 --types pytorch",
    "bert=--model tiny --mode inference --batch-size 1 --seq-len 16 --steps 1 --warmup 1 "
    "--peak-size 128",
]


@pytest.mark.slow
def test_report_has_every_model_with_tables_plots_and_json(tmp_path):
    out = tmp_path / "bench"
    extra = [a for item in TINY for a in ("--extra", item)]
    assert benchmark.main(["--device", "cpu", "--out-dir", str(out), *extra]) == 0
    report = (out / "report.md").read_text()
    for model in ("gnmt", "transformer_xl", "bert"):
        assert f"### {model}" in report
        assert (out / f"{model}.json").is_file()
    assert "| math |" in report and "torch" in report
    data = json.loads((out / "report.json").read_text())
    assert data["setting"]["device_kind"] == "cpu"
    plots = [p for entry in data["results"].values() for p in entry["plots"]]
    assert plots and all(p.endswith(".png") for p in plots)
    assert all((out / p.rsplit("/", 1)[1]).read_bytes()[:4] == b"\x89PNG" for p in plots)


def test_docs_section_of_a_device_is_replaced_and_others_kept(tmp_path):
    docs = tmp_path / "PERFORMANCE.md"
    docs.write_text("# Performance\n\nIntro.\n")
    benchmark.update_docs(docs, "GPU A", "## GPU A\nold\n")
    benchmark.update_docs(docs, "CPU B", "## CPU B\nfigures\n")
    benchmark.update_docs(docs, "GPU A", "## GPU A\nnew\n")
    text = docs.read_text()
    assert text.startswith("# Performance\n\nIntro.\n")
    assert "new" in text and "old" not in text and "figures" in text
    assert text.count("<!-- benchmark: GPU A -->") == 1
