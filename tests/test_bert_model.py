"""BERT model: every piece against a float64 reference written out here, padding
invariance, Hugging Face and NVIDIA checkpoints, saving, bf16 autocast, vocabulary checks."""

import argparse
import json
import logging
import math

import pytest
import torch

from bert.model import (
    BertConfig,
    BertForPreTraining,
    BertForQuestionAnswering,
    BertForSequenceClassification,
    BertModel,
    check_vocab,
    padding_mask,
)
from bert.tokenization import FullTokenizer
from common.checkpoint import CheckpointError

try:
    import transformers
except ImportError:
    transformers = None
needs_transformers = pytest.mark.skipif(
    transformers is None, reason="needs Hugging Face transformers"
)

TINY = dict(
    vocab_size=99,
    hidden_size=32,
    num_hidden_layers=2,
    num_attention_heads=4,
    intermediate_size=37,
    max_position_embeddings=64,
)
B, S = 3, 9


def tiny_config(**overrides) -> BertConfig:
    return BertConfig(**{**TINY, **overrides})


def make(cls, seed=0, **kwargs):
    """A tiny model in eval mode; initializer_range 0.2 so that logits are not all ~0."""
    torch.manual_seed(seed)
    return cls(tiny_config(initializer_range=0.2), **kwargs).eval()


def batch(seed=1, lengths=(9, 6, 4)):
    """input_ids, token_type_ids, attention_mask [B, S]; row b holds lengths[b] tokens."""
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, TINY["vocab_size"], (B, S), generator=g)
    types = torch.randint(0, 2, (B, S), generator=g)
    mask = (torch.arange(S)[None, :] < torch.tensor(lengths)[:, None]).long()
    return ids, types, mask


# --------------------------------------------------------------------- float64 reference


def ref_linear(sd, name, x):
    return x @ sd[name + ".weight"].T + sd[name + ".bias"]


def ref_layer_norm(sd, name, x, eps=1e-12):
    mean = x.mean(-1, keepdim=True)
    var = ((x - mean) ** 2).mean(-1, keepdim=True)
    return (x - mean) / torch.sqrt(var + eps) * sd[name + ".weight"] + sd[name + ".bias"]


def ref_gelu(x):
    return 0.5 * x * (1.0 + torch.erf(x / math.sqrt(2.0)))


def ref_attention(sd, name, x, mask, heads):
    """Explicit per-head softmax(q k^T / sqrt(d)) v with padded keys excluded."""
    q, k, v = (ref_linear(sd, f"{name}.{p}", x) for p in ("query", "key", "value"))
    d = x.shape[-1] // heads
    contexts = []
    for h in range(heads):
        cols = slice(h * d, (h + 1) * d)
        scores = q[..., cols] @ k[..., cols].transpose(-1, -2) / math.sqrt(d)
        scores = scores.masked_fill(mask[:, None, :] == 0, float("-inf"))
        contexts.append(torch.softmax(scores, dim=-1) @ v[..., cols])
    return torch.cat(contexts, dim=-1)


def ref_layer(sd, name, x, mask, heads):
    context = ref_attention(sd, f"{name}.attention.self", x, mask, heads)
    x = ref_layer_norm(
        sd,
        f"{name}.attention.output.LayerNorm",
        x + ref_linear(sd, f"{name}.attention.output.dense", context),
    )
    inner = ref_gelu(ref_linear(sd, f"{name}.intermediate.dense", x))
    return ref_layer_norm(
        sd, f"{name}.output.LayerNorm", x + ref_linear(sd, f"{name}.output.dense", inner)
    )


def ref_embeddings(sd, ids, types):
    positions = torch.arange(ids.shape[1])
    x = (
        sd["embeddings.word_embeddings.weight"][ids]
        + sd["embeddings.position_embeddings.weight"][positions]
        + sd["embeddings.token_type_embeddings.weight"][types]
    )
    return ref_layer_norm(sd, "embeddings.LayerNorm", x)


def ref_bert(sd, ids, types, mask, config):
    """(sequence [B, S, H], pooled [B, H]) from a BertModel state dict (float64)."""
    x = ref_embeddings(sd, ids, types)
    for i in range(config.num_hidden_layers):
        x = ref_layer(sd, f"encoder.layer.{i}", x, mask, config.num_attention_heads)
    pooled = (
        torch.tanh(ref_linear(sd, "pooler.dense", x[:, 0])) if "pooler.dense.weight" in sd else None
    )
    return x, pooled


def f64_state(model, prefix=""):
    """The model's float64 state dict, `prefix` removed from the keys that have it."""
    return {k.removeprefix(prefix): v.double() for k, v in model.state_dict().items()}


def run64(model, *inputs):
    with torch.no_grad():
        return model.double()(*inputs)


# ---------------------------------------------------------------- modules vs reference


def test_embeddings_are_word_plus_position_plus_type_then_layer_norm():
    model = make(BertModel).double()
    ids, types, _ = batch()
    with torch.no_grad():
        out = model.embeddings(ids, types)
    torch.testing.assert_close(
        out, ref_embeddings(f64_state(model), ids, types), rtol=0, atol=1e-12
    )


def test_self_attention_matches_explicit_per_head_softmax_with_padding_mask():
    model = make(BertModel).double()
    _, _, mask = batch()
    x = torch.randn(B, S, 32, dtype=torch.float64)
    with torch.no_grad():
        out = model.encoder.layer[0].attention.self(x, padding_mask(mask, x.dtype))
    expected = ref_attention(f64_state(model), "encoder.layer.0.attention.self", x, mask, 4)
    torch.testing.assert_close(out, expected, rtol=0, atol=1e-12)


def test_layer_is_post_layer_norm_with_exact_gelu():
    model = make(BertModel).double()
    _, _, mask = batch()
    x = torch.randn(B, S, 32, dtype=torch.float64)
    with torch.no_grad():
        out = model.encoder.layer[1](x, padding_mask(mask, x.dtype))
    expected = ref_layer(f64_state(model), "encoder.layer.1", x, mask, 4)
    torch.testing.assert_close(out, expected, rtol=0, atol=1e-12)


def test_bert_model_sequence_and_pooled_outputs_match_reference():
    model = make(BertModel)
    ids, types, mask = batch()
    sequence, pooled = run64(model, ids, types, mask)
    ref_sequence, ref_pooled = ref_bert(f64_state(model), ids, types, mask, model.config)
    torch.testing.assert_close(sequence, ref_sequence, rtol=0, atol=1e-12)
    torch.testing.assert_close(pooled, ref_pooled, rtol=0, atol=1e-12)


def test_pretraining_heads_match_reference_with_decoder_tied_to_embeddings():
    model = make(BertForPreTraining)
    ids, types, mask = batch()
    mlm, nsp = run64(model, ids, types, mask)
    sd = f64_state(model, "bert.")
    sequence, pooled = ref_bert(sd, ids, types, mask, model.config)
    h = ref_gelu(ref_linear(sd, "cls.predictions.transform.dense", sequence))
    h = ref_layer_norm(sd, "cls.predictions.transform.LayerNorm", h)
    expected_mlm = h @ sd["embeddings.word_embeddings.weight"].T + sd["cls.predictions.bias"]
    assert mlm.shape == (B, S, 99) and nsp.shape == (B, 2)
    torch.testing.assert_close(mlm, expected_mlm, rtol=0, atol=1e-12)
    torch.testing.assert_close(
        nsp, ref_linear(sd, "cls.seq_relationship", pooled), rtol=0, atol=1e-12
    )
    assert model.cls.predictions.decoder.weight is model.bert.embeddings.word_embeddings.weight


def test_masked_lm_positions_give_the_logits_of_those_positions():
    model = make(BertForPreTraining)
    ids, types, mask = batch()
    positions = torch.tensor([[0, 5], [3, 1], [2, 2]])
    with torch.no_grad():
        full, nsp = model(ids, types, mask)
        picked, nsp_picked = model(ids, types, mask, masked_lm_positions=positions)
    assert picked.shape == (B, 2, 99)
    torch.testing.assert_close(picked, full[torch.arange(B)[:, None], positions])
    torch.testing.assert_close(nsp_picked, nsp)


def test_question_answering_logits_match_reference_and_model_has_no_pooler():
    model = make(BertForQuestionAnswering)
    ids, types, mask = batch()
    start, end = run64(model, ids, types, mask)
    sd = f64_state(model, "bert.")
    sequence, _ = ref_bert(sd, ids, types, mask, model.config)
    logits = ref_linear(sd, "qa_outputs", sequence)
    assert start.shape == end.shape == (B, S)
    torch.testing.assert_close(start, logits[..., 0], rtol=0, atol=1e-12)
    torch.testing.assert_close(end, logits[..., 1], rtol=0, atol=1e-12)
    assert model.bert.pooler is None


def test_sequence_classification_logits_match_reference():
    model = make(BertForSequenceClassification, num_labels=3)
    ids, types, mask = batch()
    logits = run64(model, ids, types, mask)
    sd = f64_state(model, "bert.")
    _, pooled = ref_bert(sd, ids, types, mask, model.config)
    assert logits.shape == (B, 3)
    torch.testing.assert_close(logits, ref_linear(sd, "classifier", pooled), rtol=0, atol=1e-12)


def test_defaults_are_token_type_zero_and_no_padding():
    model = make(BertForPreTraining)
    ids, _, _ = batch()
    with torch.no_grad():
        implicit = model(ids)
        explicit = model(ids, torch.zeros_like(ids), torch.ones_like(ids))
    torch.testing.assert_close(implicit, explicit)


def test_padding_never_changes_the_outputs_of_real_tokens():
    model = make(BertForQuestionAnswering)
    ids, types, _ = batch(lengths=(9, 9, 9))
    n = 5
    short = (ids[:, :n], types[:, :n], torch.ones(B, n, dtype=torch.long))
    # The same tokens followed by padding of arbitrary ids and types.
    mask = torch.zeros(B, S, dtype=torch.long)
    mask[:, :n] = 1
    with torch.no_grad():
        start_short, end_short = model(*short)
        start, end = model(ids, types, mask)
    torch.testing.assert_close(start[:, :n], start_short, rtol=0, atol=1e-6)
    torch.testing.assert_close(end[:, :n], end_short, rtol=0, atol=1e-6)


def test_padding_never_changes_classification_logits():
    model = make(BertForSequenceClassification)
    ids, types, mask = batch(lengths=(9, 6, 4))
    with torch.no_grad():
        padded = model(ids, types, mask)
        alone = torch.cat(
            [model(ids[b : b + 1, :n], types[b : b + 1, :n]) for b, n in enumerate((9, 6, 4))]
        )
    torch.testing.assert_close(padded, alone, rtol=0, atol=1e-6)


def test_dropout_acts_in_training_only():
    model = make(BertForPreTraining)
    ids, types, mask = batch()
    with torch.no_grad():
        eval_a, eval_b = model(ids, types, mask)[0], model(ids, types, mask)[0]
        model.train()
        train_a, train_b = model(ids, types, mask)[0], model(ids, types, mask)[0]
    assert torch.equal(eval_a, eval_b)
    assert not torch.equal(train_a, train_b)


def test_init_weights_normal_linear_and_embeddings_zero_biases_unit_layer_norm():
    torch.manual_seed(0)
    model = BertForPreTraining(tiny_config(hidden_size=64, intermediate_size=256))
    dense = model.bert.encoder.layer[0].intermediate.dense
    assert abs(dense.weight.std().item() - 0.02) < 0.002
    assert abs(model.bert.embeddings.word_embeddings.weight.std().item() - 0.02) < 0.002
    assert torch.equal(dense.bias, torch.zeros_like(dense.bias))
    assert torch.equal(model.cls.predictions.bias, torch.zeros(99))
    norm = model.bert.encoder.layer[0].output.LayerNorm
    assert torch.equal(norm.weight, torch.ones(64)) and torch.equal(norm.bias, torch.zeros(64))


def test_sequence_longer_than_max_positions_is_a_clear_error():
    model = make(BertModel)
    with pytest.raises(ValueError, match="sequence length 65 exceeds.*max_position_embeddings=64"):
        model(torch.zeros(1, 65, dtype=torch.long))


def test_forward_traces_as_one_graph_for_torch_compile():
    model = make(BertForPreTraining)
    ids, types, mask = batch()
    compiled = torch.compile(model, backend="eager", fullgraph=True)
    with torch.no_grad():
        torch.testing.assert_close(compiled(ids, types, mask), model(ids, types, mask))


def test_bf16_autocast_on_cpu_is_close_to_fp32():
    """bf16 keeps 8 bits of mantissa: logits agree to 3% of their spread (tolerance stated)."""
    model = make(BertForPreTraining)
    ids, types, mask = batch()
    with torch.no_grad():
        mlm32, nsp32 = model(ids, types, mask)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            mlm16, nsp16 = model(ids, types, mask)
    assert mlm16.dtype == torch.bfloat16
    for low, full in ((mlm16, mlm32), (nsp16, nsp32)):
        assert (low.float() - full).abs().max() <= 0.03 * full.abs().max()


# ------------------------------------------------------------------------------ config


def test_config_presets_and_json_round_trip_ignoring_foreign_keys(tmp_path):
    assert BertConfig.base() == BertConfig()
    large = BertConfig.large()
    assert (large.hidden_size, large.num_hidden_layers, large.num_attention_heads) == (1024, 24, 16)
    assert large.intermediate_size == 4096
    path = tmp_path / "config.json"
    path.write_text(
        json.dumps({**tiny_config().to_dict(), "model_type": "bert", "architectures": ["X"]})
    )
    assert BertConfig.from_json_file(path) == tiny_config()


def test_config_errors_are_clear(tmp_path):
    with pytest.raises(ValueError, match="not a multiple of num_attention_heads"):
        BertConfig(hidden_size=30, num_attention_heads=4)
    with pytest.raises(ValueError, match="hidden_act 'swishy'"):
        BertConfig(hidden_act="swishy")
    bad = tmp_path / "bert_config.json"
    bad.write_text('{"hidden_size": 32,\n oops}')
    with pytest.raises(ValueError, match=r"bert_config.json, line 2: malformed JSON"):
        BertConfig.from_json_file(bad)


# ------------------------------------------------------------------ our own checkpoints


def same_outputs(a, b, *inputs, atol=1e-5):
    with torch.no_grad():
        out_a, out_b = a(*inputs), b(*inputs)
    for x, y in zip(
        out_a if isinstance(out_a, tuple) else (out_a,),
        out_b if isinstance(out_b, tuple) else (out_b,),
        strict=True,
    ):
        torch.testing.assert_close(x, y, rtol=0, atol=atol)


def test_save_pretrained_round_trip_stores_tied_decoder_once(tmp_path):
    from safetensors import safe_open

    model = make(BertForPreTraining)
    model.save_pretrained(tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    assert config["model_type"] == "bert" and config["architectures"] == ["BertForPreTraining"]
    with safe_open(str(tmp_path / "model.safetensors"), "pt") as f:
        keys = set(f.keys())
    assert (
        "cls.predictions.decoder.weight" not in keys
        and "bert.embeddings.word_embeddings.weight" in keys
    )
    loaded = BertForPreTraining.from_pretrained(tmp_path)
    assert loaded.load_report.newly_initialized == [] and loaded.load_report.unused == []
    assert loaded.cls.predictions.decoder.weight is loaded.bert.embeddings.word_embeddings.weight
    same_outputs(model, loaded, *batch(), atol=0)


def test_encoder_loads_from_pretraining_checkpoint_and_back(tmp_path):
    pretraining = make(BertForPreTraining)
    pretraining.save_pretrained(tmp_path / "pt")
    encoder = BertModel.from_pretrained(tmp_path / "pt")
    assert encoder.load_report.unused == sorted(
        k for k in pretraining.state_dict() if k.startswith("cls.") and "decoder" not in k
    )
    same_outputs(pretraining.bert, encoder, *batch(), atol=0)
    encoder.save_pretrained(tmp_path / "enc")  # keys without "bert."
    again = BertForPreTraining.from_pretrained(tmp_path / "enc")
    assert all(k.startswith("cls.") for k in again.load_report.newly_initialized)
    same_outputs(encoder, again.bert, *batch(), atol=0)


def test_fine_tuning_from_pretraining_reports_the_new_head(tmp_path, caplog):
    make(BertForPreTraining).save_pretrained(tmp_path)
    with caplog.at_level(logging.WARNING, logger="bert.checkpoints"):
        qa = BertForQuestionAnswering.from_pretrained(tmp_path)
    assert qa.load_report.newly_initialized == ["qa_outputs.bias", "qa_outputs.weight"]
    assert "bert.pooler.dense.weight" in qa.load_report.unused
    assert "newly initialised" in caplog.text and "qa_outputs.weight" in caplog.text
    classifier = BertForSequenceClassification.from_pretrained(tmp_path, num_labels=5)
    assert classifier.num_labels == 5
    assert classifier.load_report.newly_initialized == ["classifier.bias", "classifier.weight"]


def test_classifier_keeps_the_checkpoint_number_of_labels(tmp_path):
    make(BertForSequenceClassification, num_labels=3).save_pretrained(tmp_path)
    assert BertForSequenceClassification.from_pretrained(tmp_path).num_labels == 3


def test_missing_encoder_weights_are_an_error(tmp_path):
    model = make(BertModel)
    state = {k: v for k, v in model.state_dict().items() if "layer.1.output.dense" not in k}
    torch.save(state, tmp_path / "enc.pt")
    (tmp_path / "bert_config.json").write_text(json.dumps(model.config.to_dict()))
    with pytest.raises(
        CheckpointError, match=r"missing key bert.encoder.layer.1.output.dense.bias"
    ):
        BertModel.from_pretrained(tmp_path / "enc.pt")


def test_unknown_weights_and_wrong_shapes_are_errors(tmp_path):
    model = make(BertModel)
    (tmp_path / "bert_config.json").write_text(json.dumps(model.config.to_dict()))
    torch.save({**model.state_dict(), "encoder.rel_pos.weight": torch.zeros(2)}, tmp_path / "a.pt")
    with pytest.raises(CheckpointError, match="unknown key bert.encoder.rel_pos.weight"):
        BertModel.from_pretrained(tmp_path / "a.pt")
    config = json.loads((tmp_path / "bert_config.json").read_text())
    (tmp_path / "bert_config.json").write_text(json.dumps({**config, "intermediate_size": 40}))
    with pytest.raises(
        CheckpointError,
        match=r"intermediate.dense.weight has shape \[37, 32\] in the checkpoint, \[40, 32\]",
    ):
        BertModel.from_pretrained(tmp_path / "a.pt")


def test_damaged_or_foreign_files_are_clear_errors(tmp_path):
    model = make(BertModel)
    (tmp_path / "bert_config.json").write_text(json.dumps(model.config.to_dict()))
    torch.save({"model": model.state_dict()}, tmp_path / "full.pt")
    data = (tmp_path / "full.pt").read_bytes()
    (tmp_path / "cut.pt").write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="truncated"):
        BertModel.from_pretrained(tmp_path / "cut.pt")
    (tmp_path / "empty.pt").write_bytes(b"")
    with pytest.raises(CheckpointError, match="empty"):
        BertModel.from_pretrained(tmp_path / "empty.pt")
    with pytest.raises(CheckpointError, match="does not exist"):
        BertModel.from_pretrained(tmp_path / "nope.pt")
    with pytest.raises(
        CheckpointError, match="holds neither model.safetensors nor pytorch_model.bin"
    ):
        BertModel.from_pretrained(tmp_path)


def test_pickled_objects_need_weights_only_false(tmp_path):
    model = make(BertModel)
    (tmp_path / "bert_config.json").write_text(json.dumps(model.config.to_dict()))
    torch.save(
        {"model": model.state_dict(), "args": argparse.Namespace(lr=1e-3)}, tmp_path / "ckpt.pt"
    )
    with pytest.raises(CheckpointError, match="weights_only=False"):
        BertModel.from_pretrained(tmp_path / "ckpt.pt")
    loaded = BertModel.from_pretrained(tmp_path / "ckpt.pt", weights_only=False)
    same_outputs(model, loaded, *batch(), atol=0)


# ------------------------------------------------------------------------ NVIDIA format


def nvidia_state(model: BertForPreTraining, pad_to: int = 8):
    """The model's weights as NVIDIA's BERT names them (dense_act), with the vocabulary
    padded to a multiple of `pad_to` as NVIDIA's pre-training does, under `module.`."""
    state = {}
    for key, value in model.state_dict().items():
        for part in ("intermediate.dense.", "pooler.dense.", "transform.dense."):
            key = key.replace(part, part.replace("dense.", "dense_act."))
        state["module." + key] = value.clone()
    vocab = model.config.vocab_size
    extra = -vocab % pad_to
    for key in (
        "module.bert.embeddings.word_embeddings.weight",
        "module.cls.predictions.decoder.weight",
    ):
        state[key] = torch.cat([state[key], torch.randn(extra, model.config.hidden_size)])
    state["module.cls.predictions.decoder.weight"] = state[
        "module.bert.embeddings.word_embeddings.weight"
    ]
    state["module.cls.predictions.bias"] = torch.cat(
        [state["module.cls.predictions.bias"], torch.zeros(extra)]
    )
    return state


def test_loads_nvidia_checkpoint_with_dense_act_names_and_padded_vocab(tmp_path):
    model = make(BertForPreTraining)
    torch.save(
        {"model": nvidia_state(model), "epoch": 1, "files": [0, "a.hdf5"]},
        tmp_path / "ckpt_8601.pt",
    )
    (tmp_path / "bert_config.json").write_text(
        json.dumps({**model.config.to_dict(), "output_all_encoded_layers": False})
    )
    loaded = BertForPreTraining.from_pretrained(tmp_path / "ckpt_8601.pt")
    assert loaded.config.vocab_size == 104  # 99 padded to a multiple of 8
    ids, types, mask = batch()
    with torch.no_grad():
        mlm, nsp = model(ids, types, mask)
        mlm_nv, nsp_nv = loaded(ids, types, mask)
    torch.testing.assert_close(mlm_nv[..., :99], mlm, rtol=0, atol=1e-5)
    torch.testing.assert_close(nsp_nv, nsp, rtol=0, atol=1e-5)


def test_nvidia_squad_checkpoint_loads_qa_head_with_config_argument(tmp_path):
    model = make(BertForQuestionAnswering)
    state = {
        k.replace("pooler.dense.", "pooler.dense_act."): v for k, v in model.state_dict().items()
    }
    state["bert.pooler.dense_act.weight"] = torch.zeros(32, 32)  # NVIDIA's QA model has a pooler
    state["bert.pooler.dense_act.bias"] = torch.zeros(32)
    torch.save({"model": state}, tmp_path / "bert_large_qa.pt")
    with pytest.raises(CheckpointError, match="pass config="):
        BertForQuestionAnswering.from_pretrained(tmp_path / "bert_large_qa.pt")
    (tmp_path / "cfg").mkdir()
    (tmp_path / "cfg" / "bert_config.json").write_text(json.dumps(model.config.to_dict()))
    loaded = BertForQuestionAnswering.from_pretrained(
        tmp_path / "bert_large_qa.pt", config=tmp_path / "cfg" / "bert_config.json"
    )
    assert loaded.load_report.newly_initialized == []
    same_outputs(model, loaded, *batch(), atol=0)


# ------------------------------------------------------------------------- vocabularies


def write_vocab(path, n):
    path.write_text("".join(f"tok{i}\n" for i in range(n)), encoding="utf-8")
    return path


def test_check_vocab_names_both_files_on_mismatch(tmp_path):
    make(BertForPreTraining).save_pretrained(tmp_path / "model")
    model = BertForPreTraining.from_pretrained(tmp_path / "model")
    vocab = write_vocab(tmp_path / "vocab.txt", 120)
    with pytest.raises(ValueError, match=r"vocab.txt has 120 tokens but checkpoint .*model has 99"):
        check_vocab(model, vocab)
    with pytest.raises(ValueError, match="has 120 tokens"):
        check_vocab(model.config, FullTokenizer(vocab, do_lower_case=True, fast=False))


def test_check_vocab_accepts_equal_size_and_nvidia_padding(tmp_path):
    check_vocab(tiny_config(), write_vocab(tmp_path / "v99.txt", 99))
    check_vocab(tiny_config(vocab_size=30528), write_vocab(tmp_path / "v.txt", 30522))
    with pytest.raises(ValueError):
        check_vocab(tiny_config(vocab_size=30536), tmp_path / "v.txt")


def test_model_directory_with_a_foreign_vocab_is_refused(tmp_path):
    make(BertForPreTraining).save_pretrained(
        tmp_path, vocab_file=write_vocab(tmp_path / "other.txt", 50)
    )
    with pytest.raises(ValueError, match="has 50 tokens"):
        BertForPreTraining.from_pretrained(tmp_path)


# ------------------------------------------------------------------ Hugging Face format


def hf_config(**extra):
    return transformers.BertConfig(**{**TINY, "initializer_range": 0.2, **extra})


@pytest.fixture(scope="module")
def hf_pretraining_dir(tmp_path_factory):
    torch.manual_seed(0)
    model = transformers.BertForPreTraining(hf_config()).eval()
    path = tmp_path_factory.mktemp("hf_pretraining")
    model.save_pretrained(path)
    return path, model


@needs_transformers
def test_loads_hugging_face_pretraining_model_exactly(hf_pretraining_dir):
    path, hf = hf_pretraining_dir
    ours = BertForPreTraining.from_pretrained(path)
    ids, types, mask = batch()
    with torch.no_grad():
        expected = hf(input_ids=ids, token_type_ids=types, attention_mask=mask)
        mlm, nsp = ours(ids, types, mask)
    torch.testing.assert_close(mlm, expected.prediction_logits, rtol=0, atol=1e-5)
    torch.testing.assert_close(nsp, expected.seq_relationship_logits, rtol=0, atol=1e-5)


@needs_transformers
def test_loads_hugging_face_question_answering_and_classification(tmp_path):
    ids, types, mask = batch()
    torch.manual_seed(1)
    hf_qa = transformers.BertForQuestionAnswering(hf_config()).eval()
    hf_qa.save_pretrained(tmp_path / "qa")
    qa = BertForQuestionAnswering.from_pretrained(tmp_path / "qa")
    assert qa.load_report.newly_initialized == []
    hf_cls = transformers.BertForSequenceClassification(hf_config(num_labels=3)).eval()
    hf_cls.save_pretrained(tmp_path / "cls")
    classifier = BertForSequenceClassification.from_pretrained(tmp_path / "cls")
    assert classifier.num_labels == 3
    with torch.no_grad():
        expected_qa = hf_qa(input_ids=ids, token_type_ids=types, attention_mask=mask)
        start, end = qa(ids, types, mask)
        expected_logits = hf_cls(input_ids=ids, token_type_ids=types, attention_mask=mask).logits
        logits = classifier(ids, types, mask)
    torch.testing.assert_close(start, expected_qa.start_logits, rtol=0, atol=1e-5)
    torch.testing.assert_close(end, expected_qa.end_logits, rtol=0, atol=1e-5)
    torch.testing.assert_close(logits, expected_logits, rtol=0, atol=1e-5)


@needs_transformers
@pytest.mark.parametrize(
    ("ours_cls", "hf_name", "kwargs"),
    [
        (BertForPreTraining, "BertForPreTraining", {}),
        (BertForQuestionAnswering, "BertForQuestionAnswering", {}),
        (BertForSequenceClassification, "BertForSequenceClassification", {"num_labels": 3}),
    ],
)
def test_our_save_pretrained_loads_in_transformers_with_same_logits(
    tmp_path, ours_cls, hf_name, kwargs
):
    ours = make(ours_cls, **kwargs)
    ours.save_pretrained(tmp_path)
    hf, info = getattr(transformers, hf_name).from_pretrained(tmp_path, output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"] and not info["mismatched_keys"]
    ids, types, mask = batch()
    with torch.no_grad():
        expected = ours(ids, types, mask)
        got = hf.eval()(input_ids=ids, token_type_ids=types, attention_mask=mask)
    expected = expected if isinstance(expected, tuple) else (expected,)
    for ours_out, hf_out in zip(expected, got.values(), strict=True):
        torch.testing.assert_close(hf_out, ours_out, rtol=0, atol=1e-5)


@needs_transformers
def test_old_hugging_face_bin_with_gamma_beta_position_ids_and_decoder(
    tmp_path, hf_pretraining_dir
):
    _, hf = hf_pretraining_dir
    state = {}
    for key, value in hf.state_dict().items():
        key = key.replace("LayerNorm.weight", "LayerNorm.gamma").replace(
            "LayerNorm.bias", "LayerNorm.beta"
        )
        state[key] = value
    state["bert.embeddings.position_ids"] = torch.arange(64)[None]
    assert "cls.predictions.decoder.weight" in state
    torch.save(state, tmp_path / "pytorch_model.bin")
    hf.config.to_json_file(tmp_path / "config.json")
    ours = BertForPreTraining.from_pretrained(tmp_path)
    ids, types, mask = batch()
    with torch.no_grad():
        expected = hf(input_ids=ids, token_type_ids=types, attention_mask=mask).prediction_logits
        torch.testing.assert_close(ours(ids, types, mask)[0], expected, rtol=0, atol=1e-5)
