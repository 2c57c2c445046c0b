"""S2T Transformers from fairseq2's own factory, with the subsampler's width in the recipe.

fairseq2's ``S2TTransformerFactory`` fixes the convolutional subsampler at 1,024 inner channels,
which is most of a small student's parameters; an override of its frontend makes it a model
setting. fairseq2 0.8.1's ``Conv1dFbankSubsampler.forward`` refuses every *padded* batch (it tests
``layout.padded`` where it means ``layout.packed``), so the subsampler here checks for packed
batches and otherwise runs fairseq2's own code. Everything else (pre-norm layers, sinusoidal
positions, the output projection) is fairseq2's.

With hybrid CTC/attention training the model also carries ``ctc_proj``, a linear CTC head on the
encoder's output (blank = the padding id, which no transcript contains).
"""

from __future__ import annotations

import torch

from seqkd.runtime import ensure_fairseq2
from seqkd.tasks.asr.audio import MEL_BINS
from seqkd.tasks.asr.config import S2TModelConfig

ensure_fairseq2()

from fairseq2.models.s2t_transformer import S2TTransformerConfig  # noqa: E402
from fairseq2.models.s2t_transformer.factory import S2TTransformerFactory  # noqa: E402
from fairseq2.models.s2t_transformer.feature_extractor import Conv1dFbankSubsampler  # noqa: E402
from fairseq2.models.s2t_transformer.frontend import S2TTransformerFrontend  # noqa: E402
from fairseq2.models.transformer import TransformerFrontend, TransformerModel  # noqa: E402
from fairseq2.nn import BatchLayout  # noqa: E402

SUBSAMPLING = 4  # two stride-2 convolutions


class _Subsampler(Conv1dFbankSubsampler):
    def forward(self, seqs: torch.Tensor, seqs_layout: BatchLayout) -> tuple[torch.Tensor, BatchLayout]:
        if seqs_layout.packed:
            raise ValueError("`seqs` must not be a packed batch.")
        out = self.layers(seqs.transpose(1, 2)).transpose(1, 2)
        lens = self._contract_seq_lens(seqs_layout.seq_lens) if seqs_layout.padded else None
        return out, BatchLayout.of(out, lens)


class _Factory(S2TTransformerFactory):
    def __init__(self, config: S2TTransformerConfig, subsampler_channels: int) -> None:
        super().__init__(config)
        self._subsampler_channels = subsampler_channels

    def create_encoder_frontend(self) -> TransformerFrontend:
        config = self._config
        subsampler = _Subsampler(
            num_channels=config.num_fbank_channels, inner_dim=self._subsampler_channels,
            feature_dim=config.model_dim, kernel_sizes=[5, 5],
        )
        return S2TTransformerFrontend(
            config.model_dim, subsampler, self.create_source_position_encoder(), proj=None, dropout_p=config.dropout_p,
        )


def build_s2t_transformer(
    config: S2TModelConfig, vocab_size: int, pad_idx: int, max_frames: int, max_target_len: int, ctc: bool = False,
) -> TransformerModel:
    s2t = S2TTransformerConfig(
        model_dim=config.dim,
        max_source_seq_len=max_frames // SUBSAMPLING + 2,
        num_fbank_channels=MEL_BINS,
        max_target_seq_len=max_target_len,
        target_vocab_size=vocab_size,
        pad_idx=pad_idx,
        num_encoder_layers=config.encoder_layers,
        num_decoder_layers=config.decoder_layers,
        num_encoder_attn_heads=config.heads,
        num_decoder_attn_heads=config.heads,
        ffn_inner_dim=config.ffn_dim,
        dropout_p=config.dropout,
    )
    model = _Factory(s2t, config.subsampler_channels).create_model()
    if ctc:
        model.ctc_proj = torch.nn.Linear(config.dim, vocab_size)
    return model
