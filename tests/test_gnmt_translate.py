"""gnmt.translate: one output line per input line, stdin/stdout, errors that name the
file and line and keep earlier outputs, benchmark table, batching invariance.

The model is small and random: translations are gibberish, but their structure and
their independence from batching are what is tested. PAD, BOS and EOS are made
unreachable, so every hypothesis runs to --max-length and is never empty.
"""

import io
import sys

import pytest
import sacrebleu

from gnmt.translate import corpus_bleu, main, parse_args
from tests.gnmt_fixtures import make_model, make_tokenizer, save_our_checkpoint, toy_pairs
from tests.helpers import run_python

PAIRS = toy_pairs(300)
EN = [en for en, _ in PAIRS[:8]]
DE = [de for _, de in PAIRS[:8]]


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    directory = tmp_path_factory.mktemp("gnmt")
    tokenizer = make_tokenizer(directory, PAIRS)
    return save_our_checkpoint(
        directory, make_model(tokenizer.vocab_size, never_stop=True), tokenizer
    )


def translate(checkpoint, *args):
    return main(["--model", str(checkpoint), "--max-length", "6", "--warmup", "0", *args])


def write_lines(path, lines):
    path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    return path


def read_output(path):
    return path.read_text(encoding="utf-8").split("\n")[:-1]


def test_one_output_line_per_input_line_and_empty_stays_empty(checkpoint, tmp_path):
    lines = [EN[0], "", EN[1], "   ", EN[2]]
    src = write_lines(tmp_path / "in.en", lines)
    assert translate(checkpoint, "--input", str(src), "--beam-size", "2") == 0
    out = read_output(tmp_path / "in.en.trans")
    assert len(out) == len(lines)
    assert out[1] == out[3] == ""
    assert all(out[i].strip() for i in (0, 2, 4))


def test_overlong_line_is_truncated_with_a_warning_and_translated(checkpoint, tmp_path, capsys):
    lines = [EN[0], " ".join(EN), EN[1]]
    src = write_lines(tmp_path / "long.en", lines)
    assert translate(checkpoint, "--input", str(src), "--max-input-length", "20") == 0
    err = capsys.readouterr().err
    assert f"warning: {src}:2:" in err and "truncated to 20" in err
    assert f"{src}:1:" not in err and f"{src}:3:" not in err
    out = read_output(tmp_path / "long.en.trans")
    assert len(out) == 3 and out[1].strip()


def test_stdin_input_is_translated_to_stdout(checkpoint, tmp_path, monkeypatch, capsys):
    lines = [EN[0], "", EN[1]]
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO("\n".join(lines).encode())))
    assert translate(checkpoint, "--input", "-") == 0
    from_stdin = capsys.readouterr().out.split("\n")[:-1]
    src = write_lines(tmp_path / "same.en", lines)
    translate(checkpoint, "--input", str(src))
    assert from_stdin == read_output(tmp_path / "same.en.trans")
    assert not list(tmp_path.glob("-*"))


def test_non_utf8_input_names_file_and_line_and_keeps_old_output(checkpoint, tmp_path, capsys):
    src = tmp_path / "bad.en"
    src.write_bytes(b"The dog sees the cat.\nThe caf\xe9 is old.\n")
    old = tmp_path / "bad.en.trans"
    old.write_text("from an earlier run\n", encoding="utf-8")
    assert translate(checkpoint, "--input", str(src)) == 1
    assert f"error: {src}:2: not valid UTF-8" in capsys.readouterr().err
    assert old.read_text(encoding="utf-8") == "from an earlier run\n"


def test_non_utf8_input_creates_no_output(checkpoint, tmp_path, capsys):
    src = tmp_path / "bad.en"
    src.write_bytes(b"\xff\n")
    assert translate(checkpoint, "--input", str(src)) == 1
    assert not (tmp_path / "bad.en.trans").exists()


def test_non_utf8_stdin_names_stdin_and_line(checkpoint, monkeypatch, capsys):
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(b"fine\nfine\n\xc3(\n")))
    assert translate(checkpoint, "--input", "-") == 1
    captured = capsys.readouterr()
    assert "error: <stdin>:3: not valid UTF-8" in captured.err
    assert captured.out == ""


def test_reference_with_another_line_count_is_an_error(checkpoint, tmp_path, capsys):
    src = write_lines(tmp_path / "in.en", EN[:3])
    ref = write_lines(tmp_path / "ref.de", DE[:2])
    assert translate(checkpoint, "--input", str(src), "--reference", str(ref)) == 1
    assert f"error: {ref} has 2 lines, {src} has 3" in capsys.readouterr().err
    assert not (tmp_path / "in.en.trans").exists()


def table_rows(text):
    """Markdown table lines of `text` -> header cells, then one list of cells per row."""
    rows = [
        [cell.strip() for cell in line.strip().strip("|").split("|")]
        for line in text.splitlines()
        if line.startswith("|")
    ]
    return rows[0], rows[2:]  # rows[1] is the |---| rule


def test_benchmark_table_has_a_row_per_batch_and_beam_size(checkpoint, tmp_path, capsys):
    src = write_lines(tmp_path / "in.en", EN[:5])
    ref = write_lines(tmp_path / "ref.de", DE[:5])
    args = ["--input", str(src), "--reference", str(ref), "--batch-size", "1,4", "--beam-size"]
    assert translate(checkpoint, *args, "1,2") == 0
    header, rows = table_rows(capsys.readouterr().err)
    assert header[:5] == ["batch", "beam", "bleu", "sent/s", "tok/s"]
    assert [h for h in header if h.startswith("latency")] == [
        f"latency {k} (ms)" for k in ("avg", "p50", "p90", "p95", "p99", "p100")
    ]
    assert [r[:2] for r in rows] == [["1", "1"], ["1", "2"], ["4", "1"], ["4", "2"]]
    for row in rows:
        values = [float(cell) for cell in row[2:]]
        assert values[0] >= 0.0  # BLEU of gibberish: a number, likely 0
        assert all(v > 0 for v in values[1:])


def test_batching_and_length_sorting_do_not_change_translations(checkpoint, tmp_path):
    lines = [EN[i] if i % 2 else " ".join(EN[i : i + 2]) for i in range(7)]  # mixed lengths
    src = write_lines(tmp_path / "in.en", lines)
    outputs = {}
    for batch in ("1", "4"):
        out = tmp_path / f"out{batch}.de"
        args = ["--input", str(src), "--output", str(out), "--batch-size", batch]
        assert translate(checkpoint, *args, "--beam-size", "3") == 0
        outputs[batch] = read_output(out)
    assert len(outputs["1"]) == len(lines)
    assert outputs["4"] == outputs["1"]


@pytest.mark.parametrize("flag, value", [("--batch-size", "0"), ("--beam-size", "2,x")])
def test_bad_size_lists_are_usage_errors(flag, value, capsys):
    with pytest.raises(SystemExit) as info:
        parse_args(["--model", "m.pth", "--input", "in.en", flag, value])
    assert info.value.code == 2
    assert flag in capsys.readouterr().err


@pytest.mark.slow
def test_command_line_errors_are_one_line_without_traceback(tmp_path):
    src = write_lines(tmp_path / "in.en", EN[:2])
    missing = tmp_path / "missing.pth"
    args = ["-m", "gnmt.translate", "--model", missing, "--input", src]
    proc = run_python(args, check=False, timeout=120)
    assert proc.returncode == 1
    assert proc.stderr.strip().splitlines() == [f"error: checkpoint {missing} does not exist"]
    assert not (tmp_path / "in.en.trans").exists()


def test_bleu_is_nvidias_unless_asked():
    """NVIDIA scores `sacrebleu --score-only -lc --tokenize intl`: case does not count,
    and the international tokenisation splits punctuation off numbers and symbols."""
    hyp, ref = ["Das Haus ist klein, sagte er."], ["das haus ist klein, sagte er."]
    assert corpus_bleu(hyp, ref) == pytest.approx(100.0)
    assert corpus_bleu(hyp, ref, "sacrebleu") < 70  # two words differ in case
    expected = sacrebleu.corpus_bleu(hyp, [ref], lowercase=True, tokenize="intl").score
    assert corpus_bleu(hyp, ref, "nvidia") == expected
    assert corpus_bleu(hyp, ref, "sacrebleu") == sacrebleu.corpus_bleu(hyp, [ref]).score
