"""The ``translation`` task adapter: parallel text in, BLEU/chrF out."""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, ClassVar

import sacrebleu
import torch
import torch.nn.functional as F

from seqkd.tasks.base import HiddenStates, NBest, TargetSet, TaskAdapter, TokenLogits
from seqkd.tasks.translation.batching import VIEW, EpochReader, Example, TranslationBatch, fixed_batches
from seqkd.tasks.translation.config import TranslationConfig, TranslationEvaluation, TranslationGeneration, TranslationNoise
from seqkd.errors import DataError
from seqkd.hashing import file_sha256, settings_json
from seqkd.tasks.translation.corpus import (
    Pair,
    read_parallel,
    read_tsv,
    split_of,
)
from seqkd.tasks.translation.decode import beam_search, score
from seqkd.tasks.translation.model import TransformerConfig, build_transformer
from seqkd.tasks.translation.vocab import BOS, EOS, PAD, load_vocabulary, train_vocabulary, vocabulary_digest

SPLITS = ("train", "valid", "test")


class TranslationTask(TaskAdapter):
    name: ClassVar[str] = "translation"
    description: ClassVar[str] = "Encoder-decoder Transformer translation (fairseq2), BLEU/chrF with sacreBLEU"
    capabilities: ClassVar[frozenset[str]] = frozenset({"token_logits", "generation", "hidden_states", "parameter_classes", "perturb"})
    config_schema = TranslationConfig
    model_schema = TransformerConfig
    evaluation_schema = TranslationEvaluation
    generation_schema = TranslationGeneration
    noise_schema = TranslationNoise
    headline_metrics: ClassVar[dict[str, str]] = {"bleu": "BLEU", "chrf": "chrF"}

    config: TranslationConfig

    def __init__(self, config: TranslationConfig, workdir: Path, base_dir: Path, views: Mapping[str, Path] | None = None) -> None:
        super().__init__(config, workdir, base_dir, views)
        self._pairs: dict[str, list[Pair]] | None = None
        self._encoded: dict[str, list[Example]] = {}
        self._vocab = None
        self._data_digest: str | None = None

    # -- data ---------------------------------------------------------------------------------

    def _path(self, value: str) -> Path:
        path = Path(value)
        return path if path.is_absolute() else self.base_dir / path

    def _files(self) -> list[Path]:
        data, cfg = self.config.data, self.config
        names = [data.corpus] if data.corpus else [data.train, data.valid, data.test]
        if data.format == "tsv":
            return [self._path(n) for n in names if n]
        return [self._path(f"{n}.{lang}") for n in names if n for lang in (cfg.source_lang, cfg.target_lang)]

    def _read(self, name: str) -> list[Pair]:
        data, cfg = self.config.data, self.config
        if data.format == "tsv":
            return list(read_tsv(self._path(name), data.source_column, data.target_column))
        return list(
            read_parallel(self._path(f"{name}.{cfg.source_lang}"), self._path(f"{name}.{cfg.target_lang}"))
        )

    def pairs(self) -> dict[str, list[Pair]]:
        """The train/valid/test pairs (training pairs capped by ``max_train_pairs``)."""
        if self._pairs is None:
            data = self.config.data
            if data.corpus:
                pairs: dict[str, list[Pair]] = {s: [] for s in SPLITS}
                for pair in self._read(data.corpus):
                    pairs[split_of(pair.source, data.valid_fraction, data.test_fraction)].append(pair)
            else:
                pairs = {s: self._read(getattr(data, s)) for s in SPLITS}
            if data.max_train_pairs is not None:
                pairs["train"] = pairs["train"][: data.max_train_pairs]
            for split, items in pairs.items():
                needed = self.config.min_train_pairs if split == "train" else 1
                if len(items) < needed:
                    raise DataError(
                        f"the {split} split has {len(items)} pairs; at least {needed} are needed "
                        f"(data: {', '.join(str(p) for p in self._files())})"
                    )
            self._pairs = pairs
        return self._pairs

    def _view_file(self, view: str, split: str) -> Path:
        path = self.views[view] / f"{split}.txt"
        if not path.exists():
            raise DataError(f"{path}: no such file; input view {view!r} needs one line per {split} example")
        return path

    def view_lines(self, view: str, split: str) -> list[str]:
        """The view's text of every example of ``split``, aligned with ``pairs()[split]``."""
        path = self._view_file(view, split)
        lines = path.read_text(encoding="utf-8").split("\n")
        if lines and lines[-1] == "":
            lines.pop()
        expected = len(self.pairs()[split]) if split != "train" or self.config.data.max_train_pairs is None else None
        if expected is not None and len(lines) != expected:
            raise DataError(f"{path}: {len(lines)} lines, but the {split} split has {expected} pairs; a view needs one line per pair")
        return lines[: len(self.pairs()[split])]

    def _data_fingerprint(self) -> str:
        """The config and the parallel data: what the vocabulary depends on (views do not)."""
        if self._data_digest is None:
            h = hashlib.sha256(settings_json(self.config).encode())
            for path in self._files():
                if not path.exists():
                    raise DataError(f"{path}: no such file")
                h.update(file_sha256(path).encode())
            self._data_digest = h.hexdigest()[:16]
        return self._data_digest

    def compute_fingerprint(self) -> str:
        if not self.views:
            return self._data_fingerprint()
        h = hashlib.sha256(self._data_fingerprint().encode())
        for view in sorted(self.views):
            h.update(view.encode())
            for split in SPLITS:
                h.update(file_sha256(self._view_file(view, split)).encode())
        return h.hexdigest()[:16]

    @property
    def _vocab_path(self) -> Path:
        return self.workdir / f"spm-{self._data_fingerprint()}.model"

    def prepare(self) -> None:
        pairs = self.pairs()
        self.workdir.mkdir(parents=True, exist_ok=True)
        if not self._vocab_path.exists():
            sentences = [s for p in pairs["train"] for s in (p.source, p.target)]
            train_vocabulary(sentences, self._vocab_path, self.config.vocab_size, self.config.vocab_model)
        self._vocab = load_vocabulary(self._vocab_path)

    @property
    def vocab(self):
        if self._vocab is None:
            self.prepare()
        return self._vocab

    @property
    def vocab_size(self) -> int:
        return self.vocab.get_piece_size()

    def compute_vocabulary_id(self) -> str:
        if not self._vocab_path.exists():
            self.prepare()
        return vocabulary_digest(self._vocab_path)

    def encode_sources(self, texts: list[str]) -> list[list[int]]:
        return [ids + [EOS] for ids in self.vocab.encode(texts)]

    def _examples(self, split: str) -> list[Example]:
        """The split as token tensors, encoded once per process."""
        if split not in self._encoded:
            pairs = self.pairs()[split]
            src = self.encode_sources([p.source for p in pairs])
            tgt = self.vocab.encode([p.target for p in pairs])
            limit = self.config.max_seq_len
            # a view (e.g. an ASR transcript) is cut to the length limit rather than dropping its pair
            views = {v: [ids[: limit - 1] + [EOS] for ids in self.vocab.encode(self.view_lines(v, split))] for v in self.views}
            examples = [
                {"source": torch.tensor(s), "target": torch.tensor([BOS] + t + [EOS]), "index": i,
                 **{VIEW + v: torch.tensor(ids[i]) for v, ids in views.items()}}
                for i, (s, t) in enumerate(zip(src, tgt))
                if len(s) <= limit and len(t) + 2 <= limit
            ]
            # indices are positions in this filtered list, so caches can store rows densely
            for i, example in enumerate(examples):
                example["index"] = i
            if not examples:
                raise DataError(f"no {split} pair fits max_seq_len={limit} tokens")
            self._encoded[split] = examples
        return self._encoded[split]

    def train_reader(self, max_tokens: int, seed: int, target_sets: Sequence[TargetSet] = (None,)) -> EpochReader:
        original = self._examples("train")
        limit = self.config.max_seq_len
        examples: list[Example] = []
        for targets in target_sets:
            if targets is None:
                examples += original
                continue
            replaced = [
                {**original[i], "target": torch.tensor([BOS] + t + [EOS])}
                for i, t in sorted(targets.items())
                if t and len(t) + 2 <= limit
            ]
            if not replaced:
                raise DataError("the replacement training targets are empty (e.g. a teacher that generated nothing)")
            examples += replaced
        return EpochReader(examples, max_tokens, self.config.max_seq_len, PAD, seed)

    def valid_batches(self, max_tokens: int) -> list[TranslationBatch]:
        return fixed_batches(self._examples("valid"), max_tokens, self.config.max_seq_len, PAD)

    def num_examples(self, split: str) -> int:
        return len(self._examples(split))

    def indexed_batches(self, split: str, start: int, stop: int, max_tokens: int) -> list[TranslationBatch]:
        return fixed_batches(self._examples(split)[start:stop], max_tokens, self.config.max_seq_len, PAD)

    # -- models -------------------------------------------------------------------------------

    def build_model(self, model_config: TransformerConfig, output_space: dict[str, Any] | None = None) -> torch.nn.Module:
        if output_space is not None and output_space.get("vocabulary") != self.vocabulary_id():
            raise DataError(
                f"a translation model's vocabulary ({output_space.get('vocabulary')}) is its sentencepiece model; "
                f"this task's is {self.vocabulary_id()}: a teacher of another vocabulary cannot be rebuilt here"
            )
        return build_transformer(model_config, self.vocab_size, PAD, self.config.max_seq_len + 2)

    def forward(self, model: torch.nn.Module, batch: TranslationBatch, view: str | None = None) -> TokenLogits:
        source, layout = batch.inputs(view)
        logits = model(source, layout, batch.target_in, batch.target_layout())
        return TokenLogits(logits, batch.target_out, batch.target_out != PAD)

    def perturb(self, batch: TranslationBatch, noise: TranslationNoise, generator: torch.Generator, view: str | None = None) -> TranslationBatch:
        """Drop, replace and locally shuffle each source's tokens (EOS stays last)."""
        tokens, layout = batch.inputs(view)
        rows = []
        for row, n in zip(tokens.cpu(), layout.seq_lens):
            words = row[: n - 1]  # without EOS
            keep = torch.rand(len(words), generator=generator) >= noise.drop
            if not keep.any() and len(words):
                keep[torch.randint(len(words), (1,), generator=generator)] = True  # never an empty source
            words = words[keep]
            swap = torch.rand(len(words), generator=generator) < noise.replace
            random_ids = torch.randint(EOS + 1, self.vocab_size, (len(words),), generator=generator)
            words = torch.where(swap, random_ids, words)
            if noise.shuffle_window > 1:
                keys = torch.arange(len(words)) + torch.rand(len(words), generator=generator) * noise.shuffle_window
                words = words[keys.argsort()]
            rows.append(torch.cat([words, torch.tensor([EOS])]))
        lens = [len(r) for r in rows]
        padded = torch.nn.utils.rnn.pad_sequence(rows, batch_first=True, padding_value=PAD).to(tokens.device)
        return batch.with_inputs(view, padded, lens)

    def hidden_states(self, model: torch.nn.Module, batch: TranslationBatch, view: str | None = None) -> HiddenStates:
        """The decoder's output (after its final layer norm, before the output projection).

        fairseq2 0.8.1's ``TransformerModel`` has no public encode/decode split, so this runs the
        same steps as its ``forward`` (frontends, encoder, decoder, ``final_proj``) and keeps the
        decoder output; the logits are therefore identical to ``forward``'s.
        """
        source, source_layout = model.encoder_frontend(*batch.inputs(view))
        encoded = model.encoder(source, source_layout)
        target, target_layout = model.decoder_frontend(batch.target_in, batch.target_layout())
        hidden = model.decoder(target, target_layout, encoded, source_layout)
        mask = batch.target_out != PAD
        return HiddenStates(hidden, mask, TokenLogits(model.final_proj(hidden), batch.target_out, mask))

    def parameter_classes(self, model: torch.nn.Module) -> dict[str, list[str]]:
        """Weight classes over layers: ``encoder.self_attn.q_proj.weight`` -> the names of that weight
        in encoder layers 0, 1, ...; a weight outside the layer stacks is a class of one.

        The embeddings are classes by role, ``encoder.embed`` and ``decoder.embed``. When a model
        shares one embedding between both sides (and the output projection, which is always tied to
        the decoder's), both classes name the same parameter.
        """
        first_name = {id(p): n for n, p in reversed(list(model.named_parameters(remove_duplicate=False)))}
        classes: dict[str, list[str]] = {
            "encoder.embed": [first_name[id(model.encoder_frontend.embed.weight)]],
            "decoder.embed": [first_name[id(model.decoder_frontend.embed.weight)]],
        }
        for name, _ in model.named_parameters():
            stack, _, rest = name.partition(".layers.")
            if rest:
                _, _, kind = rest.partition(".")  # drop the layer index; layers are listed in order
                classes.setdefault(f"{stack}.{kind}", []).append(name)
            elif not name.endswith("frontend.embed.weight"):
                classes[name] = [name]
        return classes

    @classmethod
    def layer_counts(cls, model_config: TransformerConfig) -> dict[str, int]:
        """The depth of each layer stack, the prefix of its classes (known before a model is built)."""
        return {"encoder": model_config.encoder_layers, "decoder": model_config.decoder_layers}

    def nll(self, output: TokenLogits, label_smoothing: float) -> tuple[torch.Tensor, int]:
        mask = output.mask
        loss = F.cross_entropy(
            output.logits[mask].float(), output.targets[mask], label_smoothing=label_smoothing, reduction="sum"
        )
        return loss, int(mask.sum())

    # -- decoding and metrics -----------------------------------------------------------------

    def translate(self, model: torch.nn.Module, sources: list[str], settings: TranslationGeneration) -> list[str]:
        """Detokenized best hypotheses for ``sources``."""
        decoded = beam_search(model, self.encode_sources(sources), self.vocab_size, settings, self.config.max_seq_len)
        return self.vocab.decode(decoded.token_ids)

    def eval_inputs(self, split: str, options: TranslationEvaluation) -> list[str]:
        if options.view is not None:
            if options.view not in self.views:
                raise DataError(f"evaluation.view {options.view!r} is not an input view of this task (views: {', '.join(sorted(self.views)) or 'none'})")
            return self.view_lines(options.view, split)
        return [p.source for p in self.pairs()[split]]

    def predict(self, model: torch.nn.Module, inputs: list[str], options: TranslationEvaluation) -> list[str]:
        return self.translate(model, [line.strip() for line in inputs], options)

    def score(self, split: str, predictions: list[str], options: TranslationEvaluation) -> dict[str, Any]:
        references = [p.target for p in self.pairs()[split][: len(predictions)]]
        report: dict[str, Any] = {"split": split, "sentences": len(predictions), "beam_size": options.beam_size}
        report.update(score(predictions, references))
        return report

    @classmethod
    def report_notes(cls, metrics: dict[str, Any]) -> list[str]:
        return [f"BLEU: {metrics['bleu_signature']}"] if "bleu_signature" in metrics else []

    def generate(
        self, model: torch.nn.Module, split: str, start: int, stop: int, settings: TranslationGeneration, nbest: int
    ) -> list[NBest]:
        sources = [example["source"].tolist() for example in self._examples(split)[start:stop]]
        return beam_search(model, sources, self.vocab_size, settings, self.config.max_seq_len, nbest).nbest

    def detokenize(self, tokens: list[int]) -> str:
        return self.vocab.decode(tokens)

    def target_texts(self, split: str, start: int, stop: int) -> list[str]:
        return [self.vocab.decode(example["target"][1:-1].tolist()) for example in self._examples(split)[start:stop]]

    def sentence_score(self, hypothesis: str, reference: str) -> float:
        """Smoothed sentence-BLEU (sacreBLEU, effective order)."""
        return sacrebleu.metrics.BLEU(effective_order=True).sentence_score(hypothesis, [reference]).score
