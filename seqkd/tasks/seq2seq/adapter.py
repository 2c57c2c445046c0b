"""What every encoder-decoder task shares: text pairs in, a sentencepiece vocabulary, fairseq2
Transformers, token-budget batches, noise and beam search.

A task (translation, summarization) subclasses :class:`Seq2SeqTask` and supplies how its files are
read (``read_splits``), how long its sides may be, and how its outputs are scored; everything a
method sees (``forward``, ``hidden_states``, ``generate``, ``perturb``, ...) lives here once.
"""

from __future__ import annotations

import hashlib
from abc import abstractmethod
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
import torch.nn.functional as F

from seqkd.errors import DataError
from seqkd.hashing import file_sha256, settings_json
from seqkd.tasks.base import HiddenStates, NBest, TargetSet, TaskAdapter, TokenLogits, with_target_sets
from seqkd.tasks.layers import copy_layers, layers_problem
from seqkd import distributed
from seqkd.tasks.seq2seq.batching import (
    VIEW, EpochReader, Example, Seq2SeqBatch, StoredEpochReader, StoredItems, fixed_batches, stored_batches,
)
from seqkd.tasks.seq2seq.corpus import Pair
from seqkd.tasks.seq2seq.config import BeamSettings, Seq2SeqNoise, VocabularyConfig
from seqkd.tasks.seq2seq.decode import Decoded, beam_search
from seqkd.tasks.seq2seq.model import TransformerConfig, build_transformer
from seqkd.tasks.seq2seq.store import StoredSplit, TokenStore, build_store, store_dir
from seqkd.tasks.seq2seq.vocab import BOS, EOS, PAD, load_vocabulary, train_vocabulary, vocabulary_digest

SPLITS = ("train", "valid", "test")
SENTENCE_END = frozenset(".!?")


class Seq2SeqTask(TaskAdapter):
    """The shared part of the encoder-decoder tasks; see the module docstring."""

    capabilities: ClassVar[frozenset[str]] = frozenset({"token_logits", "generation", "hidden_states", "parameter_classes", "perturb", "ctranslate2", "layer_init"})
    model_schema = TransformerConfig
    generation_schema: ClassVar[type[BeamSettings]] = BeamSettings
    noise_schema = Seq2SeqNoise
    # which side's length groups examples into batches and counts against ``max_tokens``
    batch_by: ClassVar[str] = "target"
    # text tasks keep their encoded corpus in a memory-mapped token store (``store.py``) shared by
    # every process; a task whose sources are not text (speech features) keeps the in-memory lists
    token_store: ClassVar[bool] = False

    config: VocabularyConfig

    def __init__(self, config: VocabularyConfig, workdir: Path, base_dir: Path, views: Mapping[str, Path] | None = None) -> None:
        super().__init__(config, workdir, base_dir, views)
        self._pairs: dict[str, list[Pair]] | None = None
        self._encoded: dict[str, list[Example]] = {}
        self._vocab = None
        self._data_digest: str | None = None
        self._sentence_ends: torch.Tensor | None = None
        self._split_pairs: dict[str, list[Pair]] = {}
        self._store: TokenStore | None = None

    # -- what a task says about itself --------------------------------------------------------

    @abstractmethod
    def data_files(self) -> list[Path]:
        """Every file the pairs are read from (hashed into the fingerprint)."""

    @abstractmethod
    def read_splits(self) -> dict[str, list[Pair]]:
        """The train/valid/test pairs, read and checked (bad lines named by ``file:line``)."""

    @property
    @abstractmethod
    def max_source_len(self) -> int:
        """Source tokens (EOS included) a model reads."""

    @property
    @abstractmethod
    def max_target_len(self) -> int:
        """Target tokens (BOS/EOS included) a model is trained on; longer pairs are left out of training."""

    def encode_sources(self, texts: list[str]) -> list[list[int]] | list[torch.Tensor]:
        """Token ids + EOS of each source; a task that truncates long sources, or whose sources
        are not text (speech: a feature tensor per utterance), overrides this."""
        return [ids + [EOS] for ids in self.vocab.encode(texts)]

    def vocabulary_texts(self, pairs: list[Pair]) -> list[str]:
        """What the sentencepiece vocabulary is trained on: both sides (speech: transcripts only)."""
        return [s for p in pairs for s in (p.source, p.target)]

    def iter_pairs(self, splits: Sequence[str] = SPLITS) -> Iterator[tuple[str, Pair]]:
        """``(split, pair)`` of the ``splits`` asked for, in data order, the training pairs capped
        as ``read_splits`` caps them. A task whose files can be streamed overrides this so that a
        corpus is never held in memory whole; this default reads ``read_splits``."""
        pairs = self.pairs()
        for split in splits:
            for pair in pairs[split]:
                yield split, pair

    def encode_chunk(self, pairs: list[Pair]) -> tuple[list[list[int]], list[list[int]], int]:
        """Source ids (EOS included), target ids (BOS and EOS included) and how many sources were
        cut to ``max_source_len``: what the token store holds of a chunk of pairs."""
        sources = self.encode_sources([p.source for p in pairs])
        targets = [[BOS] + t + [EOS] for t in self.vocab.encode([p.target for p in pairs])]
        return sources, targets, 0

    @property
    def _uses_store(self) -> bool:
        # views stay on the in-memory path (their files belong to upstream stages, not to the data)
        return self.token_store and not self.views

    # -- data ---------------------------------------------------------------------------------

    def resolve(self, value: str) -> Path:
        path = Path(value)
        return path if path.is_absolute() else self.base_dir / path

    def pairs(self) -> dict[str, list[Pair]]:
        """The train/valid/test pairs, each split checked for size."""
        if self._pairs is None:
            pairs = self.read_splits()
            for split, items in pairs.items():
                needed = self.config.min_train_pairs if split == "train" else 1
                if len(items) < needed:
                    raise DataError(
                        f"the {split} split has {len(items)} pairs; at least {needed} are needed "
                        f"(data: {', '.join(str(p) for p in self.data_files())})"
                    )
            self._pairs = pairs
        return self._pairs

    def _view_file(self, view: str, split: str) -> Path:
        path = self.views[view] / f"{split}.txt"
        if not path.exists():
            raise DataError(f"{path}: no such file; input view {view!r} needs one line per {split} example")
        return path

    def split_pairs(self, split: str) -> list[Pair]:
        """One split's pairs; with a token store, read by themselves (streaming past the others)
        rather than with the whole corpus."""
        if self._pairs is not None or not self._uses_store:
            return self.pairs()[split]
        if split not in self._split_pairs:
            self._split_pairs[split] = [pair for _, pair in self.iter_pairs((split,))]
        return self._split_pairs[split]

    def view_lines(self, view: str, split: str) -> list[str]:
        """The view's text of every example of ``split``, aligned with ``pairs()[split]``."""
        path = self._view_file(view, split)
        lines = path.read_text(encoding="utf-8").split("\n")
        if lines and lines[-1] == "":
            lines.pop()
        capped = split == "train" and getattr(getattr(self.config, "data", None), "max_train_pairs", None) is not None
        expected = None if capped else len(self.pairs()[split])
        if expected is not None and len(lines) != expected:
            raise DataError(f"{path}: {len(lines)} lines, but the {split} split has {expected} pairs; a view needs one line per pair")
        return lines[: len(self.pairs()[split])]

    def _data_fingerprint(self) -> str:
        """The config and the data files: what the vocabulary depends on (views do not)."""
        if self._data_digest is None:
            h = hashlib.sha256(settings_json(self.config).encode())
            for path in self.data_files():
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
        if self._uses_store:
            return self._prepare_store()
        pairs = self.pairs()
        self.workdir.mkdir(parents=True, exist_ok=True)
        if not self._vocab_path.exists():
            train_vocabulary(self.vocabulary_texts(pairs["train"]), self._vocab_path, self.config.vocab_size, self.config.vocab_model)
        self._vocab = load_vocabulary(self._vocab_path)

    def _prepare_store(self) -> None:
        """The vocabulary, trained on a stream of the training sentences, and the token store; both
        are built once (by rank 0: the engine prepares tasks with ``distributed.main_first``) and
        opened by every process."""
        if self._store is not None:
            return
        self.workdir.mkdir(parents=True, exist_ok=True)
        if not self._vocab_path.exists():
            counted, failed = {"train": 0}, []

            def sentences() -> Iterator[str]:
                # sentencepiece would turn an error raised here (a bad line) into its own
                # RuntimeError: keep it, end the stream, and raise it once training returns
                try:
                    for _, pair in self.iter_pairs(("train",)):
                        counted["train"] += 1
                        yield pair.source
                        yield pair.target
                except Exception as exc:
                    failed.append(exc)

            try:
                train_vocabulary(sentences(), self._vocab_path, self.config.vocab_size, self.config.vocab_model)
                if failed:
                    raise failed[0]
                self._check_size("train", counted["train"])
            except Exception:
                self._vocab_path.unlink(missing_ok=True)  # no vocabulary of data that was refused
                if failed:
                    raise failed[0] from None
                self._check_size("train", counted["train"])
                raise
        self._vocab = load_vocabulary(self._vocab_path)
        parts = {"data": self._data_fingerprint(), "vocabulary": vocabulary_digest(self._vocab_path)}
        folder = store_dir(self.workdir, *parts.values())
        if not folder.exists():
            build_store(
                folder, parts, self.vocab_size, self.iter_pairs(), self.encode_chunk,
                lambda src, tgt: src <= self.max_source_len and tgt <= self.max_target_len,
            )
        store = TokenStore.open(folder, parts, hashes=distributed.is_main())
        for split in SPLITS:
            self._check_size(split, store.info(split)["pairs"])
        self._store = store

    def _check_size(self, split: str, count: int) -> None:
        needed = self.config.min_train_pairs if split == "train" else 1
        if count < needed:
            raise DataError(
                f"the {split} split has {count} pairs; at least {needed} are needed "
                f"(data: {', '.join(str(p) for p in self.data_files())})"
            )

    @property
    def store(self) -> TokenStore:
        if self._store is None:
            self.prepare()
        assert self._store is not None
        return self._store

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

    def _examples(self, split: str) -> list[Example] | StoredSplit:
        """The split as token tensors, encoded once per process (or read from the token store, a
        sequence of the same examples); pairs too long for the model are left out."""
        if split not in self._encoded and self._uses_store:
            examples = self.store.split(split)
            if not len(examples):
                raise DataError(f"no {split} pair fits the length limits ({self.max_source_len} source, {self.max_target_len} target tokens)")
            self._encoded[split] = examples  # type: ignore[assignment]
        if split not in self._encoded:
            pairs = self.pairs()[split]
            src = self.encode_sources([p.source for p in pairs])
            tgt = self.vocab.encode([p.target for p in pairs])
            # a view (e.g. an ASR transcript) is cut to the length limit rather than dropping its pair
            cut = self.max_source_len - 1
            views = {v: [ids[:cut] + [EOS] for ids in self.vocab.encode(self.view_lines(v, split))] for v in self.views}
            examples = [
                {"source": torch.as_tensor(s), "target": torch.tensor([BOS] + t + [EOS]), "index": i,
                 **{VIEW + v: torch.tensor(ids[i]) for v, ids in views.items()}}
                for i, (s, t) in enumerate(zip(src, tgt))
                if len(s) <= self.max_source_len and len(t) + 2 <= self.max_target_len
            ]
            # indices are positions in this filtered list, so caches can store rows densely
            for i, example in enumerate(examples):
                example["index"] = i
            if not examples:
                raise DataError(f"no {split} pair fits the length limits ({self.max_source_len} source, {self.max_target_len} target tokens)")
            self._encoded[split] = examples
        return self._encoded[split]

    @property
    def _batch_len(self) -> int:
        return self.max_source_len if self.batch_by == "source" else self.max_target_len

    def train_reader(self, max_tokens: int, seed: int, target_sets: Sequence[TargetSet] = (None,)) -> EpochReader | StoredEpochReader:
        def replace(example: Example, target: list[int]) -> Example | None:
            fits = target and len(target) + 2 <= self.max_target_len
            return {**example, "target": torch.tensor([BOS] + target + [EOS])} if fits else None

        if self._uses_store:
            return StoredEpochReader(self._stored_items(target_sets), max_tokens, self._batch_len, PAD, seed, self.batch_by)
        examples = with_target_sets(self._examples("train"), target_sets, replace)
        return EpochReader(examples, max_tokens, self._batch_len, PAD, seed, self.batch_by)

    def _stored_items(self, target_sets: Sequence[TargetSet]) -> StoredItems:
        """``with_target_sets`` over the store: the rows of each target set and their replacement
        targets, without materialising the examples."""
        split = self._examples("train")
        parts = []
        for targets in target_sets:
            if targets is None:
                parts.append(StoredItems(split, np.arange(len(split))))
                continue
            kept = [(i, t) for i, t in sorted(targets.items()) if t and len(t) + 2 <= self.max_target_len]
            if not kept:
                raise DataError("the replacement training targets are empty or do not fit the examples (e.g. a teacher that generated nothing)")
            parts.append(StoredItems(split, np.array([i for i, _ in kept]), [torch.tensor([BOS] + list(t) + [EOS]) for _, t in kept]))
        return StoredItems.concat(parts)

    def valid_batches(self, max_tokens: int) -> list[Seq2SeqBatch]:
        if self._uses_store:
            return self.indexed_batches("valid", 0, self.num_examples("valid"), max_tokens)
        return fixed_batches(self._examples("valid"), max_tokens, self._batch_len, PAD, self.batch_by)

    def num_examples(self, split: str) -> int:
        return len(self._examples(split))

    def indexed_batches(self, split: str, start: int, stop: int, max_tokens: int) -> list[Seq2SeqBatch]:
        if self._uses_store:
            items = StoredItems(self._examples(split), np.arange(start, min(stop, self.num_examples(split))))
            return stored_batches(items, max_tokens, self._batch_len, PAD, self.batch_by)
        return fixed_batches(self._examples(split)[start:stop], max_tokens, self._batch_len, PAD, self.batch_by)

    # -- models -------------------------------------------------------------------------------

    @property
    def _positions(self) -> int:
        return max(self.max_source_len, self.max_target_len)

    def build_model(self, model_config: TransformerConfig, output_space: dict[str, Any] | None = None) -> torch.nn.Module:
        if output_space is not None and output_space.get("vocabulary") != self.vocabulary_id():
            raise DataError(
                f"a {self.name} model's vocabulary ({output_space.get('vocabulary')}) is its sentencepiece model; "
                f"this task's is {self.vocabulary_id()}: a teacher of another vocabulary cannot be rebuilt here"
            )
        return build_transformer(model_config, self.vocab_size, PAD, self._positions + 2)

    def forward(self, model: torch.nn.Module, batch: Seq2SeqBatch, view: str | None = None) -> TokenLogits:
        source, layout = batch.inputs(view)
        logits = model(source, layout, batch.target_in, batch.target_layout())
        return TokenLogits(logits, batch.target_out, batch.target_out != PAD)

    def hidden_states(self, model: torch.nn.Module, batch: Seq2SeqBatch, view: str | None = None) -> HiddenStates:
        """The decoder's output (after its final layer norm, before the output projection).

        fairseq2 0.8.1's ``TransformerModel`` has no public encode/decode split, so this runs the
        same steps as its ``forward`` (frontends, encoder, decoder, ``final_proj``) and keeps the
        decoder output; the logits are therefore identical to ``forward``'s.
        """
        _, _, hidden = self.encode_decode(model, batch, view)
        mask = batch.target_out != PAD
        return HiddenStates(hidden, mask, TokenLogits(model.final_proj(hidden), batch.target_out, mask))

    def encode_decode(self, model: torch.nn.Module, batch: Seq2SeqBatch, view: str | None = None) -> tuple[torch.Tensor, Any, torch.Tensor]:
        """The encoder's output, its layout, and the decoder's output (before ``final_proj``)."""
        source, source_layout = model.encoder_frontend(*batch.inputs(view))
        encoded = model.encoder(source, source_layout)
        target, target_layout = model.decoder_frontend(batch.target_in, batch.target_layout())
        return encoded, source_layout, model.decoder(target, target_layout, encoded, source_layout)

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

    def init_from_layers(self, student: torch.nn.Module, teacher: torch.nn.Module, layers: Sequence[int]) -> None:
        """``layers`` lists the student's encoder layers, then its decoder layers, by the teacher
        layer each starts from: a 6-2 student of a 6-6 teacher with ``[0, 1, 2, 3, 4, 5, 0, 5]``
        keeps the whole encoder and the first and last decoder layers ("shrink and fine-tune")."""
        copy_layers(student, teacher, ["encoder.layers", "decoder.layers"], layers)

    @classmethod
    def layer_init_problem(cls, student: TransformerConfig, teacher: TransformerConfig, layers: Sequence[int]) -> str | None:
        sizes = ("encoder_dim", "dec_dim", "encoder_ffn_dim", "dec_ffn_dim", "encoder_heads", "dec_heads")
        differ = [f"{name} {getattr(student, name)} vs {getattr(teacher, name)}" for name in sizes if getattr(student, name) != getattr(teacher, name)]
        if differ:
            return f"`init_layers` copies whole layers, so the student's sizes must be the teacher's: {', '.join(differ)}"
        return layers_problem(cls.layer_counts(student), cls.layer_counts(teacher), layers)

    def nll(self, output: TokenLogits, label_smoothing: float) -> tuple[torch.Tensor, int]:
        mask = output.mask
        loss = F.cross_entropy(
            output.logits[mask].float(), output.targets[mask], label_smoothing=label_smoothing, reduction="sum"
        )
        return loss, int(mask.sum())

    # -- noise ----------------------------------------------------------------------------------

    @property
    def sentence_ends(self) -> torch.Tensor:
        """Per vocabulary id: does the piece end a sentence (only ``.``, ``!`` or ``?``)?"""
        if self._sentence_ends is None:
            pieces = [self.vocab.id_to_piece(i).lstrip("\u2581") for i in range(self.vocab_size)]
            self._sentence_ends = torch.tensor([bool(p) and set(p) <= SENTENCE_END for p in pieces])
        return self._sentence_ends

    @torch.no_grad()
    def noise_neighbours(self, model: torch.nn.Module, noise: Seq2SeqNoise) -> torch.Tensor | None:
        """``(V, k)``: each token's ``noise.neighbours`` nearest other tokens by cosine similarity of
        the model's source embeddings (special tokens never chosen), when the noise replaces by neighbours."""
        if noise.word_replace == 0 or noise.replace_with != "neighbours":
            return None
        k = noise.neighbours
        weight = F.normalize(model.encoder_frontend.embed.weight.detach().float().cpu(), dim=-1)
        rows = []
        for lo in range(0, len(weight), 1024):
            sims = weight[lo : lo + 1024] @ weight.T
            sims[:, : EOS + 1] = -torch.inf
            sims[torch.arange(len(sims)), torch.arange(lo, lo + len(sims))] = -torch.inf
            rows.append(sims.topk(k, dim=-1).indices)
        return torch.cat(rows)

    def perturb(
        self, batch: Seq2SeqBatch, noise: Seq2SeqNoise, generator: torch.Generator, view: str | None = None,
        neighbours: torch.Tensor | None = None,
    ) -> Seq2SeqBatch:
        """A copy of ``batch`` whose sources (or ``view``) carry ``noise``; EOS stays last and no
        source becomes empty. ``neighbours`` (from ``noise_neighbours``) is needed when tokens
        are replaced by neighbours."""
        if noise.word_replace > 0 and noise.replace_with == "neighbours" and neighbours is None:
            raise ValueError("replacing tokens by their neighbours needs neighbours=task.noise_neighbours(model, noise)")
        tokens, layout = batch.inputs(view)
        rows = [
            torch.cat([self._noisy(row[: n - 1], noise, generator, neighbours), torch.tensor([EOS])])
            for row, n in zip(tokens.cpu(), layout.seq_lens)
        ]
        lens = [len(r) for r in rows]
        padded = torch.nn.utils.rnn.pad_sequence(rows, batch_first=True, padding_value=PAD).to(tokens.device)
        return batch.with_inputs(view, padded, lens)

    def _noisy(self, words: torch.Tensor, noise: Seq2SeqNoise, generator: torch.Generator, neighbours: torch.Tensor | None) -> torch.Tensor:
        if noise.sentence_drop > 0 or noise.sentence_shuffle > 1:
            ends = self.sentence_ends[words].nonzero().flatten() + 1
            sentences = [s for s in torch.tensor_split(words, ends.tolist()) if len(s)]
            sentences = [sentences[i] for i in _kept(len(sentences), noise.sentence_drop, generator).tolist()]
            sentences = [sentences[i] for i in _local_order(len(sentences), noise.sentence_shuffle, generator).tolist()]
            words = torch.cat(sentences) if sentences else words
        words = words[_kept(len(words), noise.word_drop, generator)]
        swap = torch.rand(len(words), generator=generator) < noise.word_replace
        if noise.replace_with == "neighbours" and neighbours is not None:
            pick = torch.randint(neighbours.shape[1], (len(words),), generator=generator)
            replacements = neighbours[words, pick]
        else:
            replacements = torch.randint(EOS + 1, self.vocab_size, (len(words),), generator=generator)
        words = torch.where(swap, replacements, words)
        return words[_local_order(len(words), noise.word_shuffle, generator)]

    # -- decoding -------------------------------------------------------------------------------

    def decode(self, model: torch.nn.Module, sources: list[str], settings: BeamSettings) -> list[str]:
        """Detokenized best hypotheses for ``sources`` (source texts)."""
        return self.vocab.decode(self._search(model, self.encode_sources(sources), settings).token_ids)

    def generate(
        self, model: torch.nn.Module, split: str, start: int, stop: int, settings: BeamSettings, nbest: int
    ) -> list[NBest]:
        sources = [example["source"] for example in self._examples(split)[start:stop]]
        return self._search(model, sources, settings, nbest).nbest

    def _search(self, model: torch.nn.Module, sources: list[Any], settings: BeamSettings, nbest: int = 1) -> Decoded:
        """Beam search on the engine the settings name (tasks whose settings have no ``engine``: fairseq2's)."""
        if getattr(settings, "engine", "pytorch") != "pytorch":
            from seqkd.tasks.seq2seq.ctranslate2_search import ctranslate2_search

            pieces = [self.vocab.id_to_piece(i) for i in range(self.vocab_size)]
            return ctranslate2_search(model, pieces, sources, settings, self._positions, nbest, self.max_source_len)
        return beam_search(model, sources, self.vocab_size, settings, self._positions, nbest, self.max_source_len)

    def detokenize(self, tokens: list[int]) -> str:
        return self.vocab.decode(tokens)

    def target_texts(self, split: str, start: int, stop: int) -> list[str]:
        return [self.vocab.decode(example["target"][1:-1].tolist()) for example in self._examples(split)[start:stop]]

    def eval_inputs(self, split: str, options: Any) -> list[str]:
        view = getattr(options, "view", None)
        if view is not None:
            if view not in self.views:
                raise DataError(f"evaluation.view {view!r} is not an input view of this task (views: {', '.join(sorted(self.views)) or 'none'})")
            return self.view_lines(view, split)
        return [p.source for p in self.split_pairs(split)]

    def predict(self, model: torch.nn.Module, inputs: list[str], options: BeamSettings) -> list[str]:
        return self.decode(model, [line.strip() for line in inputs], options)

    def references(self, split: str, count: int) -> list[str]:
        return [p.target for p in self.split_pairs(split)[:count]]

    # -- export -----------------------------------------------------------------------------------

    def export_ctranslate2(self, model: torch.nn.Module, folder: Path, quantization: str, settings: BeamSettings) -> dict[str, Any]:
        """A CTranslate2 ``TransformerSpec`` of the model, the sentencepiece model beside it (``export.py``)."""
        from seqkd.tasks.seq2seq.export import write_ctranslate2

        return write_ctranslate2(model, self._vocab_path, folder, quantization, settings, self.max_source_len, self._positions)


def _kept(n: int, p: float, generator: torch.Generator) -> torch.Tensor:
    """Which of ``n`` items survive deletion with probability ``p`` each (at least one, if any)."""
    keep = torch.rand(n, generator=generator) >= p
    if n and not keep.any():
        keep[torch.randint(n, (1,), generator=generator)] = True
    return keep.nonzero().flatten()


def _local_order(n: int, window: int, generator: torch.Generator) -> torch.Tensor:
    """A permutation of ``n`` items in which none moves ``window`` places or more (Lample et al., 2018)."""
    if window <= 1:
        return torch.arange(n)
    keys = torch.arange(n) + torch.rand(n, generator=generator) * window
    return keys.argsort()
