"""GNMT v2 model: against a step-by-step float64 reference, padding invariance, search."""

import math

import pytest
import torch
import torch.nn.functional as F

from gnmt import model as gnmt_model
from gnmt.beam_search import SearchConfig, beam_search, final_scores
from gnmt.model import GNMT, label_smoothed_loss
from gnmt.tokenizer import BOS, EOS, PAD

V, H, L = 23, 8, 4


def make_model(seed=0, **kw):
    torch.manual_seed(seed)
    model = GNMT(V, hidden_size=H, num_layers=L, dropout=0.2, **kw).double().eval()
    # Training-like weights: the default init is small enough to hide mistakes.
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.3)
    return model


def batch(lengths, max_len=None, seed=1, low=4):
    g = torch.Generator().manual_seed(seed)
    max_len = max_len or max(lengths)
    src = torch.full((len(lengths), max_len), PAD, dtype=torch.long)
    for i, n in enumerate(lengths):
        src[i, :n] = torch.randint(low, V, (n,), generator=g)
    return src, torch.tensor(lengths)


def lstm_step(lstm, x, h, c, suffix=""):
    """One LSTM step from nn.LSTM's weights (gate order i, f, g, o)."""
    w_ih, w_hh = getattr(lstm, "weight_ih_l0" + suffix), getattr(lstm, "weight_hh_l0" + suffix)
    b = getattr(lstm, "bias_ih_l0" + suffix) + getattr(lstm, "bias_hh_l0" + suffix)
    i, f, g, o = (w_ih @ x + w_hh @ h + b).chunk(4)
    c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
    return torch.sigmoid(o) * torch.tanh(c), c


def run_lstm(lstm, xs, suffix="", reverse=False):
    h = c = torch.zeros(lstm.hidden_size, dtype=xs[0].dtype)
    out = [None] * len(xs)
    order = range(len(xs) - 1, -1, -1) if reverse else range(len(xs))
    for t in order:
        h, c = lstm_step(lstm, xs[t], h, c, suffix)
        out[t] = h
    return out


def reference_logits(model, src_ids, tgt_ids):
    """Logits [T, V] of one unpadded sentence pair, one time step at a time."""
    enc, dec = model.encoder, model.decoder
    x = [enc.embedder.weight[t] for t in src_ids]
    fwd = run_lstm(enc.rnn_layers[0], x)
    bwd = run_lstm(enc.rnn_layers[0], x, "_reverse", reverse=True)
    x = [torch.cat((a, b)) for a, b in zip(fwd, bwd, strict=True)]
    x = run_lstm(enc.rnn_layers[1], x)
    for lstm in enc.rnn_layers[2:]:
        x = [a + b for a, b in zip(run_lstm(lstm, x), x, strict=True)]
    keys = torch.stack(x)  # [S, H]

    attn = dec.att_rnn.attn
    v = attn.linear_att / attn.linear_att.norm() * attn.normalize_scalar
    y = run_lstm(dec.att_rnn.rnn, [dec.embedder.weight[t] for t in tgt_ids])
    contexts = []
    for q in y:
        e = torch.stack(
            [
                torch.tanh(
                    attn.linear_q.weight @ q + attn.linear_k.weight @ k + attn.normalize_bias
                )
                @ v
                for k in keys
            ]
        )
        contexts.append(torch.softmax(e, 0) @ keys)
    for i, lstm in enumerate(dec.rnn_layers):
        out = run_lstm(lstm, [torch.cat((a, c)) for a, c in zip(y, contexts, strict=True)])
        y = [a + b for a, b in zip(out, y, strict=True)] if i >= 1 else out
    return torch.stack([dec.classifier.weight @ a + dec.classifier.bias for a in y])


def test_forward_matches_step_by_step_reference_in_float64():
    model = make_model()
    src, src_len = batch([7, 4, 5])
    tgt, _ = batch([6, 6, 6], seed=2)
    logits = model(src, src_len, tgt)
    assert logits.shape == (3, 6, V)
    for i, n in enumerate([7, 4, 5]):
        ref = reference_logits(model, src[i, :n].tolist(), tgt[i].tolist())
        torch.testing.assert_close(logits[i], ref, rtol=1e-10, atol=1e-10)


def test_padding_never_changes_results():
    model = make_model()
    src, src_len = batch([3, 6])
    tgt, _ = batch([5, 5], seed=3)
    alone = model(src[:1, :3], src_len[:1], tgt[:1])
    padded = model(torch.cat((src, torch.full((2, 4), PAD)), 1), src_len, tgt)
    torch.testing.assert_close(padded[:1], alone, rtol=1e-12, atol=1e-12)


def test_decoder_state_from_encoder_is_padding_invariant_and_changes_output():
    model = make_model(init_decoder_from_encoder=True)
    src, src_len = batch([3, 6])
    tgt, _ = batch([4, 4], seed=3)
    alone = model(src[:1, :3], src_len[:1], tgt[:1])
    torch.testing.assert_close(model(src, src_len, tgt)[:1], alone, rtol=1e-12, atol=1e-12)
    zero_init = make_model()  # same seed: same weights, zero initial decoder state
    assert not torch.allclose(zero_init(src[:1, :3], src_len[:1], tgt[:1]), alone)


def test_step_by_step_decoding_equals_teacher_forcing():
    model = make_model()
    src, src_len = batch([5, 3])
    tgt, _ = batch([6, 6], seed=4)
    full = model(src, src_len, tgt)
    source = model.encode(src, src_len)
    state, steps = None, []
    for t in range(tgt.size(1)):
        logits, _, state = model.decode(tgt[:, t : t + 1], source, state)
        steps.append(logits)
    torch.testing.assert_close(torch.cat(steps, 1), full, rtol=1e-12, atol=1e-12)


def test_state_dict_names_follow_nvidia_layout():
    keys = set(GNMT(32, hidden_size=4, num_layers=4).state_dict())
    expected = {
        "encoder.embedder.weight",
        "decoder.embedder.weight",
        "encoder.rnn_layers.0.weight_ih_l0_reverse",
        "encoder.rnn_layers.3.bias_hh_l0",
        "decoder.att_rnn.rnn.weight_hh_l0",
        "decoder.att_rnn.attn.linear_q.weight",
        "decoder.att_rnn.attn.linear_k.weight",
        "decoder.att_rnn.attn.linear_att",
        "decoder.att_rnn.attn.normalize_scalar",
        "decoder.att_rnn.attn.normalize_bias",
        "decoder.rnn_layers.2.weight_ih_l0",
        "decoder.classifier.weight",
        "decoder.classifier.bias",
    }
    assert expected <= keys
    assert not any(k.startswith(("encoder.rnn_layers.4", "decoder.rnn_layers.3")) for k in keys)


def test_initialisation_follows_the_recipe():
    model = GNMT(40, hidden_size=16, num_layers=4)
    attn = model.decoder.att_rnn.attn
    assert attn.normalize_scalar.item() == pytest.approx(1 / math.sqrt(16))
    assert torch.all(attn.normalize_bias == 0)
    assert model.encoder.embedder is model.decoder.embedder  # shared embeddings
    for p in model.parameters():
        assert p.abs().max() <= 0.1 + 1e-7 or p is attn.normalize_scalar


def test_label_smoothed_loss_matches_formula():
    torch.manual_seed(0)
    logits = torch.randn(2, 3, 7, dtype=torch.float64)
    target = torch.tensor([[4, 5, PAD], [6, EOS, PAD]])
    loss, nll = label_smoothed_loss(logits, target, smoothing=0.1)
    expected_loss = expected_nll = 0.0
    for b in range(2):
        for t in range(3):
            if target[b, t] == PAD:
                continue
            logp = F.log_softmax(logits[b, t], -1)
            expected_nll += -logp[target[b, t]].item()
            expected_loss += 0.9 * -logp[target[b, t]].item() + 0.1 * -logp.mean().item()
    assert loss.item() == pytest.approx(expected_loss, rel=1e-12)
    assert nll.item() == pytest.approx(expected_nll, rel=1e-12)


def greedy_reference(model, src, src_len, max_length):
    out = []
    for i in range(src.size(0)):
        ids = [BOS]
        for _ in range(max_length):
            logits = model(src[i : i + 1, : src_len[i]], src_len[i : i + 1], torch.tensor([ids]))
            ids.append(logits[0, -1].argmax().item())
            if ids[-1] == EOS:
                break
        out.append([t for t in ids[1:] if t != EOS])
    return out


def test_beam_one_is_greedy_decoding():
    model = make_model()
    src, src_len = batch([5, 2, 7])
    found = beam_search(model, src, src_len, SearchConfig(beam_size=1, max_length=12))
    assert found == greedy_reference(model, src, src_len, 12)


def test_batched_beam_search_equals_sentence_by_sentence():
    model = make_model(seed=3)
    src, src_len = batch([6, 3, 5, 4], seed=5)
    cfg = SearchConfig(beam_size=4, max_length=10)
    together = beam_search(model, src, src_len, cfg)
    alone = [
        beam_search(model, src[i : i + 1, : src_len[i]], src_len[i : i + 1], cfg)[0]
        for i in range(4)
    ]
    assert together == alone
    assert all(EOS not in hyp and len(hyp) <= 10 for hyp in together)


class ScriptedModel:
    """Next-token distributions that depend only on the previous token, so greedy
    decoding is lured down a worse path: BOS -> A (0.6) | B (0.4);
    A -> C (0.36) | D (0.34) | EOS (0.3); C, D -> EOS; B -> EOS (0.99)."""

    A, B, C, D = 4, 5, 6, 7
    V = 8

    def __init__(self):
        table = torch.full((self.V, self.V), 1e-9)
        table[BOS, [self.A, self.B]] = torch.tensor([0.6, 0.4])
        table[self.A, [self.C, self.D, EOS]] = torch.tensor([0.36, 0.34, 0.3])
        table[self.B, EOS] = 0.99
        table[[self.C, self.D, EOS], EOS] = 1.0
        self.logits = table.log()

    def encode(self, src, lengths):
        return Source(torch.zeros(src.size(0), src.size(1)))

    def decode(self, last, source, state):
        n = last.size(0)
        attn = torch.full((n, 1, source.mask.size(1)), 1.0 / source.mask.size(1))
        return self.logits[last[:, 0]].unsqueeze(1), attn, [(torch.zeros(1, n, 1),) * 2]


class Source:
    def __init__(self, mask):
        self.mask, self.state = mask, None

    def index_select(self, index):
        return Source(self.mask.index_select(0, index))


def test_beam_search_finds_what_greedy_misses():
    model, src = ScriptedModel(), torch.ones(1, 3, dtype=torch.long)
    plain = dict(max_length=6, len_norm_factor=0.0, cov_penalty_factor=0.0)
    greedy = beam_search(model, src, torch.tensor([3]), SearchConfig(beam_size=1, **plain))
    beam = beam_search(model, src, torch.tensor([3]), SearchConfig(beam_size=2, **plain))
    assert greedy == [[ScriptedModel.A, ScriptedModel.C]]  # probability 0.216
    assert beam == [[ScriptedModel.B]]  # probability 0.396


def test_length_normalisation_changes_the_choice():
    # With a strong length bonus the longer A C (0.216) beats B (0.396):
    # log(0.21) / lp(3) > log(0.396) / lp(2) once alpha is large.
    model, src = ScriptedModel(), torch.ones(1, 3, dtype=torch.long)
    cfg = SearchConfig(beam_size=2, max_length=6, len_norm_factor=4.0, cov_penalty_factor=0.0)
    assert beam_search(model, src, torch.tensor([3]), cfg)[0][0] == ScriptedModel.A


def test_final_scores_formula():
    cfg = SearchConfig(len_norm_factor=0.6, len_norm_const=5.0, cov_penalty_factor=0.1)
    cov = torch.tensor([[0.5, 2.0, 0.0]], dtype=torch.float64)
    got = final_scores(torch.tensor([-3.0], dtype=torch.float64), torch.tensor([4]), cov, cfg)
    expected = -3.0 / ((5 + 4) / 6) ** 0.6 + 0.1 * (math.log(0.5) + math.log(1.0))
    assert got.item() == pytest.approx(expected, rel=1e-12)


@pytest.fixture(params=["onednn_bf16_rnn", "no_bf16_rnn"])
def cpu_kind(request, monkeypatch):
    """Both kinds of CPU on any machine: with oneDNN's bf16 LSTM (AVX-512 and newer)
    and without (AVX2), whatever this machine has."""
    if request.param == "onednn_bf16_rnn" and not gnmt_model._cpu_has_bf16_rnn():
        pytest.skip("this CPU has no bf16 LSTM in oneDNN")
    monkeypatch.setattr(gnmt_model, "_cpu_has_bf16_rnn", lambda: request.param == "onednn_bf16_rnn")
    return request.param


def test_lstm_under_bf16_autocast_runs_on_every_cpu(cpu_kind):
    torch.manual_seed(0)
    lstm = torch.nn.LSTM(8, 8, batch_first=True)
    x = torch.randn(3, 5, 8)
    want, (want_h, want_c) = lstm(x)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        got, (h, c) = gnmt_model.run_lstm(lstm, x)
    # without a bf16 LSTM the recurrence stays fp32: then it equals the fp32 one
    tol = 1e-6 if cpu_kind == "no_bf16_rnn" else 3e-2
    for a, b in ((got, want), (h, want_h), (c, want_c)):
        torch.testing.assert_close(a.float(), b, atol=tol, rtol=tol)


def test_lstm_with_bf16_weights_runs_on_every_cpu_and_answers_in_bf16(cpu_kind):
    torch.manual_seed(0)
    lstm = torch.nn.LSTM(8, 8, batch_first=True).bfloat16()
    reference = torch.nn.LSTM(8, 8, batch_first=True)
    reference.load_state_dict({k: v.float() for k, v in lstm.state_dict().items()})
    x = torch.randn(3, 5, 8)
    got, (h, _) = gnmt_model.run_lstm(lstm, x.bfloat16())
    assert got.dtype == h.dtype == torch.bfloat16
    torch.testing.assert_close(got.float(), reference(x)[0], atol=3e-2, rtol=3e-2)


def test_gnmt_trains_and_searches_in_bf16_on_every_cpu(cpu_kind):
    torch.manual_seed(0)
    model = GNMT(vocab_size=20, hidden_size=8, num_layers=3)
    src = torch.randint(4, 20, (2, 6))
    lengths = torch.tensor([6, 4])
    tgt = torch.randint(4, 20, (2, 5))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        logits = model(src, lengths, tgt)
    loss, _ = label_smoothed_loss(logits, tgt)
    loss.backward()
    assert torch.isfinite(loss) and all(torch.isfinite(p.grad).all() for p in model.parameters())
    model.eval().bfloat16()
    with torch.no_grad():
        hyps = beam_search(model, src, lengths, SearchConfig(beam_size=2, max_length=4))
    assert len(hyps) == 2 and all(1 <= len(h) <= 4 for h in hyps)


def test_the_model_takes_its_config_dataclass_or_the_positional_form():
    from gnmt.model import GNMTConfig

    torch.manual_seed(0)
    a = GNMT(GNMTConfig(vocab_size=30, hidden_size=8, num_layers=3, share_embedding=False))
    torch.manual_seed(0)
    b = GNMT(30, 8, 3, share_embedding=False)
    assert a.config == b.config
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)
