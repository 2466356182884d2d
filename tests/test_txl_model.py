"""Transformer-XL model: against an explicit float64 reference, memory, adaptive softmax,
NVIDIA's parameter names and checkpoints, autocast, initialisation."""

import argparse
import collections
import math
import re
import sys
import types

import pytest
import torch

from common.checkpoint import (
    Checkpointer,
    CheckpointError,
    capture_training_state,
    save_atomic,
)
from transformer_xl import data as txl_data
from transformer_xl.model import MemTransformerLM, init_weights, load_checkpoint, model_config

V, D_MODEL, N_HEAD, D_HEAD, D_INNER, N_LAYER = 60, 16, 2, 5, 24, 2
CUTOFFS = [20, 40]


def make_model(seed=0, **kw):
    """A double-precision model in eval mode with training-like (non-zero) weights."""
    config = dict(
        n_token=V,
        n_layer=N_LAYER,
        n_head=N_HEAD,
        d_model=D_MODEL,
        d_head=D_HEAD,
        d_inner=D_INNER,
        dropout=0.3,
        dropatt=0.2,
        tgt_len=5,
        ext_len=0,
        mem_len=5,
    )
    config.update(kw)
    torch.manual_seed(seed)
    model = MemTransformerLM(**config)
    init_weights(model, init_std=0.3, proj_init_std=0.3)
    with torch.no_grad():
        for p in model.parameters():  # biases and LayerNorm shifts away from zero too
            p.add_(torch.randn_like(p) * 0.1)
    return model.double().eval()


def tokens(shape, seed=1):
    return torch.randint(0, V, shape, generator=torch.Generator().manual_seed(seed))


def random_mems(model, mlen, bsz, seed=2):
    g = torch.Generator().manual_seed(seed)
    return [
        torch.randn(mlen, bsz, model.d_model, generator=g, dtype=torch.float64)
        for _ in range(model.n_layer)
    ]


# --- the reference: one batch column, one query and one key at a time -----------------


def ref_embed(model, token):
    """Adaptive input embedding of one token id: [d_model]."""
    emb = model.word_emb
    bounds = list(zip([0, *model.cutoffs], [*model.cutoffs, model.n_token], strict=True))
    cluster = next(i for i, (lo, hi) in enumerate(bounds) if lo <= token < hi)
    if model.div_val == 1:
        vec = emb.emb_layers[0].weight[token]
        proj = emb.emb_projs[0] if model.d_embed != model.d_model else None
    else:
        vec = emb.emb_layers[cluster].weight[token - bounds[cluster][0]]
        proj = emb.emb_projs[cluster]
    if proj is not None:
        vec = proj @ vec
    return vec * math.sqrt(model.d_model)


def sinusoid(model, distance):
    """[sin(distance * f) ; cos(distance * f)] with the model's float32 frequencies, which
    NVIDIA's checkpoints carry (`test_frequencies_follow_the_formula` checks them)."""
    inv_freq = model.pos_emb.inv_freq
    return torch.cat([torch.sin(distance * inv_freq), torch.cos(distance * inv_freq)])


def layer_norm(ln, x):
    mean = x.mean(-1, keepdim=True)
    var = ((x - mean) ** 2).mean(-1, keepdim=True)
    return (x - mean) / torch.sqrt(var + ln.eps) * ln.weight + ln.bias


def ref_layer(model, layer, h, mem):
    """One layer on one batch column: h [Q, d] segment, mem [M, d] -> [Q, d].

    score(i, j) = (A + B + C + D) / sqrt(d_head) with, per head,
    A = q_i.k_j, B = q_i.W_r R, C = u.k_j, D = v.W_r R, R = sinusoid(mlen + i - j).
    """
    att, ff = layer.dec_attn, layer.pos_ff
    qlen, mlen = h.size(0), mem.size(0)
    cat = torch.cat([mem, h])
    x = torch.stack([layer_norm(att.layer_norm, row) for row in cat]) if model.pre_lnorm else cat
    w_q, w_k, w_v = att.qkv_net.weight.chunk(3)
    u, v_bias = model.r_w_bias, model.r_r_bias
    outputs = []
    for i in range(qlen):
        q = (w_q @ x[mlen + i]).view(N_HEAD, D_HEAD)
        scores, values = [], []
        for j in range(mlen + qlen):
            k = (w_k @ x[j]).view(N_HEAD, D_HEAD)
            values.append((w_v @ x[j]).view(N_HEAD, D_HEAD))
            distance = mlen + i - j
            visible = distance >= 0 and not (model.same_length and distance > model.mem_len)
            if not visible:
                scores.append(torch.full((N_HEAD,), -math.inf, dtype=torch.float64))
                continue
            if model.clamp_len > 0:
                distance = min(distance, model.clamp_len)
            r = (att.r_net.weight @ sinusoid(model, distance)).view(N_HEAD, D_HEAD)
            a, b = (q * k).sum(-1), (q * r).sum(-1)
            c, d = (u * k).sum(-1), (v_bias * r).sum(-1)
            scores.append((a + b + c + d) / math.sqrt(D_HEAD))
        probs = torch.softmax(torch.stack(scores, -1), -1)  # [H, K]
        outputs.append(torch.einsum("hk,khd->hd", probs, torch.stack(values)).reshape(-1))
    attn = torch.stack(outputs) @ att.o_net.weight.t()
    y = h + attn if model.pre_lnorm else layer_norm(att.layer_norm, h + attn)
    lin1, lin2 = ff.CoreNet[0], ff.CoreNet[3]

    def core(z):
        return lin2.weight @ torch.relu(lin1.weight @ z + lin1.bias) + lin2.bias

    if model.pre_lnorm:
        return torch.stack([row + core(layer_norm(ff.layer_norm, row)) for row in y])
    return torch.stack([layer_norm(ff.layer_norm, row + core(row)) for row in y])


def ref_log_probs(model, h):
    """Log-probabilities [n_token] of one hidden state: the head (shortlist + one token
    per tail cluster, tail cluster i at head column shortlist + n_clusters - i, as in
    NVIDIA's code) times each tail's own softmax."""
    crit = model.crit
    ends = [0, *model.cutoffs, model.n_token]
    n_clusters = len(model.cutoffs)

    def cluster(i):
        if model.div_val == 1:
            layer = crit.out_layers[0]
            weight, bias = layer.weight[ends[i] : ends[i + 1]], layer.bias[ends[i] : ends[i + 1]]
        else:
            weight, bias = crit.out_layers[i].weight, crit.out_layers[i].bias
        hp = h @ crit.out_projs[i] if len(crit.out_projs) else h
        return weight, bias, hp

    weight, bias, hp = cluster(0)
    if n_clusters:
        weight = torch.cat([weight, crit.cluster_weight])
        bias = torch.cat([bias, crit.cluster_bias])
    head = torch.log_softmax(weight @ hp + bias, -1)
    parts = [head[: ends[1]]]
    for i in range(1, n_clusters + 1):
        weight, bias, hp = cluster(i)
        parts.append(head[ends[1] + n_clusters - i] + torch.log_softmax(weight @ hp + bias, -1))
    return torch.cat(parts)


def reference(model, data, target, mems=None):
    """(NLL [T, B], inputs of every layer [n_layer][T, B, d]) by the reference."""
    qlen, bsz = data.shape
    mlen = 0 if mems is None else mems[0].size(0)
    hids = [torch.zeros(qlen, bsz, model.d_model, dtype=torch.float64) for _ in model.layers]
    nll_rows = []
    for b in range(bsz):
        h = torch.stack([ref_embed(model, int(t)) for t in data[:, b]])
        layer_inputs = []
        for i, layer in enumerate(model.layers):
            layer_inputs.append(h)
            mem = mems[i][:, b] if mlen else h.new_zeros(0, model.d_model)
            h = ref_layer(model, layer, h, mem)
        for i, x in enumerate(layer_inputs):
            hids[i][:, b] = x.detach()
        nll_rows.append(
            torch.stack([-ref_log_probs(model, h[t])[target[t, b]] for t in range(qlen)])
        )
    nll = torch.stack(nll_rows, dim=1)
    return nll, hids


CONFIGS = {
    "post_ln_full_softmax": dict(),
    "pre_ln_div_val_2": dict(
        pre_lnorm=True, cutoffs=CUTOFFS, div_val=2, d_embed=12, tie_projs=[False, True, False]
    ),
    "projected_div_val_1": dict(cutoffs=CUTOFFS, d_embed=12, tie_projs=[False, True, True]),
    "untied_clusters": dict(cutoffs=CUTOFFS, tie_weight=False),
    "clamp_len": dict(cutoffs=CUTOFFS, clamp_len=2),
    "same_length": dict(pre_lnorm=True, same_length=True, mem_len=3),
}


@pytest.mark.parametrize("name", CONFIGS)
def test_loss_matches_reference_with_memory(name):
    model = make_model(**CONFIGS[name])
    data, target = tokens((4, 2)), tokens((4, 2), seed=3)
    mems = random_mems(model, 3, 2)
    with torch.no_grad():
        loss, _ = model(data, target, mems)
        expected, _ = reference(model, data, target, mems)
    assert loss.shape == (4, 2)
    torch.testing.assert_close(loss, expected, rtol=1e-12, atol=1e-12)


def test_loss_matches_reference_without_memory():
    model = make_model(cutoffs=CUTOFFS, div_val=2)
    data, target = tokens((5, 3)), tokens((5, 3), seed=3)
    with torch.no_grad():
        loss, _ = model(data, target, None)
        expected, _ = reference(model, data, target)
    torch.testing.assert_close(loss, expected, rtol=1e-12, atol=1e-12)


def test_gradients_match_reference():
    model = make_model(cutoffs=CUTOFFS, div_val=2, dropout=0.0, dropatt=0.0).train()
    data, target = tokens((3, 2)), tokens((3, 2), seed=3)
    mems = random_mems(model, 2, 2)
    model(data, target, mems)[0].sum().backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters()}
    model.zero_grad()
    reference(model, data, target, mems)[0].sum().backward()
    for name, param in model.named_parameters():
        torch.testing.assert_close(grads[name], param.grad, rtol=1e-10, atol=1e-12, msg=name)


def test_frequencies_follow_the_formula():
    model = MemTransformerLM(V, 1, 2, 32, 4, 8, 0.0, 0.0)
    expected = [1.0 / 10000 ** (2 * k / 32) for k in range(16)]
    assert model.pos_emb.inv_freq.dtype == torch.float32
    torch.testing.assert_close(model.pos_emb.inv_freq.double(), torch.tensor(expected).double())


# --- memory ------------------------------------------------------------------------------


def test_second_segment_sees_first_segment_as_memory():
    model = make_model(cutoffs=CUTOFFS, mem_len=4)
    seg1, seg2 = tokens((4, 2), seed=4), tokens((4, 2), seed=5)
    tgt1, tgt2 = tokens((4, 2), seed=6), tokens((4, 2), seed=7)
    with torch.no_grad():
        _, mems = model(seg1, tgt1, None)
        loss2, _ = model(seg2, tgt2, mems)
        _, hids1 = reference(model, seg1, tgt1)
        expected, _ = reference(model, seg2, tgt2, hids1)
    assert len(mems) == N_LAYER
    for mem, hid in zip(mems, hids1, strict=True):
        torch.testing.assert_close(mem, hid, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(loss2, expected, rtol=1e-12, atol=1e-12)


def test_memory_keeps_the_last_mem_len_positions():
    model = make_model(mem_len=3)
    data = tokens((5, 2))
    old = random_mems(model, 2, 2)
    with torch.no_grad():
        _, new = model(data, data, old)
        _, hids = reference(model, data, data, old)
    for i in range(N_LAYER):
        torch.testing.assert_close(new[i], hids[i][-3:], rtol=1e-12, atol=1e-12)
    with torch.no_grad():  # a short segment keeps the end of the old memory
        _, new = model(data[:2], data[:2], old)
        _, hids = reference(model, data[:2], data[:2], old)
    for i in range(N_LAYER):
        torch.testing.assert_close(new[i], torch.cat([old[i][1:], hids[i]]), rtol=0, atol=1e-12)


def test_ext_len_ends_memory_before_the_segment_end():
    model = make_model(mem_len=4)
    model.reset_length(5, 2, 4)
    data = tokens((5, 2))
    old = random_mems(model, 3, 2)
    with torch.no_grad():
        _, new = model(data, data, old)
        _, hids = reference(model, data, data, old)
    for i in range(N_LAYER):  # [old ; segment] = 8 positions, end = 3 + 5 - 2, beg = end - 4
        torch.testing.assert_close(new[i], torch.cat([old[i], hids[i]])[2:6], rtol=0, atol=1e-9)


def test_zero_mem_len_keeps_no_memory():
    model = make_model(mem_len=0)
    with torch.no_grad():
        _, mems = model(tokens((4, 2)), tokens((4, 2)), None)
    assert [m.shape for m in mems] == [(0, 2, D_MODEL)] * N_LAYER
    assert [m.shape for m in model.init_mems(2)] == [(0, 2, D_MODEL)] * N_LAYER


def test_short_target_scores_the_last_positions():
    model = make_model()
    data, target = tokens((5, 2)), tokens((5, 2), seed=3)
    with torch.no_grad():
        full, _ = model(data, target, None)
        tail, _ = model(data, target[-2:], None)
    torch.testing.assert_close(tail, full[-2:], rtol=0, atol=1e-12)


def test_wrong_number_of_memories_is_an_error():
    model = make_model()
    with pytest.raises(ValueError, match="expected 2 memory tensors"):
        model(tokens((3, 2)), tokens((3, 2)), random_mems(model, 2, 2)[:1])


# --- adaptive softmax, tying, names -------------------------------------------------------


@pytest.mark.parametrize(
    "name", ["post_ln_full_softmax", "pre_ln_div_val_2", "projected_div_val_1"]
)
def test_log_probs_normalise_and_give_the_loss(name):
    model = make_model(**CONFIGS[name]).float()
    data, target = tokens((4, 3)), tokens((4, 3), seed=3)
    with torch.no_grad():
        log_probs, _ = model.log_probs(data)
        loss, _ = model(data, target)
    assert log_probs.shape == (4, 3, V) and log_probs.dtype == torch.float32
    torch.testing.assert_close(log_probs.exp().sum(-1), torch.ones(4, 3), rtol=0, atol=1e-5)
    nll = -log_probs.gather(-1, target.unsqueeze(-1)).squeeze(-1)
    torch.testing.assert_close(nll, loss, rtol=1e-5, atol=1e-5)


def test_every_parameter_gets_a_gradient_when_a_cluster_has_no_targets():
    # DDP (without find_unused_parameters) needs every parameter in every step's graph.
    model = make_model(cutoffs=CUTOFFS, div_val=2, tie_weight=False).train()
    head_only = tokens((4, 2)) % CUTOFFS[0]
    model(tokens((4, 2)), head_only)[0].sum().backward()
    assert all(p.grad is not None for p in model.parameters())
    assert model.crit.out_layers[2].weight.grad.abs().max() == 0


def test_tied_weights_and_projections_share_storage():
    model = make_model(cutoffs=CUTOFFS, div_val=2, tie_projs=[False, True, True])
    emb, crit = model.word_emb, model.crit
    for i in range(3):
        assert crit.out_layers[i].weight is emb.emb_layers[i].weight
    assert crit.out_projs[0] is not emb.emb_projs[0]
    assert crit.out_projs[1] is emb.emb_projs[1] and crit.out_projs[2] is emb.emb_projs[2]
    untied = make_model(cutoffs=CUTOFFS, div_val=2, tie_weight=False)
    assert untied.crit.out_layers[0].weight is not untied.word_emb.emb_layers[0].weight
    shared = make_model(cutoffs=CUTOFFS, d_embed=12, tie_projs=[True, True, True])
    assert all(p is shared.word_emb.emb_projs[0] for p in shared.crit.out_projs)


LAYER_KEYS = [
    "dec_attn.qkv_net.weight",
    "dec_attn.o_net.weight",
    "dec_attn.layer_norm.weight",
    "dec_attn.layer_norm.bias",
    "dec_attn.r_net.weight",
    "pos_ff.CoreNet.0.weight",
    "pos_ff.CoreNet.0.bias",
    "pos_ff.CoreNet.3.weight",
    "pos_ff.CoreNet.3.bias",
    "pos_ff.layer_norm.weight",
    "pos_ff.layer_norm.bias",
]


def expected_keys(n_layer, extra):
    keys = {"pos_emb.inv_freq", "r_w_bias", "r_r_bias", *extra}
    return keys | {f"layers.{i}.{k}" for i in range(n_layer) for k in LAYER_KEYS}


def test_state_dict_names_are_nvidias():
    # WikiText-103 base layout: d_embed = d_model, div_val 1, three tail clusters.
    wt103 = dict(n_token=200, n_layer=2, n_head=2, d_model=16, d_head=8, d_inner=32)
    base = MemTransformerLM(
        **wt103,
        dropout=0.1,
        dropatt=0.0,
        cutoffs=[50, 100, 150],
        tie_projs=[False, True, True, True],
    )
    assert set(base.state_dict()) == expected_keys(
        2,
        [
            "word_emb.emb_layers.0.weight",
            "crit.cluster_weight",
            "crit.cluster_bias",
            "crit.out_layers.0.weight",
            "crit.out_layers.0.bias",
        ],
    )
    # div_val 4 (as the large enwik8/lm1b recipes): a table and projection per cluster.
    large = MemTransformerLM(
        **{**wt103, "d_model": 64},
        dropout=0.1,
        dropatt=0.0,
        div_val=4,
        cutoffs=[50, 100, 150],
        tie_projs=[False, True, True, True],
    )
    per_cluster = [
        f"{name}.{i}"
        for i in range(4)
        for name in ("word_emb.emb_layers", "word_emb.emb_projs", "crit.out_projs")
    ]
    per_cluster = [k + ".weight" if "layers" in k else k for k in per_cluster]
    per_cluster += [f"crit.out_layers.{i}.{p}" for i in range(4) for p in ("weight", "bias")]
    assert set(large.state_dict()) == expected_keys(
        2, [*per_cluster, "crit.cluster_weight", "crit.cluster_bias"]
    )
    assert large.state_dict()["word_emb.emb_projs.3"].shape == (64, 64 // 4**3)
    assert large.state_dict()["crit.out_layers.2.weight"].shape == (50, 64 // 4**2)
    assert large.state_dict()["layers.1.dec_attn.qkv_net.weight"].shape == (3 * 2 * 8, 64)


# --- precision ---------------------------------------------------------------------------


def test_bf16_autocast_gives_float32_loss_close_to_fp32():
    model = make_model(cutoffs=CUTOFFS, div_val=2, d_model=32, d_embed=32).float()
    data, target = tokens((6, 4)), tokens((6, 4), seed=3)
    mems = [m.float() for m in random_mems(model, 3, 4)]
    with torch.no_grad():
        fp32, _ = model(data, target, mems)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            bf16, new_mems = model(data, target, mems)
            model(data, target, new_mems)  # memories from an autocast step feed the next
    assert bf16.dtype == torch.float32
    # bf16 keeps 8 mantissa bits: per-token NLLs (here ~10 nats) agree to a few percent
    # each and to 1% on average.
    torch.testing.assert_close(bf16, fp32, rtol=0.05, atol=0.1)
    assert (bf16 - fp32).abs().mean() < 0.01 * fp32.mean()


def test_bf16_autocast_training_step_runs():
    model = make_model(cutoffs=CUTOFFS).float().train()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss, _ = model(tokens((5, 2)), tokens((5, 2), seed=3))
    loss.float().mean().backward()
    assert all(torch.isfinite(p.grad).all() for p in model.parameters())


# --- checkpoints ---------------------------------------------------------------------------


def nvidia_vocab_class():
    """A class that pickles under NVIDIA's name `utils.vocabulary.Vocab`."""

    class Vocab:
        pass

    Vocab.__module__, Vocab.__qualname__ = "utils.vocabulary", "Vocab"
    return Vocab


def later_nvidia_layout(model, weights):
    """The state dict as NVIDIA's later ProjectedAdaptiveLogSoftmax names it: softmax
    tables as `out_layers_weights.i` (left out when tied to the embedding) and
    `out_layers_biases.i`, tied projections left out of `out_projs`, and every embedding
    projection repeated as `shared_out_projs.i`."""
    out = {}
    for key, value in weights.items():
        table = re.fullmatch(r"crit\.out_layers\.(\d+)\.(weight|bias)", key)
        proj = re.fullmatch(r"crit\.out_projs\.(\d+)", key)
        if table and table[2] == "bias":
            out[f"crit.out_layers_biases.{table[1]}"] = value
        elif table:
            if not model.tie_weight:
                out[f"crit.out_layers_weights.{table[1]}"] = value
        elif proj:
            if not model.tie_projs[int(proj[1])]:
                out[key] = value
        else:
            out[key] = value
    for i, emb_proj in enumerate(model.word_emb.emb_projs):
        out[f"crit.shared_out_projs.{i}"] = emb_proj.detach()
    return out


def nvidia_checkpoint(model, symbols, monkeypatch, path, later_layout=False):
    """torch.save a dict shaped as NVIDIA's train.py writes it (as far as we can without
    its code): `model_config`, `model_state` from DDP (`module.`), the pickled Vocab, args,
    optimizer and scheduler states and counters."""
    config = model_config(model)
    config.update(dtype=None, sample_softmax=-1)
    weights = dict(model.state_dict())
    if later_layout:
        weights = later_nvidia_layout(model, weights)
    vocab_cls = nvidia_vocab_class()
    vocab = vocab_cls()
    vocab.__dict__.update(
        idx2sym=list(symbols),
        sym2idx=collections.OrderedDict((s, i) for i, s in enumerate(symbols)),
        counter=collections.Counter({s: 3 for s in symbols}),
        special=["<eos>"],
        min_freq=0,
        max_size=None,
        lower_case=False,
        delimiter=None,
        vocab_file=None,
        unk_idx=1,
    )
    optimizer = torch.optim.Adam(model.parameters())
    state = {
        "args": argparse.Namespace(dataset="wt103", tgt_len=5, n_token=V, cutoffs=None),
        "model_config": config,
        "model_state": {"module." + k: v for k, v in weights.items()},
        "optimizer_state": optimizer.state_dict(),
        "scheduler_state": torch.optim.lr_scheduler.StepLR(optimizer, 5).state_dict(),
        "vocab": vocab,
        "amp_state": {"loss_scaler0": {"loss_scale": 65536.0, "unskipped": 3}},
        "epoch": 2,
        "batch": 10,
        "last_iter": 10,
        "train_step": 100,
        "best_val_loss": 4.5,
    }
    with monkeypatch.context() as m:  # pickle needs the class importable by its name
        module = types.ModuleType("utils.vocabulary")
        module.Vocab = vocab_cls
        package = types.ModuleType("utils")
        package.vocabulary = module
        m.setitem(sys.modules, "utils", package)
        m.setitem(sys.modules, "utils.vocabulary", module)
        torch.save(state, path)
    return path


SYMBOLS = [f"w{i}" for i in range(V)]
CKPT_CONFIG = dict(
    cutoffs=CUTOFFS,
    div_val=2,
    d_embed=12,
    tie_projs=[False, True, True],
    same_length=True,
    clamp_len=4,
    mem_len=6,
    ext_len=1,
)


def segment_losses(model, n=3):
    losses, mems = [], None
    with torch.no_grad():
        for s in range(n):
            loss, mems = model(tokens((4, 2), seed=10 + s), tokens((4, 2), seed=20 + s), mems)
            losses.append(loss)
    return torch.stack(losses)


def assert_same_model(loaded, model):
    assert not loaded.training
    for name in ("tgt_len", "ext_len", "mem_len", "same_length", "clamp_len", "cutoffs"):
        assert getattr(loaded, name) == getattr(model, name), name
    torch.testing.assert_close(segment_losses(loaded), segment_losses(model), rtol=0, atol=0)


@pytest.mark.parametrize("later_layout", [False, True], ids=["layout_2020", "later_layout"])
def test_loads_nvidia_checkpoint(tmp_path, monkeypatch, later_layout):
    model = make_model(**CKPT_CONFIG).float()
    path = nvidia_checkpoint(
        model, SYMBOLS, monkeypatch, tmp_path / "checkpoint_best.pt", later_layout
    )
    loaded, vocab = load_checkpoint(path)
    assert vocab == SYMBOLS
    assert_same_model(loaded, model)


def test_loads_nvidia_checkpoint_with_untied_softmax(tmp_path, monkeypatch):
    model = make_model(cutoffs=CUTOFFS, tie_weight=False).float()
    path = nvidia_checkpoint(model, SYMBOLS, monkeypatch, tmp_path / "c.pt", later_layout=True)
    assert_same_model(load_checkpoint(path)[0], model)


def test_loads_our_checkpoint(tmp_path):
    model = make_model(**CKPT_CONFIG).float()
    config = {"model_config": model_config(model)}
    states = {"model": model, "vocab": txl_data.Vocab(SYMBOLS)}
    Checkpointer(tmp_path, is_main=True).save(3, states, extra=config)
    loaded, vocab = load_checkpoint(tmp_path / "checkpoint_last.pt")
    assert vocab == SYMBOLS
    assert_same_model(loaded, model)
    extra = {**config, "vocab": SYMBOLS}  # version 1 kept the symbols in `extra`
    path = save_atomic(capture_training_state(model=model, extra=extra), tmp_path / "c.pt")
    loaded, vocab = load_checkpoint(path)
    assert vocab == SYMBOLS
    assert_same_model(loaded, model)
    extra["vocab"] = None
    save_atomic(capture_training_state(model=model, extra=extra), path)
    assert load_checkpoint(path)[1] is None


def test_checkpoint_errors_name_the_file(tmp_path, monkeypatch):
    model = make_model().float()
    missing = tmp_path / "missing.pt"
    with pytest.raises(CheckpointError, match=f"{missing}.*does not exist"):
        load_checkpoint(missing)
    empty = tmp_path / "empty.pt"
    empty.write_bytes(b"")
    with pytest.raises(CheckpointError, match=f"{empty}.*empty"):
        load_checkpoint(empty)
    good = nvidia_checkpoint(model, SYMBOLS, monkeypatch, tmp_path / "good.pt")
    cut = tmp_path / "cut.pt"
    cut.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    with pytest.raises(CheckpointError, match=f"{cut}.*truncated"):
        load_checkpoint(cut)
    text = tmp_path / "text.pt"
    text.write_text("hello")
    with pytest.raises(CheckpointError, match=f"{text}"):
        load_checkpoint(text)
    foreign = tmp_path / "foreign.pt"
    torch.save({"state_dict": {}, "epoch": 1}, foreign)
    with pytest.raises(CheckpointError, match=f"{foreign} is not a Transformer-XL checkpoint"):
        load_checkpoint(foreign)
    other = tmp_path / "gnmt.pt"
    save_atomic(
        capture_training_state(model=model, extra={"model_config": {"vocab_size": 3}}), other
    )
    with pytest.raises(CheckpointError, match=f"{other} is a checkpoint of another model"):
        load_checkpoint(other)
    short = nvidia_checkpoint(model, SYMBOLS[:-1], monkeypatch, tmp_path / "short.pt")
    with pytest.raises(CheckpointError, match=f"{short}.*vocabulary has 59 symbols.*60"):
        load_checkpoint(short)


def test_checkpoint_with_unsupported_attention_is_an_error(tmp_path):
    model = make_model().float()
    config = {**model_config(model), "attn_type": 2}
    path = save_atomic(
        capture_training_state(model=model, extra={"model_config": config}), tmp_path / "c.pt"
    )
    with pytest.raises(CheckpointError, match=f"{path}.*attn_type 2 is not supported"):
        load_checkpoint(path)


# --- construction and initialisation --------------------------------------------------------


def test_nvidia_model_config_passes_straight_in():
    config = dict(
        n_token=V,
        n_layer=1,
        n_head=2,
        d_model=8,
        d_head=4,
        d_inner=16,
        dropout=0.1,
        dropatt=0.0,
        dtype=None,
        tie_weight=True,
        d_embed=8,
        div_val=1,
        tie_projs=[False, True, True],
        pre_lnorm=False,
        tgt_len=4,
        ext_len=0,
        mem_len=4,
        cutoffs=CUTOFFS,
        same_length=False,
        attn_type=0,
        clamp_len=-1,
        sample_softmax=-1,
        adapt_inp=False,
    )
    model = MemTransformerLM(**config)
    assert MemTransformerLM(**model_config(model)).state_dict().keys() == model.state_dict().keys()


@pytest.mark.parametrize(
    "kw, match", [({"attn_type": 1}, "attn_type 1"), ({"sample_softmax": 8}, "sample_softmax")]
)
def test_unsupported_options_are_errors(kw, match):
    with pytest.raises(ValueError, match=match):
        MemTransformerLM(V, 1, 2, 8, 4, 16, 0.1, 0.0, **kw)


def test_init_weights_follow_the_recipe():
    torch.manual_seed(0)
    model = MemTransformerLM(
        2000,
        1,
        4,
        64,
        16,
        256,
        0.1,
        0.0,
        cutoffs=[500, 1000],
        div_val=2,
        tie_projs=[False, True, True],
    )
    init_weights(model, "normal", init_std=0.02, proj_init_std=0.01)
    std = model.word_emb.emb_layers[0].weight.std().item()
    assert abs(std - 0.02) < 0.002
    assert abs(model.layers[0].pos_ff.CoreNet[0].weight.std().item() - 0.02) < 0.002
    assert abs(model.word_emb.emb_projs[0].std().item() - 0.01) < 0.001
    assert abs(model.crit.out_projs[0].std().item() - 0.01) < 0.002
    ln = model.layers[0].dec_attn.layer_norm
    assert abs(ln.weight.mean().item() - 1.0) < 0.01 and 0.01 < ln.weight.std().item() < 0.03
    assert ln.bias.abs().max() == 0
    assert model.layers[0].pos_ff.CoreNet[0].bias.abs().max() == 0
    assert (
        model.crit.out_layers[1].bias.abs().max() == 0 and model.crit.cluster_bias.abs().max() == 0
    )
    assert 0.01 < model.r_w_bias.std().item() < 0.03 and 0.01 < model.r_r_bias.std().item() < 0.03
    init_weights(model, "uniform", init_range=0.1)
    weight = model.layers[0].dec_attn.qkv_net.weight
    assert weight.abs().max() <= 0.1 and abs(weight.std().item() - 0.1 / math.sqrt(3)) < 0.005
    with pytest.raises(ValueError, match="unknown init"):
        init_weights(model, "xavier")


def test_non_embedding_parameters_leave_out_embedding_and_softmax():
    model = make_model(cutoffs=CUTOFFS, div_val=2)
    ids = {id(p) for p in model.non_embedding_parameters()}
    assert id(model.r_w_bias) in ids and id(model.layers[0].dec_attn.qkv_net.weight) in ids
    assert id(model.word_emb.emb_layers[0].weight) not in ids
    assert id(model.crit.cluster_weight) not in ids


def test_the_model_takes_its_config_dataclass_in_nvidias_names():
    from transformer_xl.model import TransformerXLConfig

    config = TransformerXLConfig(n_token=50, n_layer=2, n_head=2, d_model=16, d_head=8,
                                 d_inner=32, dropout=0.0, dropatt=0.0, mem_len=4)  # fmt: skip
    torch.manual_seed(0)
    a = MemTransformerLM(config)
    torch.manual_seed(0)
    b = MemTransformerLM(**model_config(a))
    assert a.config == b.config == TransformerXLConfig(**model_config(b))
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)
