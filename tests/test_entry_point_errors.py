"""Device and precision errors come before any work, as one line naming the flag typed.

Every entry point is run as a user runs it (python -m MODULE ...), on this CPU-only
machine: `--device cuda`, fp16 asked for in each spelling the script has, and
conflicting precision flags. Data paths do not exist: the flag error must come first.
"""

import pytest
import torch

from tests.helpers import run_python

NOPE = "/nonexistent"
ENTRY_POINTS = {
    "gnmt.train": ["--dataset-dir", NOPE],
    "gnmt.translate": ["--model", NOPE, "--input", NOPE],
    "gnmt.benchmark": [],
    "transformer_xl.train": ["--data", NOPE, "--config_file", ""],
    "transformer_xl.eval": ["--data", NOPE, "--model", NOPE],
    "transformer_xl.benchmark": [],
    "bert.run_pretraining": ["--input_dir", NOPE, "--output_dir", NOPE, "--setup_file", ""],
    "bert.run_squad": ["--do_train", "--train_file", NOPE, "--output_dir", NOPE,
                       "--init_checkpoint", NOPE, "--setup_file", ""],
    "bert.run_glue": ["--task_name", "SST-2", "--do_train", "--data_dir", NOPE,
                      "--output_dir", NOPE, "--init_checkpoint", NOPE, "--setup_file", ""],
    "bert.run_ner": ["--do_train", "--train_file", NOPE, "--output_dir", NOPE,
                     "--init_checkpoint", NOPE, "--setup_file", ""],
    "bert.run_re": ["--do_train", "--data_dir", NOPE, "--output_dir", NOPE,
                    "--init_checkpoint", NOPE],
    "bert.benchmark": [],
    "scripts.toolkit_check": ["--save-dir", NOPE],
    "scripts.benchmark": ["--out-dir", NOPE],
    "scripts.bench_optim": [],
}  # fmt: skip

# Training and evaluation entry points share one precision contract (--math, its alias
# --precision and the shorthands --fp16 / --amp); each spelling is tried somewhere.
FP16_SPELLINGS = {
    "gnmt.train": [["--math", "fp16"], ["--amp"]],
    "gnmt.translate": [["--precision", "fp16"]],
    "gnmt.benchmark": [["--math", "fp32,fp16"]],
    "transformer_xl.train": [["--math", "fp16"], ["--fp16"]],
    "transformer_xl.eval": [["--precision", "fp16"]],
    "transformer_xl.benchmark": [["--math", "fp16"]],
    "bert.run_pretraining": [["--amp"]],
    "bert.run_squad": [["--fp16"]],
    "bert.run_glue": [["--precision", "fp16"]],
    "bert.run_ner": [["--amp"]],
    "bert.run_re": [["--fp16"]],
    "bert.benchmark": [["--math", "fp16"]],
    "scripts.toolkit_check": [["--math", "fp16"]],
}

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(torch.cuda.is_available(), reason="checks a machine without a GPU"),
]


def one_line_error(module: str, args: list[str]) -> str:
    proc = run_python(["-W", "ignore", "-m", module, *args], check=False, timeout=120)
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode in (1, 2), (module, proc.stdout, proc.stderr)
    assert "Traceback" not in proc.stderr and len(lines) == 1, proc.stderr
    return lines[0]


@pytest.mark.parametrize("module", sorted(ENTRY_POINTS))
def test_device_cuda_without_a_gpu_names_the_flag(module):
    line = one_line_error(module, [*ENTRY_POINTS[module], "--device", "cuda"])
    assert "argument --device: 'cuda': no CUDA device" in line


@pytest.mark.parametrize(
    "module, spelling",
    [(m, s) for m, spellings in sorted(FP16_SPELLINGS.items()) for s in spellings],
    ids=lambda v: " ".join(v) if isinstance(v, list) else v,
)
def test_fp16_on_the_cpu_names_the_flag_as_typed(module, spelling):
    line = one_line_error(module, [*ENTRY_POINTS[module], *spelling, "--device", "cpu"])
    typed = spelling[0] if len(spelling) == 1 else f"{spelling[0]} fp16"
    assert f"{typed}: fp16 needs a CUDA GPU" in line
    assert "use --math bf16 or --math fp32" in line


@pytest.mark.parametrize(
    "module", ["gnmt.train", "transformer_xl.train", "transformer_xl.eval", "bert.run_glue",
               "bert.run_squad", "bert.run_pretraining"],
)  # fmt: skip
def test_fp16_shorthand_with_another_mode_is_a_conflict(module):
    line = one_line_error(module, [*ENTRY_POINTS[module], "--fp16", "--precision", "bf16"])
    assert "--precision bf16 conflicts with --fp16" in line


def test_run_main_reports_user_mistakes_in_one_line_and_keeps_tracebacks_for_bugs(capsys):
    from common import cli
    from common.errors import UserError

    def mistake():
        raise UserError("data/train.en line 3: not UTF-8")

    assert cli.run_main(mistake) == 1
    assert capsys.readouterr().err == "error: data/train.en line 3: not UTF-8\n"
    assert cli.run_main(lambda: None) == 0 and cli.run_main(lambda: 3) == 3
    with pytest.raises(ZeroDivisionError):
        cli.run_main(lambda: 1 / 0)


def test_every_reported_error_is_a_user_error():
    from bert import finetune, glue, pretraining_data, run_pretraining, squad_eval, tokenization
    from common import checkpoint, config, distributed, download, precision
    from common.errors import UserError
    from gnmt import data as gnmt_data
    from gnmt import tokenizer
    from transformer_xl import data as txl_data

    for error in (finetune.FinetuneError, glue.GlueError, pretraining_data.ShardError,
                  run_pretraining.PretrainingError, squad_eval.SquadError,
                  tokenization.VocabError, checkpoint.CheckpointError, config.ConfigError,
                  distributed.DeviceError, download.DownloadError, precision.PrecisionError,
                  gnmt_data.DataError, tokenizer.TokenizerError, txl_data.DataError):  # fmt: skip
        assert issubclass(error, UserError), error
