"""BERT (Devlin et al., 2018): a post-LayerNorm Transformer encoder and its task heads.

    embeddings   word + position + token type -> LayerNorm -> dropout
    layer x N    x = LN(x + dropout(W_o attention(x)))          (attention dropout inside)
                 x = LN(x + dropout(W_2 gelu(W_1 x)))           (exact, erf-based GELU)
    pooler       tanh(W_p x[:, 0])                              (the [CLS] position)
    heads        pre-training: MLM (dense, gelu, LN, decoder tied to the word embeddings,
                 own bias) and NSP (2-way linear on the pooled output); question answering
                 (start/end logits per token); sequence classification (dropout, linear on
                 the pooled output); token classification (dropout, linear on every
                 position's output, no pooler)

Attention runs through `scaled_dot_product_attention` with an additive padding mask
(attention_mask [B, S]: 1 = token, 0 = padding; padded keys get -10000, as in the
reference, so real tokens never see padding). A mask without padding adds only zeros, so
on the CPU it is left out (`_no_padding`): the same values with one [B, heads, S, S] pass
less per layer, which makes a training step several percent faster. That check is the
forward's one data-dependent Python branch, and it is skipped while `torch.compile`
traces, so the compiler still sees the whole forward.

Module and parameter names are Hugging Face's, so state dicts map one-to-one onto its
checkpoints (`bert.encoder.layer.N.attention.self.query.weight`, ...).

`from_pretrained` and `save_pretrained` read and write Hugging Face's format, NVIDIA's
.pt files and ours through bert/checkpoints.py, which says what they accept.
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from functools import partial
from pathlib import Path
from typing import Any, TypeVar

import torch
import torch.nn.functional as F
from torch import nn

from bert.tokenization import FullTokenizer, load_vocab

CONFIG_NAMES = ("config.json", "bert_config.json")
WEIGHTS_NAMES = ("model.safetensors", "pytorch_model.bin")
SAFETENSORS_NAME = "model.safetensors"
MASK_VALUE = -10000.0  # added to the attention scores of padded keys
DECODER_WEIGHT = "cls.predictions.decoder.weight"
WORD_EMBEDDINGS = "bert.embeddings.word_embeddings.weight"
# Parts that differ between the task models; everything else is the shared encoder.
HEAD_PREFIXES = ("cls.", "qa_outputs.", "classifier.", "bert.pooler.")

ACTIVATIONS = {
    "gelu": F.gelu,  # exact: x * Phi(x) with the erf
    "gelu_new": partial(F.gelu, approximate="tanh"),
    "gelu_pytorch_tanh": partial(F.gelu, approximate="tanh"),
    "relu": F.relu,
    "silu": F.silu,
    "swish": F.silu,
}


@dataclass
class BertConfig:
    """BERT hyper-parameters; defaults are BERT-base (uncased vocabulary)."""

    vocab_size: int = 30522
    hidden_size: int = 768
    num_hidden_layers: int = 12
    num_attention_heads: int = 12
    intermediate_size: int = 3072
    hidden_act: str = "gelu"
    hidden_dropout_prob: float = 0.1
    attention_probs_dropout_prob: float = 0.1
    max_position_embeddings: int = 512
    type_vocab_size: int = 2
    initializer_range: float = 0.02
    layer_norm_eps: float = 1e-12

    def __post_init__(self) -> None:
        if self.hidden_size % self.num_attention_heads:
            raise ValueError(
                f"hidden_size {self.hidden_size} is not a multiple of "
                f"num_attention_heads {self.num_attention_heads}"
            )
        if self.hidden_act not in ACTIVATIONS:
            raise ValueError(f"hidden_act {self.hidden_act!r} is not one of {sorted(ACTIVATIONS)}")

    @classmethod
    def base(cls, **overrides: Any) -> BertConfig:
        """BERT-base: 12 layers, hidden 768, 12 heads, 110M parameters."""
        return cls(**overrides)

    @classmethod
    def large(cls, **overrides: Any) -> BertConfig:
        """BERT-large: 24 layers, hidden 1024, 16 heads, 340M parameters."""
        large = {
            "hidden_size": 1024,
            "num_hidden_layers": 24,
            "num_attention_heads": 16,
            "intermediate_size": 4096,
        }
        return cls(**{**large, **overrides})

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> BertConfig:
        """Our fields from `values`; other keys (Hugging Face's model_type, ...) are ignored."""
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in values.items() if k in names})

    @classmethod
    def from_json_file(cls, path: str | os.PathLike) -> BertConfig:
        return cls.from_dict(_read_json_object(Path(path)))

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _read_json_object(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise ValueError(f"config {path} does not exist")
    try:
        values = json.loads(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError as exc:
        raise ValueError(f"config {path} is not UTF-8 ({exc.reason})") from None
    except json.JSONDecodeError as exc:
        raise ValueError(f"config {path}, line {exc.lineno}: malformed JSON ({exc.msg})") from None
    if not isinstance(values, dict):
        raise ValueError(f"config {path} holds a JSON {type(values).__name__}, not an object")
    return values


# ----------------------------------------------------------------------------- modules


class BertEmbeddings(nn.Module):
    def __init__(self, config: BertConfig) -> None:
        super().__init__()
        self.word_embeddings = nn.Embedding(config.vocab_size, config.hidden_size)
        self.position_embeddings = nn.Embedding(config.max_position_embeddings, config.hidden_size)
        self.token_type_embeddings = nn.Embedding(config.type_vocab_size, config.hidden_size)
        self.LayerNorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.dropout = nn.Dropout(config.hidden_dropout_prob)

    def forward(self, input_ids: torch.Tensor, token_type_ids: torch.Tensor) -> torch.Tensor:
        """ids, token types [B, S] -> [B, S, H]."""
        positions = torch.arange(input_ids.size(1), device=input_ids.device)
        x = self.word_embeddings(input_ids) + self.token_type_embeddings(token_type_ids)
        x = x + self.position_embeddings(positions)
        return self.dropout(self.LayerNorm(x))


class BertSelfAttention(nn.Module):
    def __init__(self, config: BertConfig) -> None:
        super().__init__()
        self.num_heads = config.num_attention_heads
        self.head_size = config.hidden_size // config.num_attention_heads
        self.query = nn.Linear(config.hidden_size, config.hidden_size)
        self.key = nn.Linear(config.hidden_size, config.hidden_size)
        self.value = nn.Linear(config.hidden_size, config.hidden_size)
        self.dropout_p = config.attention_probs_dropout_prob

    def _heads(self, x: torch.Tensor) -> torch.Tensor:
        """[B, S, H] -> [B, heads, S, H / heads]."""
        return x.unflatten(-1, (self.num_heads, self.head_size)).transpose(1, 2)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        """x [B, S, H], additive mask [B, 1, 1, S] or None -> context [B, S, H]."""
        q, k, v = self._heads(self.query(x)), self._heads(self.key(x)), self._heads(self.value(x))
        if mask is not None:
            mask = mask.to(q.dtype)  # under autocast q is bf16/fp16 while the mask is not
        context = F.scaled_dot_product_attention(
            q, k, v, attn_mask=mask, dropout_p=self.dropout_p if self.training else 0.0
        )
        return context.transpose(1, 2).flatten(2)


class _ResidualOutput(nn.Module):
    """LayerNorm(residual + dropout(dense(x))): the tail of attention and of the MLP."""

    def __init__(self, in_features: int, config: BertConfig) -> None:
        super().__init__()
        self.dense = nn.Linear(in_features, config.hidden_size)
        self.LayerNorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.dropout = nn.Dropout(config.hidden_dropout_prob)

    def forward(self, x: torch.Tensor, residual: torch.Tensor) -> torch.Tensor:
        """[B, S, in_features], [B, S, H] -> [B, S, H]."""
        return self.LayerNorm(residual + self.dropout(self.dense(x)))


class BertSelfOutput(_ResidualOutput):
    def __init__(self, config: BertConfig) -> None:
        super().__init__(config.hidden_size, config)


class BertAttention(nn.Module):
    def __init__(self, config: BertConfig) -> None:
        super().__init__()
        self.self = BertSelfAttention(config)
        self.output = BertSelfOutput(config)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        return self.output(self.self(x, mask), x)


class BertIntermediate(nn.Module):
    def __init__(self, config: BertConfig) -> None:
        super().__init__()
        self.dense = nn.Linear(config.hidden_size, config.intermediate_size)
        self.act = ACTIVATIONS[config.hidden_act]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """[B, S, H] -> [B, S, I]."""
        return self.act(self.dense(x))


class BertOutput(_ResidualOutput):
    def __init__(self, config: BertConfig) -> None:
        super().__init__(config.intermediate_size, config)


class BertLayer(nn.Module):
    def __init__(self, config: BertConfig) -> None:
        super().__init__()
        self.attention = BertAttention(config)
        self.intermediate = BertIntermediate(config)
        self.output = BertOutput(config)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        x = self.attention(x, mask)
        return self.output(self.intermediate(x), x)


class BertEncoder(nn.Module):
    def __init__(self, config: BertConfig) -> None:
        super().__init__()
        self.layer = nn.ModuleList(BertLayer(config) for _ in range(config.num_hidden_layers))

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        for layer in self.layer:
            x = layer(x, mask)
        return x


class BertPooler(nn.Module):
    def __init__(self, config: BertConfig) -> None:
        super().__init__()
        self.dense = nn.Linear(config.hidden_size, config.hidden_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """[B, S, H] -> [B, H] from the first ([CLS]) position."""
        return torch.tanh(self.dense(x[:, 0]))


class BertPredictionHeadTransform(nn.Module):
    def __init__(self, config: BertConfig) -> None:
        super().__init__()
        self.dense = nn.Linear(config.hidden_size, config.hidden_size)
        self.act = ACTIVATIONS[config.hidden_act]
        self.LayerNorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.LayerNorm(self.act(self.dense(x)))


class BertLMPredictionHead(nn.Module):
    """Masked-LM logits; `decoder.weight` is tied to the word embeddings by the owner."""

    def __init__(self, config: BertConfig) -> None:
        super().__init__()
        self.transform = BertPredictionHeadTransform(config)
        self.decoder = nn.Linear(config.hidden_size, config.vocab_size, bias=False)
        self.bias = nn.Parameter(torch.zeros(config.vocab_size))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """[..., H] -> [..., V]."""
        # One linear with the head's bias: under autocast the logits stay in bf16/fp16.
        return F.linear(self.transform(x), self.decoder.weight, self.bias)


class BertPreTrainingHeads(nn.Module):
    def __init__(self, config: BertConfig) -> None:
        super().__init__()
        self.predictions = BertLMPredictionHead(config)
        self.seq_relationship = nn.Linear(config.hidden_size, 2)

    def forward(
        self, sequence: torch.Tensor, pooled: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """[..., H], [B, H] -> MLM logits [..., V], NSP logits [B, 2]."""
        return self.predictions(sequence), self.seq_relationship(pooled)


def padding_mask(attention_mask: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """[B, S] with 1 = token, 0 = padding -> additive [B, 1, 1, S]: 0 or MASK_VALUE."""
    return (1.0 - attention_mask[:, None, None, :].to(dtype)) * MASK_VALUE


def _no_padding(attention_mask: torch.Tensor) -> bool:
    """Whether every position is a token, asked only where the answer is free: of a CPU
    tensor outside torch.compile (on a GPU, reading it would stall the host each forward;
    while compiling, the branch would split the graph)."""
    return (
        attention_mask.device.type == "cpu"
        and not torch.compiler.is_compiling()
        and bool(attention_mask.all())
    )


# ------------------------------------------------------------------------ model classes

Model = TypeVar("Model", bound="BertPreTrainedModel")


@dataclass
class LoadReport:
    """What `from_pretrained` did beyond copying matching weights."""

    newly_initialized: list[str] = field(default_factory=list)  # model keys, fresh values
    unused: list[str] = field(default_factory=list)  # checkpoint keys left out


class BertPreTrainedModel(nn.Module):
    """Weight initialisation, loading and saving shared by the BERT models."""

    prefix = "bert."  # where the encoder's keys live in this model's state dict

    def __init__(self, config: BertConfig) -> None:
        super().__init__()
        self.config = config
        self.name_or_path: str | None = None  # set by from_pretrained
        self.load_report = LoadReport()

    def init_weights(self) -> None:
        """Linear and embedding weights ~ N(0, initializer_range), biases 0, LayerNorm 1 / 0."""
        self.apply(self._init_module)

    def _init_module(self, module: nn.Module) -> None:
        if isinstance(module, (nn.Linear, nn.Embedding)):
            nn.init.normal_(module.weight, mean=0.0, std=self.config.initializer_range)
        if isinstance(module, nn.Linear) and module.bias is not None:
            nn.init.zeros_(module.bias)
        elif isinstance(module, nn.LayerNorm):
            nn.init.ones_(module.weight)
            nn.init.zeros_(module.bias)
        elif isinstance(module, BertLMPredictionHead):
            nn.init.zeros_(module.bias)

    # Hooks for the subclasses.
    @classmethod
    def _init_kwargs(
        cls, state: dict[str, torch.Tensor], raw_config: dict[str, Any], kwargs: dict[str, Any]
    ) -> dict[str, Any]:
        """Constructor arguments beyond the config (e.g. num_labels) for from_pretrained."""
        return kwargs

    def _hf_config_extras(self) -> dict[str, Any]:
        """Keys beyond ours that transformers needs in config.json to build this model."""
        return {}

    @classmethod
    def from_pretrained(
        cls: type[Model],
        path: str | os.PathLike,
        config: BertConfig | str | os.PathLike | None = None,
        *,
        weights_only: bool = True,
        **kwargs: Any,
    ) -> Model:
        """This model (in eval mode) from a Hugging Face directory, our save_pretrained
        directory or a checkpoint file (NVIDIA's .pt); see the module docstring.

        config: overrides the checkpoint's config (BertConfig or a JSON file); needed for
        a checkpoint file without bert_config.json / config.json beside it.
        weights_only: torch.load's safe mode; pass False only for a trusted .pt file that
        pickles more than tensors (NVIDIA pre-training checkpoints may hold a DataLoader).
        kwargs: constructor arguments, e.g. num_labels for sequence classification.
        A vocab.txt inside a model directory is checked against the embeddings.
        """
        from bert.checkpoints import from_pretrained

        return from_pretrained(cls, path, config, weights_only, kwargs)

    def _model_key(self, key: str) -> str:
        """A checkpoint key ("bert.encoder...") as this model names it."""
        return key if self.prefix else key.removeprefix("bert.")

    def _checkpoint_key(self, key: str) -> str:
        """One of this model's keys in the checkpoint's namespace (encoder under "bert.")."""
        return key if self.prefix else "bert." + key

    def save_pretrained(
        self, out_dir: str | os.PathLike, vocab_file: str | os.PathLike | None = None
    ) -> Path:
        """Write config.json and model.safetensors (Hugging Face's format, the tied decoder
        weight stored once, as the word embeddings) to `out_dir`, each file atomically;
        copy `vocab_file` there as vocab.txt when given. Returns `out_dir`."""
        from bert.checkpoints import save_pretrained

        return save_pretrained(self, out_dir, vocab_file)


class BertModel(BertPreTrainedModel):
    """The encoder: embeddings, layers and (optionally) the pooler."""

    prefix = ""

    def __init__(self, config: BertConfig, add_pooling_layer: bool = True) -> None:
        super().__init__(config)
        self.embeddings = BertEmbeddings(config)
        self.encoder = BertEncoder(config)
        self.pooler = BertPooler(config) if add_pooling_layer else None
        self.init_weights()

    def forward(
        self,
        input_ids: torch.Tensor,
        token_type_ids: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """ids, token types, mask [B, S] -> sequence output [B, S, H], pooled [B, H] (None
        without the pooler). Token types default to 0, the mask to all tokens."""
        if input_ids.size(1) > self.config.max_position_embeddings:
            raise ValueError(
                f"sequence length {input_ids.size(1)} exceeds the model's maximum "
                f"(max_position_embeddings={self.config.max_position_embeddings})"
            )
        if token_type_ids is None:
            token_type_ids = torch.zeros_like(input_ids)
        x = self.embeddings(input_ids, token_type_ids)
        mask = None
        if attention_mask is not None and not _no_padding(attention_mask):
            mask = padding_mask(attention_mask, x.dtype)
        x = self.encoder(x, mask)
        return x, (self.pooler(x) if self.pooler is not None else None)


class BertForPreTraining(BertPreTrainedModel):
    """Encoder + masked-LM and next-sentence heads."""

    def __init__(self, config: BertConfig) -> None:
        super().__init__(config)
        self.bert = BertModel(config)
        self.cls = BertPreTrainingHeads(config)
        self.cls.predictions.decoder.weight = self.bert.embeddings.word_embeddings.weight
        self.init_weights()

    def forward(
        self,
        input_ids: torch.Tensor,
        token_type_ids: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        masked_lm_positions: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """[B, S] inputs -> MLM logits [B, S, V] and NSP logits [B, 2].

        masked_lm_positions [B, M]: compute MLM logits only there ([B, M, V]), which saves
        the vocabulary projection of every unmasked token in pre-training.
        """
        sequence, pooled = self.bert(input_ids, token_type_ids, attention_mask)
        if masked_lm_positions is not None:
            index = masked_lm_positions.unsqueeze(-1).expand(-1, -1, sequence.size(-1))
            sequence = sequence.gather(1, index)
        return self.cls(sequence, pooled)


class BertForQuestionAnswering(BertPreTrainedModel):
    """Encoder (no pooler) + a linear layer giving span start and end logits."""

    def __init__(self, config: BertConfig) -> None:
        super().__init__(config)
        self.bert = BertModel(config, add_pooling_layer=False)
        self.qa_outputs = nn.Linear(config.hidden_size, 2)
        self.init_weights()

    def forward(
        self,
        input_ids: torch.Tensor,
        token_type_ids: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """[B, S] inputs -> start logits [B, S], end logits [B, S]."""
        sequence, _ = self.bert(input_ids, token_type_ids, attention_mask)
        start, end = self.qa_outputs(sequence).unbind(-1)
        return start, end


class BertForSequenceClassification(BertPreTrainedModel):
    """Encoder + dropout and a linear classifier on the pooled [CLS] output."""

    def __init__(self, config: BertConfig, num_labels: int = 2) -> None:
        super().__init__(config)
        self.num_labels = num_labels
        self.bert = BertModel(config)
        self.dropout = nn.Dropout(config.hidden_dropout_prob)
        self.classifier = nn.Linear(config.hidden_size, num_labels)
        self.init_weights()

    @classmethod
    def _init_kwargs(
        cls, state: dict[str, torch.Tensor], raw_config: dict[str, Any], kwargs: dict[str, Any]
    ) -> dict[str, Any]:
        """num_labels: as given, else the checkpoint's classifier, else the config's labels."""
        if "num_labels" in kwargs:
            return kwargs
        if "classifier.weight" in state:
            num_labels = state["classifier.weight"].shape[0]
        else:
            num_labels = len(raw_config.get("id2label") or {}) or 2
        return {**kwargs, "num_labels": num_labels}

    def _hf_config_extras(self) -> dict[str, Any]:
        labels = [f"LABEL_{i}" for i in range(self.num_labels)]
        return {
            "id2label": {str(i): label for i, label in enumerate(labels)},
            "label2id": {label: i for i, label in enumerate(labels)},
        }

    def forward(
        self,
        input_ids: torch.Tensor,
        token_type_ids: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """[B, S] inputs -> logits [B, num_labels]."""
        _, pooled = self.bert(input_ids, token_type_ids, attention_mask)
        return self.classifier(self.dropout(pooled))


class BertForTokenClassification(BertPreTrainedModel):
    """Encoder (no pooler) + dropout and a linear classifier on every position: one tag
    per token (named-entity recognition). `labels` names the tags in classifier order;
    they are saved as config.json's id2label / label2id, as transformers writes them."""

    def __init__(
        self,
        config: BertConfig,
        num_labels: int | None = None,
        labels: Sequence[str] | None = None,
    ) -> None:
        super().__init__(config)
        if labels is None:
            labels = [f"LABEL_{i}" for i in range(2 if num_labels is None else num_labels)]
        labels = list(labels)
        if num_labels is not None and num_labels != len(labels):
            raise ValueError(f"num_labels {num_labels} differs from the {len(labels)} labels given")
        if len(set(labels)) != len(labels):
            raise ValueError(f"labels repeat a name: {labels}")
        self.labels = labels
        self.num_labels = len(labels)
        self.bert = BertModel(config, add_pooling_layer=False)
        self.dropout = nn.Dropout(config.hidden_dropout_prob)
        self.classifier = nn.Linear(config.hidden_size, self.num_labels)
        self.init_weights()

    @classmethod
    def _init_kwargs(
        cls, state: dict[str, torch.Tensor], raw_config: dict[str, Any], kwargs: dict[str, Any]
    ) -> dict[str, Any]:
        """Without `labels`: the names of the config's id2label, sized as the checkpoint's
        classifier (or `num_labels`). With `labels` that are the checkpoint's own in another
        order, the checkpoint's order, so that its classifier rows keep their meaning."""
        id2label = raw_config.get("id2label") or {}
        saved = [str(id2label[k]) for k in sorted(id2label, key=int)]
        rows = state["classifier.weight"].shape[0] if "classifier.weight" in state else None
        given = kwargs.get("labels")
        if given is not None:
            if rows == len(given) and sorted(saved) == sorted(given):
                return {**kwargs, "labels": saved}
            return kwargs
        num_labels = kwargs.get("num_labels") or rows or len(saved) or 2
        return {
            **kwargs,
            "num_labels": num_labels,
            "labels": saved if len(saved) == num_labels else None,
        }

    def _hf_config_extras(self) -> dict[str, Any]:
        return {
            "id2label": {str(i): label for i, label in enumerate(self.labels)},
            "label2id": {label: i for i, label in enumerate(self.labels)},
        }

    def forward(
        self,
        input_ids: torch.Tensor,
        token_type_ids: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """[B, S] inputs -> logits [B, S, num_labels]."""
        sequence, _ = self.bert(input_ids, token_type_ids, attention_mask)
        return self.classifier(self.dropout(sequence))


def check_vocab(
    model_or_config: BertPreTrainedModel | BertConfig,
    tokenizer_or_vocab_file: FullTokenizer | str | os.PathLike,
) -> None:
    """Raise ValueError when the vocabulary does not fit the model's word embeddings.

    Equal sizes fit, and so does NVIDIA's padding of the vocabulary to the next multiple
    of 8 (30522 tokens, 30528 embeddings).
    """
    if isinstance(model_or_config, BertConfig):
        config, model_name = model_or_config, "the model configuration"
    else:
        config = model_or_config.config
        model_name = f"checkpoint {model_or_config.name_or_path or '(built in memory)'}"
    if isinstance(tokenizer_or_vocab_file, FullTokenizer):
        vocab_file, tokens = tokenizer_or_vocab_file.vocab_file, tokenizer_or_vocab_file.vocab_size
    else:
        vocab_file = Path(tokenizer_or_vocab_file)
        tokens = max(load_vocab(vocab_file).values()) + 1
    embeddings = config.vocab_size
    padded = tokens + (-tokens) % 8
    if embeddings in (tokens, padded):
        return
    raise ValueError(
        f"vocabulary {vocab_file} has {tokens} tokens but {model_name} has {embeddings} word "
        f"embeddings (vocab_size): use the vocab.txt the checkpoint was trained with"
    )
