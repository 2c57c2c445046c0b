"""CTranslate2 model specs of the encoder-decoder Transformers that ``model.py`` builds.

CTranslate2 (https://opennmt.net/CTranslate2) runs Transformer encoder-decoders in C++ with int8
weights. Its ``TransformerSpec`` describes the same pre-norm blocks fairseq2 assembles here; this
module fills one from a trained model, weight by weight:

- embeddings (each side's, shared or not) with fairseq2's ``sqrt(model_dim)`` scale, and the
  sinusoidal table fairseq2 adds (position ``p`` of a sequence reads row ``p + 1`` of
  ``SinusoidalPositionEncoder.freqs``, whose row 0 is padding);
- per layer: the pre-norm layer norms, attention (CTranslate2 fuses the self-attention q/k/v
  projections into one matrix, and the cross-attention k/v into one), the ReLU feed-forward net;
- each stack's final layer norm, and the output projection (tied to the decoder embedding); PAD
  gets a bias of -1e4 there, since fairseq2's beam search never lets PAD be generated;
- one vocabulary, the sentencepiece pieces in id order, with ``<pad>`` renamed ``<blank>`` (what
  CTranslate2's converters call padding); ``<unk>``, ``<s>`` and ``</s>`` keep their names, which
  are CTranslate2's defaults for unk, bos (the decoder's start token) and eos. Sources get their
  ``</s>`` from CTranslate2 (``add_source_eos``), as seqkd appends EOS to every source.

What CTranslate2 cannot express is refused by :func:`check_expressible` with one line that says
which part and whether a projection would make it expressible.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch

from seqkd.export import QUANTIZATIONS, ExportError
from seqkd.runtime import ensure_fairseq2
from seqkd.tasks.seq2seq.vocab import BOS, EOS, PAD, UNK

ensure_fairseq2()

from fairseq2.models.transformer import (  # noqa: E402
    StandardFeedForwardNetwork,
    StandardMultiheadAttention,
    StandardTransformerDecoder,
    StandardTransformerDecoderLayer,
    StandardTransformerEncoder,
    StandardTransformerEncoderLayer,
    TransformerEmbeddingFrontend,
    TransformerModel,
    TransformerNormOrder,
)
from fairseq2.models.transformer.attention_bias import CausalAttentionBias, IdentityBias  # noqa: E402
from fairseq2.nn import SinusoidalPositionEncoder, StandardEmbedding, StandardLayerNorm  # noqa: E402

MIN_POSITIONS = 1024  # rows of the position tables CTranslate2 gets (CTranslate2's default max_input_length)
PAD_BIAS = -1e4  # exp(-1e4) is 0 in every float type CTranslate2 computes in (float16 included)
SPECIAL_PIECES = {PAD: "<blank>", UNK: "<unk>", BOS: "<s>", EOS: "</s>"}
VOCABULARY_FILE = "sentencepiece.model"


def _activation(module: torch.nn.Module) -> Any | None:
    """CTranslate2's code for a feed-forward activation, None for one it does not have."""
    from ctranslate2.specs import common_spec

    act = common_spec.Activation
    if isinstance(module, torch.nn.ReLU):
        return act.RELU
    if isinstance(module, torch.nn.GELU):
        return act.GELUTanh if module.approximate == "tanh" else act.GELU
    if isinstance(module, torch.nn.SiLU):
        return act.SWISH
    return None


def check_expressible(model: torch.nn.Module) -> None:
    """Refuse, naming the part, a model that a CTranslate2 ``TransformerSpec`` cannot describe.

    Encoder and decoder may differ in width, depth and heads: the cross-attention's key and value
    projections already map the encoder's width onto the decoder's, in CTranslate2 as in fairseq2.
    """

    def refuse(what: str, remedy: str = "") -> None:
        raise ExportError(f"CTranslate2 cannot express this model: {what}; no projection would make it expressible{remedy}")

    if not isinstance(model, TransformerModel):
        refuse(f"it is a {type(model).__name__}, not a fairseq2 Transformer encoder-decoder")
    if not isinstance(model.encoder, StandardTransformerEncoder) or not isinstance(model.decoder, StandardTransformerDecoder):
        refuse(f"its stacks are a {type(model.encoder).__name__} and a {type(model.decoder).__name__}, not standard Transformer stacks")
    epsilons: set[float] = set()
    activations: set[str] = set()

    def frontend(side: str, module: torch.nn.Module, stack: torch.nn.Module) -> None:
        if not isinstance(module, TransformerEmbeddingFrontend) or not isinstance(module.embed, StandardEmbedding):
            refuse(f"the {side} reads {type(module).__name__} inputs (e.g. speech features), not token embeddings")
        if not isinstance(module.pos_encoder, SinusoidalPositionEncoder):
            refuse(f"the {side} positions come from a {type(module.pos_encoder).__name__}, not a sinusoidal table")
        norm(f"the {side}'s final layer norm", stack.layer_norm)

    def norm(where: str, module: torch.nn.Module | None) -> None:
        if not isinstance(module, StandardLayerNorm):
            refuse(f"{where} is a {type(module).__name__}, not a layer norm", " (seqkd exports pre-norm stacks with final layer norms)")
        epsilons.add(float(module.eps))

    def attention(where: str, module: torch.nn.Module, dim: int, kv_dim: int, bias: type) -> None:
        if not isinstance(module, StandardMultiheadAttention):
            refuse(f"{where} is a {type(module).__name__}, not standard multi-head attention")
        if module.num_key_value_heads != module.num_heads or module.head_dim * module.num_heads != dim:
            refuse(f"{where} has {module.num_heads} query and {module.num_key_value_heads} key/value heads of {module.head_dim} "
                   f"dimensions for the width {dim}; seqkd exports as many key/value heads as query heads, together as wide as the model")
        if any(getattr(module, name, None) is not None for name in ("q_norm", "k_norm", "v_norm", "pos_encoder")):
            refuse(f"{where} normalizes or rotates its queries and keys (q/k/v norms, rotary positions)")
        if type(getattr(module.sdpa, "bias", None)) is not bias:
            refuse(f"{where} biases its attention with a {type(getattr(module.sdpa, 'bias', None)).__name__}, not a {bias.__name__}")
        for name, cols in (("q_proj", dim), ("k_proj", kv_dim), ("v_proj", kv_dim), ("output_proj", dim)):
            if tuple(getattr(module, name).weight.shape) != (dim, cols):
                refuse(f"{where}.{name} is {tuple(getattr(module, name).weight.shape)}, not ({dim}, {cols})")

    def ffn(where: str, layer: torch.nn.Module) -> None:
        module = layer.ffn
        if not isinstance(module, StandardFeedForwardNetwork) or getattr(module, "inner_layer_norm", None) is not None:
            refuse(f"{where} is a {type(module).__name__} (gated or normalized inside), not a two-layer feed-forward network")
        if _activation(module.inner_activation) is None:
            refuse(f"{where} uses the activation {type(module.inner_activation).__name__}", "; CTranslate2 has ReLU, GELU and SiLU")
        activations.add(type(module.inner_activation).__name__)
        norm(f"{where}'s layer norm", layer.ffn_layer_norm)

    enc_dim = model.encoder_frontend.embed.embed_dim if isinstance(model.encoder_frontend, TransformerEmbeddingFrontend) else None
    dec_dim = model.decoder_frontend.embed.embed_dim
    frontend("encoder", model.encoder_frontend, model.encoder)
    frontend("decoder", model.decoder_frontend, model.decoder)
    for i, layer in enumerate(model.encoder.layers):
        where = f"encoder layer {i}"
        if not isinstance(layer, StandardTransformerEncoderLayer) or layer.norm_order != TransformerNormOrder.PRE:
            refuse(f"{where} is a {type(layer).__name__} normalizing {getattr(layer, 'norm_order', '?')}, not a pre-norm encoder layer")
        attention(f"{where}'s self-attention", layer.self_attn, enc_dim, enc_dim, IdentityBias)
        norm(f"{where}'s self-attention layer norm", layer.self_attn_layer_norm)
        ffn(f"{where}'s feed-forward network", layer)
    for i, layer in enumerate(model.decoder.layers):
        where = f"decoder layer {i}"
        if not isinstance(layer, StandardTransformerDecoderLayer) or layer.norm_order != TransformerNormOrder.PRE or layer.encoder_decoder_attn is None:
            refuse(f"{where} is a {type(layer).__name__} normalizing {getattr(layer, 'norm_order', '?')}, not a pre-norm decoder layer with encoder-decoder attention")
        attention(f"{where}'s self-attention", layer.self_attn, dec_dim, dec_dim, CausalAttentionBias)
        norm(f"{where}'s self-attention layer norm", layer.self_attn_layer_norm)
        attention(f"{where}'s encoder-decoder attention", layer.encoder_decoder_attn, dec_dim, enc_dim, IdentityBias)
        norm(f"{where}'s encoder-decoder attention layer norm", layer.encoder_decoder_attn_layer_norm)
        ffn(f"{where}'s feed-forward network", layer)
    if len(epsilons) > 1:
        refuse(f"its layer norms use different epsilons ({', '.join(f'{e:g}' for e in sorted(epsilons))})", "; CTranslate2 has one per model")
    if len(activations) > 1:
        refuse(f"its feed-forward networks use different activations ({', '.join(sorted(activations))})", "; CTranslate2 has one per model")
    vocab = model.decoder_frontend.embed.num_embeddings
    weight = getattr(model.final_proj, "weight", None)
    if weight is None or tuple(weight.shape) != (vocab, dec_dim):
        refuse(f"its output layer is a {type(model.final_proj).__name__} that is not a ({vocab}, {dec_dim}) projection onto the vocabulary")
    if model.encoder_frontend.embed.num_embeddings != vocab:
        refuse("its encoder and decoder vocabularies differ in size; seqkd models share one sentencepiece vocabulary")


def _array(tensor: torch.Tensor) -> np.ndarray:
    return tensor.detach().to(device="cpu", dtype=torch.float32).numpy().copy()


def _bias(module: torch.nn.Module) -> np.ndarray:
    """A projection's bias; zeros for one without (CTranslate2 fuses projections with biases)."""
    bias = getattr(module, "bias", None)
    return _array(bias) if bias is not None else np.zeros(module.weight.shape[0], dtype=np.float32)


def _linear(spec: Any, module: torch.nn.Module) -> None:
    spec.weight = _array(module.weight)
    spec.bias = _bias(module)


def _fused(spec: Any, modules: list[torch.nn.Module]) -> None:
    spec.weight = np.concatenate([_array(m.weight) for m in modules])
    spec.bias = np.concatenate([_bias(m) for m in modules])


def _norm(spec: Any, module: StandardLayerNorm) -> None:
    dim = module.normalized_shape[-1]
    spec.gamma = _array(module.weight) if module.weight is not None else np.ones(dim, dtype=np.float32)
    spec.beta = _array(module.bias) if module.bias is not None else np.zeros(dim, dtype=np.float32)


def _attention(spec: Any, module: StandardMultiheadAttention, norm: StandardLayerNorm, self_attention: bool) -> None:
    _norm(spec.layer_norm, norm)
    if self_attention:  # CTranslate2 fuses q, k and v of self-attention into one matrix
        _fused(spec.linear[0], [module.q_proj, module.k_proj, module.v_proj])
    else:  # and k, v of encoder-decoder attention, whose queries come from the decoder
        _linear(spec.linear[0], module.q_proj)
        _fused(spec.linear[1], [module.k_proj, module.v_proj])
    _linear(spec.linear[-1], module.output_proj)


def _ffn(spec: Any, layer: torch.nn.Module) -> None:
    _norm(spec.layer_norm, layer.ffn_layer_norm)
    _linear(spec.linear_0, layer.ffn.inner_proj)
    _linear(spec.linear_1, layer.ffn.output_proj)


def _inputs(spec: Any, frontend: TransformerEmbeddingFrontend) -> None:
    embeddings = spec.embeddings[0] if isinstance(spec.embeddings, list) else spec.embeddings
    embeddings.weight = _array(frontend.embed.weight)
    spec.scale_embeddings = frontend.scale != 1.0  # CTranslate2 scales by sqrt(width), fairseq2's scale
    encoder = frontend.pos_encoder
    # The same table, longer: the model's own rows first, then more of the same sinusoids, so that
    # CTranslate2 decodes a longer input than seqkd would cut it to instead of refusing it.
    rows = max(encoder.max_seq_len, MIN_POSITIONS)
    table = SinusoidalPositionEncoder(encoder.encoding_dim, rows, _legacy_pad_idx=encoder.sin_offset - 1)
    if not torch.equal(table.freqs[: encoder.max_seq_len + 1], encoder.freqs.cpu()):
        raise ExportError("the model's sinusoidal position table differs from fairseq2's; it cannot be extended")
    spec.position_encodings.encodings = _array(table.freqs[1:])  # row p + 1 is position p; row 0 is padding


def ctranslate2_spec(model: torch.nn.Module, pieces: list[str]) -> Any:
    """A validated ``ctranslate2.specs.TransformerSpec`` of ``model`` with ``pieces`` (the
    sentencepiece pieces in id order) as its one vocabulary; refuses what it cannot express."""
    from ctranslate2.specs import transformer_spec

    check_expressible(model)
    first = model.encoder.layers[0]
    if len(pieces) != model.decoder_frontend.embed.num_embeddings:
        raise ExportError(
            f"the vocabulary has {len(pieces)} pieces but the model {model.decoder_frontend.embed.num_embeddings} embeddings"
        )
    encoder = transformer_spec.TransformerEncoderSpec(
        len(model.encoder.layers), first.self_attn.num_heads, pre_norm=True, activation=_activation(first.ffn.inner_activation),
    )
    decoder = transformer_spec.TransformerDecoderSpec(
        len(model.decoder.layers), model.decoder.layers[0].self_attn.num_heads, pre_norm=True,
        activation=_activation(first.ffn.inner_activation),
    )
    _inputs(encoder, model.encoder_frontend)
    for layer_spec, layer in zip(encoder.layer, model.encoder.layers):
        _attention(layer_spec.self_attention, layer.self_attn, layer.self_attn_layer_norm, self_attention=True)
        _ffn(layer_spec.ffn, layer)
    _norm(encoder.layer_norm, model.encoder.layer_norm)
    _inputs(decoder, model.decoder_frontend)
    for layer_spec, layer in zip(decoder.layer, model.decoder.layers):
        _attention(layer_spec.self_attention, layer.self_attn, layer.self_attn_layer_norm, self_attention=True)
        _attention(layer_spec.attention, layer.encoder_decoder_attn, layer.encoder_decoder_attn_layer_norm, self_attention=False)
        _ffn(layer_spec.ffn, layer)
    _norm(decoder.layer_norm, model.decoder.layer_norm)
    decoder.projection.weight = _array(model.final_proj.weight)
    bias = _bias(model.final_proj)
    bias[PAD] = PAD_BIAS  # fairseq2's beam search never generates PAD
    decoder.projection.bias = bias

    spec = transformer_spec.TransformerSpec(encoder, decoder)
    vocabulary = [SPECIAL_PIECES.get(i, piece) for i, piece in enumerate(pieces)]
    spec.register_source_vocabulary(vocabulary)
    spec.register_target_vocabulary(vocabulary)
    spec.config.add_source_eos = True  # seqkd appends EOS to every source
    spec.config.decoder_start_token = SPECIAL_PIECES[BOS]
    spec.config.layer_norm_epsilon = float(model.encoder.layer_norm.eps)
    spec.validate()
    return spec


def translate_options(settings: Any, max_source_len: int) -> dict[str, Any]:
    """``Translator.translate_batch`` options that decode as seqkd's beam search does with
    ``settings`` (a ``BeamSettings``), all but ``max_decoding_length``, which depends on the batch's
    longest source (:func:`max_decoding_length`)."""
    return {
        "beam_size": settings.beam_size,
        "length_penalty": settings.len_penalty,
        "min_decoding_length": settings.min_len - 1,  # fairseq2 counts the EOS, CTranslate2 does not
        "no_repeat_ngram_size": settings.no_repeat_ngram,
        "max_input_length": max_source_len,  # CTranslate2 cuts to max_input_length - 1 pieces and adds EOS
    }


def max_decoding_length(settings: Any, longest_source: int, max_seq_len: int) -> int:
    """The hypothesis length (pieces, EOS excluded) seqkd's beam search allows a batch whose
    longest source has ``longest_source`` pieces (EOS excluded): fairseq2 allows
    ``int(a * source length + b)`` steps counting the source's EOS, the last of them a forced EOS,
    and no more than the model's ``max_seq_len`` positions, BOS and EOS included."""
    return max(0, min(max_seq_len - 2, int(settings.max_len_a * (longest_source + 1) + settings.max_len_b) - 1))


def write_ctranslate2(
    model: torch.nn.Module, vocabulary: Path, folder: Path, quantization: str, settings: Any,
    max_source_len: int, max_seq_len: int,
) -> dict[str, Any]:
    """Write ``model`` as a CTranslate2 model into the empty ``folder``, its sentencepiece model
    ``vocabulary`` beside it (as ``sentencepiece.model``); returns what the export's manifest says
    about decoding with it as seqkd's beam search does with ``settings``."""
    import ctranslate2
    import sentencepiece as spm

    if quantization not in QUANTIZATIONS:
        raise ExportError(f"quantization {quantization!r} is not one of {', '.join(QUANTIZATIONS)}")
    processor = spm.SentencePieceProcessor(model_file=str(vocabulary))
    spec = ctranslate2_spec(model, [processor.id_to_piece(i) for i in range(processor.get_piece_size())])
    spec.optimize(quantization=quantization)
    spec.save(str(folder))
    shutil.copyfile(vocabulary, folder / VOCABULARY_FILE)
    a, b = settings.max_len_a, settings.max_len_b
    return {
        "ctranslate2": ctranslate2.__version__,
        "sentencepiece_model": VOCABULARY_FILE,
        "translate_options": translate_options(settings, max_source_len),
        "max_decoding_length": f"min({max_seq_len - 2}, int({a} * (n + 1) + {b}) - 1) for a batch whose longest source has n pieces",
        "note": "sources are sentencepiece pieces without </s> (CTranslate2 adds it); greedy decoding (beam_size 1) "
                "of a float32 export gives seqkd's tokens; int8 rounds the weights",
    }
