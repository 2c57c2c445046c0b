"""Encoder-decoder Transformers from fairseq2's building blocks.

fairseq2's NLLB factory ties one width to both sides. Students in the distillation literature
(e.g. a 6-encoder / 1-decoder student with a half-width decoder) need the encoder and decoder sized
independently, so we assemble the same pre-norm blocks ourselves; the result is a plain
``fairseq2.models.transformer.TransformerModel`` that fairseq2's beam search drives unchanged.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, model_validator

from seqkd.runtime import ensure_fairseq2

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
    create_default_sdpa,
)
from fairseq2.models.transformer.attention_bias import CausalAttentionBias, IdentityBias  # noqa: E402
from fairseq2.nn import (  # noqa: E402
    SinusoidalPositionEncoder,
    StandardEmbedding,
    StandardLayerNorm,
    TiedProjection,
    init_scaled_embedding,
)


class TransformerConfig(BaseModel):
    """One model role (teacher, student, ...) of an encoder-decoder task (translation, summarization)."""

    model_config = ConfigDict(extra="forbid")

    encoder_layers: int = Field(6, ge=1, description="Number of encoder layers.")
    decoder_layers: int = Field(6, ge=1, description="Number of decoder layers.")
    encoder_dim: int = Field(512, ge=8, description="Encoder model width.")
    decoder_dim: int | None = Field(None, ge=8, description="Decoder width; defaults to encoder_dim.")
    encoder_ffn_dim: int = Field(2048, ge=8, description="Encoder feed-forward inner width.")
    decoder_ffn_dim: int | None = Field(
        None, ge=8, description="Decoder feed-forward width; defaults to encoder_ffn_dim scaled like decoder_dim."
    )
    encoder_heads: int = Field(8, ge=1, description="Encoder attention heads.")
    decoder_heads: int | None = Field(None, ge=1, description="Decoder attention heads; defaults to encoder_heads.")
    dropout: float = Field(0.1, ge=0.0, lt=1.0, description="Dropout probability.")

    @model_validator(mode="after")
    def _check_heads(self) -> "TransformerConfig":
        if self.encoder_dim % self.encoder_heads:
            raise ValueError(f"encoder_dim {self.encoder_dim} is not divisible by encoder_heads {self.encoder_heads}")
        if self.dec_dim % self.dec_heads:
            raise ValueError(f"decoder_dim {self.dec_dim} is not divisible by decoder_heads {self.dec_heads}")
        return self

    @property
    def dec_dim(self) -> int:
        return self.decoder_dim or self.encoder_dim

    @property
    def dec_ffn_dim(self) -> int:
        if self.decoder_ffn_dim is not None:
            return self.decoder_ffn_dim
        return self.encoder_ffn_dim * self.dec_dim // self.encoder_dim

    @property
    def dec_heads(self) -> int:
        return self.decoder_heads or self.encoder_heads


def build_transformer(config: TransformerConfig, vocab_size: int, pad_idx: int, max_seq_len: int) -> TransformerModel:
    """A pre-norm Transformer; one embedding is shared by encoder, decoder and output projection
    when both sides have the same width, otherwise each side has its own and the decoder's is tied
    to the output projection."""
    enc_dim, dec_dim = config.encoder_dim, config.dec_dim
    enc_embed = StandardEmbedding(vocab_size, enc_dim, pad_idx, init_fn=init_scaled_embedding)
    dec_embed = enc_embed if dec_dim == enc_dim else StandardEmbedding(
        vocab_size, dec_dim, pad_idx, init_fn=init_scaled_embedding
    )

    def frontend(embed: StandardEmbedding, dim: int) -> TransformerEmbeddingFrontend:
        pos = SinusoidalPositionEncoder(dim, max_seq_len, _legacy_pad_idx=1)
        return TransformerEmbeddingFrontend(dim, embed, pos, dropout_p=config.dropout)

    def ffn(dim: int, inner: int) -> StandardFeedForwardNetwork:
        return StandardFeedForwardNetwork(dim, inner, bias=True)

    encoder_layers = [
        StandardTransformerEncoderLayer(
            StandardMultiheadAttention(enc_dim, config.encoder_heads, create_default_sdpa(IdentityBias())),
            StandardLayerNorm(enc_dim, bias=True),
            ffn(enc_dim, config.encoder_ffn_dim),
            StandardLayerNorm(enc_dim, bias=True),
            norm_order=TransformerNormOrder.PRE,
            dropout_p=config.dropout,
        )
        for _ in range(config.encoder_layers)
    ]
    decoder_layers = [
        StandardTransformerDecoderLayer(
            StandardMultiheadAttention(dec_dim, config.dec_heads, create_default_sdpa(CausalAttentionBias())),
            StandardLayerNorm(dec_dim, bias=True),
            StandardMultiheadAttention(
                dec_dim, config.dec_heads, create_default_sdpa(IdentityBias()), kv_dim=enc_dim
            ),
            StandardLayerNorm(dec_dim, bias=True),
            ffn(dec_dim, config.dec_ffn_dim),
            StandardLayerNorm(dec_dim, bias=True),
            norm_order=TransformerNormOrder.PRE,
            dropout_p=config.dropout,
        )
        for _ in range(config.decoder_layers)
    ]
    return TransformerModel(
        enc_dim,
        frontend(enc_embed, enc_dim),
        StandardTransformerEncoder(encoder_layers, StandardLayerNorm(enc_dim, bias=True)),
        frontend(dec_embed, dec_dim),
        StandardTransformerDecoder(decoder_layers, StandardLayerNorm(dec_dim, bias=True)),
        TiedProjection(dec_embed.weight, bias=None),
        pad_idx,
        max_seq_len,
        max_seq_len,
    )
