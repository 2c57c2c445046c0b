"""Sequence classifiers: a BERT-shaped encoder built from fairseq2 layers, or a pretrained
Hugging Face encoder, each with a classification head on its pooled output.

Both take ``(tokens, segments, lengths)`` and return :class:`ClassifierOutput`; with ``layers``
they also return every layer's hidden states (embeddings first) and with ``attentions`` every
layer's attention map, which intermediate-layer methods (``distilbert``, ``universal_kd``,
``hidden_mse``) read through the adapter. ``layer_prefix`` names the stack of layers in the
model's ``state_dict``, so a student can be initialised from chosen teacher layers.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from seqkd.errors import DataError
from seqkd.runtime import ensure_fairseq2
from seqkd.tasks.classification.config import ClassifierConfig
from seqkd.tasks.classification.pretrained import load_encoder
from seqkd.tasks.layers import copy_layers

ensure_fairseq2()

from fairseq2.models.transformer import (  # noqa: E402
    StandardFeedForwardNetwork,
    StandardMultiheadAttention,
    StandardTransformerEncoder,
    StandardTransformerEncoderLayer,
    TransformerNormOrder,
)
from fairseq2.models.transformer.attention_bias import IdentityBias  # noqa: E402
from fairseq2.models.transformer.sdpa.naive import NaiveSDPA  # noqa: E402
from fairseq2.nn import BatchLayout, StandardLayerNorm  # noqa: E402


@dataclass(frozen=True)
class ClassifierOutput:
    logits: torch.Tensor  # (N, C)
    hidden: tuple[torch.Tensor, ...] = ()  # with ``layers``: (N, T, D) per layer, embeddings first
    attentions: tuple[torch.Tensor, ...] = ()  # with ``attentions``: (N, H, T, T) per layer


def lengths_mask(tokens: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """``(N, T)`` bool, True at real tokens."""
    return torch.arange(tokens.shape[1], device=tokens.device).unsqueeze(0) < lengths.to(tokens.device).unsqueeze(1)


def mean_pool(hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    weights = mask.unsqueeze(-1).to(hidden.dtype)
    return (hidden * weights).sum(1) / weights.sum(1).clamp(min=1.0)


class Embeddings(nn.Module):
    """BERT's input layer: token + learned position + segment embeddings, LayerNorm, dropout."""

    def __init__(self, vocab_size: int, dim: int, max_seq_len: int, pad_idx: int, dropout: float) -> None:
        super().__init__()
        self.tokens = nn.Embedding(vocab_size, dim, padding_idx=pad_idx)
        self.positions = nn.Embedding(max_seq_len, dim)
        self.segments = nn.Embedding(2, dim)
        self.norm = StandardLayerNorm(dim, bias=True)
        self.dropout = nn.Dropout(dropout)

    def forward(self, tokens: torch.Tensor, segments: torch.Tensor) -> torch.Tensor:
        positions = torch.arange(tokens.shape[1], device=tokens.device).unsqueeze(0)
        return self.dropout(self.norm(self.tokens(tokens) + self.positions(positions) + self.segments(segments)))


def build_encoder(num_layers: int, dim: int, heads: int, ffn_dim: int, dropout: float) -> StandardTransformerEncoder:
    """BERT's layer stack from fairseq2 layers: post-norm self-attention and feed-forward blocks.
    (The masked_lm task builds its encoder with it, so a classifier can start from a masked LM.)"""
    layers = [
        StandardTransformerEncoderLayer(
            StandardMultiheadAttention(dim, heads, NaiveSDPA(IdentityBias(), dropout_p=dropout)),
            StandardLayerNorm(dim, bias=True),
            StandardFeedForwardNetwork(dim, ffn_dim, bias=True),
            StandardLayerNorm(dim, bias=True),
            norm_order=TransformerNormOrder.POST,
            dropout_p=dropout,
        )
        for _ in range(num_layers)
    ]
    return StandardTransformerEncoder(layers)


def run_encoder(
    embeddings: Embeddings, encoder: StandardTransformerEncoder, tokens: torch.Tensor, segments: torch.Tensor,
    lengths: torch.Tensor, *, layers: bool = False, attentions: bool = False,
) -> tuple[torch.Tensor, tuple[torch.Tensor, ...], tuple[torch.Tensor, ...]]:
    """The last layer's output ``(N, T, D)``; with ``layers`` every layer's (embeddings first), with
    ``attentions`` every layer's attention map (else empty tuples)."""
    layout = BatchLayout(tuple(tokens.shape), lengths.tolist(), device=tokens.device)
    x = embeddings(tokens, segments)
    states, maps, handles = [x], [], []
    if layers:
        handles.append(encoder.register_layer_hook(lambda i, out, lay, n: states.append(out) or True))
    if attentions:
        handles += [layer.self_attn.register_attn_weight_hook(lambda m, a, w: maps.append(w)) for layer in encoder.layers]
    try:
        x = encoder(x, layout)
    finally:
        for handle in handles:
            handle.remove()
    return x, tuple(states) if layers else (), tuple(maps)


class EncoderClassifier(nn.Module):
    """A post-norm Transformer encoder (fairseq2 layers, BERT's layout) with a pooled head.

    Post-norm keeps every layer's output normalised, as in BERT, so hidden-state losses compare
    like with like across teacher and student layers. Attention uses fairseq2's naive SDPA, the one
    that can hand its weights to a hook (for ``attentions``); at classification lengths it costs
    no more than the fused kernel.
    """

    layer_prefix = "encoder.layers"

    def __init__(self, config: ClassifierConfig, vocab_size: int, num_labels: int, pad_idx: int, max_seq_len: int) -> None:
        super().__init__()
        dim = config.dim
        self.embeddings = Embeddings(vocab_size, dim, max_seq_len, pad_idx, config.dropout)
        self.encoder = build_encoder(config.num_layers, dim, config.heads, config.ffn_dim, config.dropout)
        self.pooler = nn.Sequential(nn.Linear(dim, dim), nn.Tanh()) if config.pooling == "cls" else None
        self.head = nn.Sequential(nn.Dropout(config.dropout), nn.Linear(dim, num_labels))

    def forward(
        self, tokens: torch.Tensor, segments: torch.Tensor, lengths: torch.Tensor, *, layers: bool = False, attentions: bool = False,
    ) -> ClassifierOutput:
        x, states, maps = run_encoder(self.embeddings, self.encoder, tokens, segments, lengths, layers=layers, attentions=attentions)
        mask = lengths_mask(tokens, lengths)
        pooled = self.pooler(x[:, 0]) if self.pooler is not None else mean_pool(x, mask)
        return ClassifierOutput(self.head(pooled), states, maps)


class PretrainedClassifier(nn.Module):
    """A pretrained Hugging Face encoder and a head on its pooled output.

    With ``pooling: cls`` the head reads the model's own pooler output through dropout and a
    linear layer, exactly as ``transformers``' ``*ForSequenceClassification`` classes do, so its
    logits can be checked against theirs.
    """

    def __init__(self, config: ClassifierConfig, folder: Path, num_labels: int) -> None:
        super().__init__()
        self.encoder = load_encoder(folder, config.layers)
        hf = self.encoder.config
        if config.pooling == "cls" and getattr(self.encoder, "pooler", None) is None:
            raise DataError(f"{folder}: the {hf.model_type} encoder has no pooler; use `pooling: mean`")
        self.pooling = config.pooling
        dropout = getattr(hf, "classifier_dropout", None) or getattr(hf, "hidden_dropout_prob", 0.1)
        self.head = nn.Sequential(nn.Dropout(dropout), nn.Linear(hf.hidden_size, num_labels))
        stacks = [name for name, m in self.encoder.named_modules() if isinstance(m, nn.ModuleList) and len(m) == hf.num_hidden_layers]
        if not stacks:
            raise DataError(f"{folder}: cannot find the {hf.model_type} encoder's stack of {hf.num_hidden_layers} layers")
        self.layer_prefix = f"encoder.{stacks[0]}"

    def forward(
        self, tokens: torch.Tensor, segments: torch.Tensor, lengths: torch.Tensor, *, layers: bool = False, attentions: bool = False,
    ) -> ClassifierOutput:
        mask = lengths_mask(tokens, lengths)
        out = self.encoder(
            input_ids=tokens, attention_mask=mask.long(), token_type_ids=segments,
            output_hidden_states=layers, output_attentions=attentions, return_dict=True,
        )
        pooled = out.pooler_output if self.pooling == "cls" else mean_pool(out.last_hidden_state, mask)
        return ClassifierOutput(self.head(pooled), tuple(out.hidden_states or ()), tuple(out.attentions or ()))


def init_from_layers(student: nn.Module, teacher: nn.Module, layers: list[int]) -> None:
    """Copy every weight of ``teacher`` into ``student``, layer ``layers[i]`` of the teacher's
    stack into layer ``i`` of the student's; refused where the models differ in kind or width."""
    if type(student) is not type(teacher):
        raise DataError(f"a {type(student).__name__} student cannot start from a {type(teacher).__name__} teacher's layers")
    if student.layer_prefix != teacher.layer_prefix:
        raise DataError(f"the student's layers ({student.layer_prefix}) are not the teacher's ({teacher.layer_prefix})")
    copy_layers(student, teacher, [student.layer_prefix], layers)


def init_encoder_from(student: nn.Module, source: nn.Module, layers: list[int] | None) -> None:
    """Copy the embeddings and encoder layers of ``source`` (a model built on the same
    ``Embeddings`` and ``build_encoder``, e.g. a masked LM) into the ``EncoderClassifier``
    ``student``: all layers, or teacher layer ``layers[i]`` into student layer ``i``. The pooler and
    head stay as built. Position embeddings beyond the student's ``max_seq_len`` are dropped; a
    student that reads longer inputs than ``source`` learned, or of another width, is refused."""
    if not isinstance(student, EncoderClassifier):
        raise DataError(f"a {type(student).__name__} cannot start from another task's encoder; use `kind: encoder`")
    prefix = "encoder.layers"
    if not hasattr(source, "embeddings") or getattr(source, "layer_prefix", None) != prefix:
        raise DataError(f"a {type(source).__name__} has no encoder a classifier can start from")
    depth, source_depth = len(student.encoder.layers), len(source.encoder.layers)
    layers = list(range(source_depth)) if layers is None else layers
    if len(layers) != depth or any(not 0 <= j < source_depth for j in layers):
        raise DataError(f"init layers {layers}: the classifier has {depth} layers and the source encoder {source_depth}; give one source layer (0..{source_depth - 1}) per classifier layer")
    target = student.state_dict()
    state = {}
    for key, value in source.state_dict().items():
        if key.startswith(prefix + "."):
            index, rest = key[len(prefix) + 1 :].split(".", 1)
            state.update({f"{prefix}.{i}.{rest}": value for i, j in enumerate(layers) if j == int(index)})
        elif key.startswith(("embeddings.", "encoder.")):
            state[key] = value
    positions = "embeddings.positions.weight"
    if positions in state and state[positions].shape[0] != target[positions].shape[0]:
        if state[positions].shape[0] < target[positions].shape[0]:
            raise DataError(f"the source encoder learned {state[positions].shape[0]} positions; this task reads up to {target[positions].shape[0]} tokens: lower task.max_seq_len")
        state[positions] = state[positions][: target[positions].shape[0]]
    shared = [k for k in target if k.startswith(("embeddings.", "encoder."))]
    missing = [k for k in shared if k not in state]
    misfit = [k for k in shared if k in state and state[k].shape != target[k].shape]
    if missing or misfit:
        key = (misfit or missing)[0]
        what = f"{key}: {tuple(state[key].shape)} there, {tuple(target[key].shape)} here" if misfit else f"it has no {key}"
        raise DataError(f"the source encoder does not fit the classifier ({what}); init needs equal widths and vocabularies")
    student.load_state_dict({**target, **{k: state[k] for k in shared}})
