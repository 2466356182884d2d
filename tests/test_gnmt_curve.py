"""scripts/gnmt_curve.py: newstest SGM files read back as written, and the per-epoch
BLEU of each seed collected from real gnmt.train runs."""

import json
import statistics

import pytest

from common.errors import UserError
from gnmt import wmt16
from scripts import gnmt_curve


def test_sgm_files_read_back_as_written(tmp_path):
    lines = [f"Satz {i} & <Tag> \"zitiert\" 'so'" for i in range(45)]
    path = tmp_path / "newstest2014-deen-ref.de.sgm"
    gnmt_curve.write_sgm(path, "newstest2014", "de", "ref", lines)
    text = path.read_text(encoding="utf-8")
    assert text.startswith('<refset setid="newstest2014" srclang="any" trglang="de">')
    assert text.count("<doc ") == 3  # 20 segments per document
    assert "&amp; &lt;Tag&gt;" in text
    assert wmt16.sgm_to_text(path, tmp_path / "out.de") == 45
    assert (tmp_path / "out.de").read_text(encoding="utf-8").splitlines() == lines


@pytest.mark.slow
def test_each_seed_is_scored_after_each_epoch(tmp_path, capsys):
    argv = ["--out-dir", str(tmp_path), "--seeds", "1,2", "--pairs", "400", "--test", "30",
            "--epochs", "2", "--hidden-size", "16", "--threads", "1"]  # fmt: skip
    assert gnmt_curve.main(argv) == 0
    report = json.loads((tmp_path / "curve.json").read_text(encoding="utf-8"))
    curve = report["curve"]
    assert [row["epoch"] for row in curve] == [1, 2]
    steps = curve[0]["step"]
    assert steps > 0 and curve[1]["step"] == 2 * steps
    for row in curve:
        seeds = [row["seed 1"], row["seed 2"]]
        assert row["mean"] == pytest.approx(statistics.fmean(seeds))
    for seed in (1, 2):  # the values are the runs' own logged BLEU
        log = tmp_path / f"seed_{seed}" / "log.json"
        assert [r["bleu"] for r in gnmt_curve.epoch_bleu(log)] == [r[f"seed {seed}"] for r in curve]
    assert report["final"]["mean"] == pytest.approx(curve[-1]["mean"])
    assert (tmp_path / "data" / "sgm" / "newstest2014-deen-src.en.sgm").is_file()
    assert "| epoch | step | seed 1 | seed 2 | mean |" in (tmp_path / "curve.md").read_text()
    with pytest.raises(UserError, match="seed_1.*earlier run"):
        gnmt_curve.curve(gnmt_curve.parse_args(argv))


def test_flags_it_sets_itself_are_refused_after_the_separator(capsys):
    with pytest.raises(SystemExit):
        gnmt_curve.parse_args(["--out-dir", "x", "--", "--seed", "4"])
    assert "--seed is set by this script" in capsys.readouterr().err
