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


def reference_logits(model, src_ids, tgt_ids, drop=lambda v: v, placement="outputs"):
    """Logits [T, V] of one unpadded sentence pair, one time step at a time. `drop` (for
    dropout) is applied to the input of every encoder LSTM, embedding included, and in the
    decoder where `placement` says: "outputs", to each LSTM's output before the attention
    context joins it (NVIDIA's first release); "inputs", to every LSTM input whole, the
    target embedding and the context included (NVIDIA's current code)."""
    inputs = placement == "inputs"
    enc, dec = model.encoder, model.decoder
    x = [drop(enc.embedder.weight[t]) for t in src_ids]
    fwd = run_lstm(enc.rnn_layers[0], x)
    bwd = run_lstm(enc.rnn_layers[0], x, "_reverse", reverse=True)
    x = [torch.cat((a, b)) for a, b in zip(fwd, bwd, strict=True)]
    x = run_lstm(enc.rnn_layers[1], [drop(a) for a in x])
    for lstm in enc.rnn_layers[2:]:
        x = [a + b for a, b in zip(run_lstm(lstm, [drop(a) for a in x]), x, strict=True)]
    keys = torch.stack(x)  # [S, H]

    attn = dec.att_rnn.attn
    v = attn.linear_att / attn.linear_att.norm() * attn.normalize_scalar
    embedded = [dec.embedder.weight[t] for t in tgt_ids]
    y = run_lstm(dec.att_rnn.rnn, [drop(e) for e in embedded] if inputs else embedded)
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
        pairs = zip(y, contexts, strict=True)
        joined = [drop(torch.cat((a, c))) if inputs else torch.cat((drop(a), c)) for a, c in pairs]
        out = run_lstm(lstm, joined)
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


class Affine(torch.nn.Module):
    """Stands in for dropout: elementwise and deterministic, so where it is applied shows
    in the output (dropping x ++ context differs from dropping x alone)."""

    def forward(self, x):
        return 1.7 * x + 0.05


@pytest.mark.parametrize("placement", ["outputs", "inputs"])
def test_dropout_falls_where_nvidias_releases_put_it(placement):
    model = make_model(decoder_dropout=placement)
    other = "inputs" if placement == "outputs" else "outputs"
    model.encoder.dropout = model.decoder.dropout = Affine()
    src, src_len = batch([6, 3, 5])
    tgt, _ = batch([5, 5, 5], seed=2)
    logits = model(src, src_len, tgt)
    for i, n in enumerate([6, 3, 5]):
        src_ids, tgt_ids = src[i, :n].tolist(), tgt[i].tolist()
        ref = reference_logits(model, src_ids, tgt_ids, drop=Affine(), placement=placement)
        torch.testing.assert_close(logits[i], ref, rtol=1e-10, atol=1e-10)
        assert not torch.allclose(ref, reference_logits(model, src_ids, tgt_ids))
        wrong = reference_logits(model, src_ids, tgt_ids, drop=Affine(), placement=other)
        assert not torch.allclose(ref, wrong)


def test_the_decoder_dropout_placement_is_checked_and_kept_in_the_config():
    assert make_model().config.decoder_dropout == "outputs"
    assert gnmt_model.config_dict(make_model(decoder_dropout="inputs"))["decoder_dropout"] == (
        "inputs"
    )
    with pytest.raises(ValueError, match="decoder_dropout 'both': one of outputs, inputs"):
        GNMT(V, hidden_size=H, decoder_dropout="both")


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
    """NVIDIA's rules: every LSTM weight and input bias uniform(-0.1, 0.1) and the hidden
    bias zero (no forget-gate bias); the shared embedding (its padding row included)
    and the classifier uniform(-0.1, 0.1); attention g = 1/sqrt(hidden), b = 0."""
    model = GNMT(40, hidden_size=16, num_layers=4)
    attn = model.decoder.att_rnn.attn
    assert attn.normalize_scalar.item() == pytest.approx(1 / math.sqrt(16))
    assert torch.all(attn.normalize_bias == 0)
    assert model.encoder.embedder is model.decoder.embedder  # shared embeddings
    assert model.encoder.embedder.weight[PAD].abs().sum() > 0  # padding row drawn too
    for p in model.parameters():
        assert p.abs().max() <= 0.1 + 1e-7 or p is attn.normalize_scalar
    lstms = [m for m in model.modules() if isinstance(m, torch.nn.LSTM)]
    assert len(lstms) == 2 * 4 - 1 + 1  # encoder 4, attention LSTM, decoder 3
    for lstm in lstms:
        for name, p in lstm.named_parameters():
            if name.startswith("bias_hh"):
                assert torch.all(p == 0), name
            else:  # spread over the range, not a constant
                assert p.abs().max() > 0.09 and p.std() > 0.04, name


def test_label_smoothed_loss_matches_formula():
    """NVIDIA's LabelSmoothing: (1 - s) * NLL + s * mean over all V classes of -log p
    (the target, PAD and fillers included: s / V each, not s / (V - 1)), padding
    positions left out, summed; the trainer divides by sentences x accumulation."""
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


def reference_beam_search(model, src_ids, cfg):
    """One sentence, spelled out: the beams as a list of hypotheses, every candidate of
    every beam listed and sorted, the rules of `cfg.scoring` (gnmt.beam_search's
    docstring) written plainly; NVIDIA's coverage as a list per slot."""
    k, nvidia = cfg.beam_size, cfg.scoring == "nvidia"
    source = model.encode(torch.tensor([src_ids]), torch.tensor([len(src_ids)]))
    source = source.index_select(torch.zeros(k, dtype=torch.long))
    state = source.state
    zero = [0.0] * len(src_ids)
    beams = [
        {"tokens": [], "logp": 0.0 if b == 0 else -math.inf, "length": 1 if nvidia else 0,
         "coverage": zero, "done": False}
        for b in range(k)
    ]  # fmt: skip
    slot_coverage = [zero] * k
    for step in range(cfg.max_length):
        last = torch.tensor([[b["tokens"][-1] if b["tokens"] else BOS] for b in beams])
        logits, attn, state = model.decode(last, source, state)
        logp = torch.log_softmax(logits[:, 0], -1).tolist()
        candidates = []
        for i, beam in enumerate(beams):
            if beam["done"]:  # it may only repeat EOS, at no cost
                candidates.append((beam["logp"], i, EOS))
                continue
            seen = attn[i, 0].tolist()
            slot_coverage[i] = [a + b for a, b in zip(slot_coverage[i], seen, strict=True)]
            beam["coverage"] = [a + b for a, b in zip(beam["coverage"], seen, strict=True)]
            candidates += [(beam["logp"] + lp, i, w) for w, lp in enumerate(logp[i])]
        candidates.sort(key=lambda c: -c[0])
        chosen = candidates[:k]
        beams = [
            {"tokens": beams[i]["tokens"] + ([] if beams[i]["done"] else [w]), "logp": score,
             "length": beams[i]["length"] + (not beams[i]["done"]),
             "coverage": beams[i]["coverage"], "done": beams[i]["done"] or w == EOS}
            for score, i, w in chosen
        ]  # fmt: skip
        origin = torch.tensor([i for _, i, _ in chosen])
        state = [(h.index_select(1, origin), c.index_select(1, origin)) for h, c in state]
        at_limit = step == cfg.max_length - 1  # finished on the last step, or not at all
        if all(b["done"] for b in beams):
            break

    def score(logp, length, coverage):
        lp = ((cfg.len_norm_const + length) / (cfg.len_norm_const + 1)) ** cfg.len_norm_factor
        cp = sum(math.log(min(c, 1.0)) for c in coverage if c > 0)
        return logp / lp + cfg.cov_penalty_factor * cp

    if not nvidia:
        ranked = [score(b["logp"], b["length"], b["coverage"]) for b in beams]
    elif at_limit:
        ranked = [b["logp"] for b in beams]
    else:  # sorted by log-probability; the coverage stays in its slot
        beams = sorted(beams, key=lambda b: -b["logp"])
        ranked = [
            score(b["logp"], b["length"], c) for b, c in zip(beams, slot_coverage, strict=True)
        ]
    tokens = beams[ranked.index(max(ranked))]["tokens"]
    return tokens[:-1] if tokens and tokens[-1] == EOS else tokens


def test_beam_search_on_gnmt_follows_its_rules_sentence_by_sentence():
    model = make_model(seed=4)
    lengths = [6, 3, 5, 4, 7, 2]
    src, src_len = batch(lengths, seed=9)
    for scoring in ("nvidia", "paper"):
        cfg = SearchConfig(beam_size=4, max_length=8, scoring=scoring)
        want = [
            reference_beam_search(model, src[i, :n].tolist(), cfg) for i, n in enumerate(lengths)
        ]
        assert beam_search(model, src, src_len, cfg) == want


class TableSource:
    def __init__(self, src, mask):
        self.src, self.mask, self.state = src, mask, None

    def index_select(self, index):
        return TableSource(self.src.index_select(0, index), self.mask.index_select(0, index))


class TableModel:
    """A stand-in for GNMT in search tests: the next token's logits come from tables of
    the previous token and of the source's tokens, EOS grows likelier with each step
    (the step count is its decoder state), and the attention on each source token comes
    from a table of (previous token, source token): sentences end at varied lengths and
    coverage varies between hypotheses."""

    def __init__(self, seed, vocab=12, eos_slope=0.5):
        g = torch.Generator().manual_seed(seed)

        def table(*shape, scale):
            return torch.randn(*shape, generator=g, dtype=torch.float64) * scale

        self.next, self.from_source = table(vocab, vocab, scale=1.5), table(vocab, vocab, scale=0.5)
        self.attention, self.eos_slope = table(vocab, vocab, scale=2.0), eos_slope

    def encode(self, src, lengths):
        return TableSource(src, torch.arange(src.size(1))[None, :] >= lengths[:, None])

    def decode(self, last, source, state):
        step = state[0][0] if state else torch.zeros(1, last.size(0), 1, dtype=torch.float64)
        previous = last[:, 0]
        keep = (~source.mask).unsqueeze(-1)
        logits = self.next[previous] + (self.from_source[source.src] * keep).sum(1)
        logits[:, EOS] += self.eos_slope * step[0, :, 0] - 2.0
        scores = self.attention[previous.unsqueeze(1), source.src].masked_fill(
            source.mask, -torch.inf
        )
        attn = torch.softmax(scores, dim=-1)
        return logits.unsqueeze(1), attn.unsqueeze(1), [(step + 1, step + 1)]


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("max_length", [6, 25])
def test_beam_search_follows_its_rules_sentence_by_sentence(seed, max_length):
    """Both rule sets against the plain reference, on sentences that end at varied
    lengths, some at the limit; the rule sets choose differently for some of them."""
    model, vocab = TableModel(seed), 12
    lengths = [6, 3, 5, 4, 7, 2, 6, 5, 8, 3, 4, 6]
    g = torch.Generator().manual_seed(seed)
    src = torch.full((len(lengths), max(lengths)), PAD, dtype=torch.long)
    for i, n in enumerate(lengths):
        src[i, :n] = torch.randint(4, vocab, (n,), generator=g)
    found = {}
    for scoring in ("nvidia", "paper"):
        cfg = SearchConfig(
            beam_size=4, max_length=max_length, cov_penalty_factor=0.4, scoring=scoring
        )
        found[scoring] = beam_search(model, src, torch.tensor(lengths), cfg)
        want = [
            reference_beam_search(model, src[i, :n].tolist(), cfg) for i, n in enumerate(lengths)
        ]
        assert found[scoring] == want
    assert any(len(h) < max_length for h in found["nvidia"])  # some finish before the limit
    assert found["nvidia"] != found["paper"]


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


@pytest.mark.parametrize("scoring, alpha", [("paper", 4.0), ("nvidia", 4.0), ("nvidia", 6.0)])
def test_length_normalisation_changes_the_choice(scoring, alpha):
    # With a strong length bonus the longer A C EOS (0.216) beats B EOS (0.396). The
    # paper counts 3 and 2 tokens: log(0.216) / lp(3) > log(0.396) / lp(2) at alpha 4.
    # NVIDIA counts the start token too, 4 and 3, which alpha 4 does not overcome.
    model, src = ScriptedModel(), torch.ones(1, 3, dtype=torch.long)
    cfg = SearchConfig(beam_size=2, max_length=6, len_norm_factor=alpha, cov_penalty_factor=0.0,
                       scoring=scoring)  # fmt: skip

    def lp(n):
        return ((5 + n) / 6) ** alpha

    extra = 1 if scoring == "nvidia" else 0
    longer_wins = math.log(0.216) / lp(3 + extra) > math.log(0.396) / lp(2 + extra)
    assert longer_wins == ((scoring, alpha) != ("nvidia", 4.0))
    want = [ScriptedModel.A, ScriptedModel.C] if longer_wins else [ScriptedModel.B]
    assert beam_search(model, src, torch.tensor([3]), cfg) == [want]


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
