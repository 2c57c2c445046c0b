"""The ``classification`` task adapter: labelled texts (or text pairs) in, accuracy and macro-F1 out.

Every model of a recipe reads one tokenizer, the task's (a pretrained folder's, or with
``vocabulary_from`` the sentencepiece model of another task such as ``masked_lm``), so a teacher
and a student of any kind and depth see the same token ids; a pretrained model whose folder
brings another tokenizer is refused. A classifier starts from another task's model through
``init_from_task`` (``task_init``): a masked LM's embeddings and encoder layers, when it reads
that task's vocabulary. The label set is the training split's, sorted; each model
file records it (``output_space``), so a model can be rebuilt without the recipe and a teacher
trained on another label set is refused unless the method allows it.
"""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import torch
import torch.nn.functional as F

from seqkd.errors import DataError
from seqkd.hashing import file_sha256, settings_json
from seqkd.tasks.base import ClassLogits, LayerStates, TargetSet, TaskAdapter, with_target_sets
from seqkd.tasks.batching import EpochReader, Example, budget_groups
from seqkd.tasks.classification.config import ClassificationConfig, ClassificationEvaluation, ClassifierConfig
from seqkd.tasks.classification.corpus import Example as Text
from seqkd.tasks.classification.corpus import read_examples
from seqkd.tasks.classification.model import EncoderClassifier, PretrainedClassifier, init_encoder_from, init_from_layers, lengths_mask
from seqkd.tasks.classification.pretrained import load_tokenizer, read_config, resolve, tokenizer_digest
from seqkd.tasks.classification.spm_tokenizer import load_sentencepiece_tokenizer

SPLITS = ("train", "valid", "test")
UNKNOWN = -1  # the label id of a valid/test example whose label the training split never shows


@dataclass
class ClassificationBatch:
    tokens: torch.Tensor  # (N, T) token ids, padded
    segments: torch.Tensor  # (N, T) 0 for the first text, 1 for the second of a pair
    lengths: torch.Tensor  # (N,)
    labels: torch.Tensor  # (N,) label ids, UNKNOWN for labels outside the training set
    indices: torch.Tensor  # (N,) each row's example index in its split

    def to(self, device: torch.device) -> "ClassificationBatch":
        return ClassificationBatch(self.tokens.to(device), self.segments.to(device), self.lengths, self.labels.to(device), self.indices)

    @property
    def num_target_elements(self) -> int:
        return int((self.labels != UNKNOWN).sum())


def collate(examples: list[Example], pad_idx: int) -> ClassificationBatch:
    lengths = torch.tensor([len(e["tokens"]) for e in examples])
    width = int(lengths.max())
    tokens = torch.full((len(examples), width), pad_idx, dtype=torch.long)
    segments = torch.zeros((len(examples), width), dtype=torch.long)
    for row, e in enumerate(examples):
        tokens[row, : len(e["tokens"])] = e["tokens"]
        segments[row, : len(e["segments"])] = e["segments"]
    labels = torch.tensor([e["label"] for e in examples])
    return ClassificationBatch(tokens, segments, lengths, labels, torch.tensor([e["index"] for e in examples]))


class ClassificationTask(TaskAdapter):
    name: ClassVar[str] = "classification"
    description: ClassVar[str] = "Text and text-pair classification: Transformer encoders built here or pretrained (Hugging Face layout); accuracy, macro-F1"
    capabilities: ClassVar[frozenset[str]] = frozenset({"token_logits", "layer_states", "layer_init", "task_init"})
    headline_metrics: ClassVar[dict[str, str]] = {"accuracy": "Acc", "macro_f1": "macro-F1"}
    config_schema = ClassificationConfig
    model_schema = ClassifierConfig
    evaluation_schema = ClassificationEvaluation

    config: ClassificationConfig

    def __init__(self, config: ClassificationConfig, workdir: Path, base_dir: Path, views: Mapping[str, Path] | None = None) -> None:
        super().__init__(config, workdir, base_dir, views)
        self._texts: dict[str, list[Text]] | None = None
        self._encoded: dict[str, list[Example]] = {}
        self._labels: list[str] | None = None

    # -- data ---------------------------------------------------------------------------------

    def _path(self, value: str) -> Path:
        path = Path(value)
        return path if path.is_absolute() else self.base_dir / path

    @property
    def tokenizer_folder(self) -> Path:
        return resolve(self.config.tokenizer, self.base_dir)

    @property
    def tokenizer(self) -> Any:
        """The pretrained folder's tokenizer, or the sentencepiece model of ``vocabulary_from``'s task."""
        key = self.config.vocabulary_from
        if key is None:
            return load_tokenizer(self.tokenizer_folder)
        if key not in self.sources:
            raise DataError(f"task.vocabulary_from: task {key!r} was not handed to this task (tasks that read another's vocabulary are built by a recipe's engine)")
        return load_sentencepiece_tokenizer(self.sources[key].vocabulary_file())

    @classmethod
    def vocabulary_sources(cls, config: ClassificationConfig) -> dict[str, str]:
        return {"vocabulary_from": config.vocabulary_from} if config.vocabulary_from is not None else {}

    def _read(self, name: str, split_field: str | None) -> list[tuple[str | None, Text]]:
        d = self.config.data
        return read_examples(
            self._path(name), fmt=d.format, text_field=d.text_field, pair_field=d.pair_field,
            label_field=d.label_field, split_field=split_field, translations_field=d.translations_field,
        )

    def texts(self) -> dict[str, list[Text]]:
        """The examples of each split, in file order."""
        if self._texts is None:
            d = self.config.data
            if d.corpus is not None:
                split: dict[str, list[Text]] = {s: [] for s in SPLITS}
                for name, example in self._read(d.corpus, d.split_field):
                    split[name].append(example)
            else:
                split = {s: [e for _, e in self._read(getattr(d, s), None)] for s in SPLITS}
            if d.labels is not None:
                kept = set(d.labels)
                split = {name: [e for e in items if e.label in kept] for name, items in split.items()}
            if d.max_train_examples is not None:
                split["train"] = split["train"][: d.max_train_examples]
            for name, items in split.items():
                needed = self.config.min_train_examples if name == "train" else 1
                if len(items) < needed:
                    raise DataError(f"the {name} split has {len(items)} examples; at least {needed} are needed")
            self._texts = split
        return self._texts

    def compute_fingerprint(self) -> str:
        d = self.config.data
        h = hashlib.sha256(settings_json(self.config).encode())
        for name in [d.corpus] if d.corpus else [d.train, d.valid, d.test]:
            path = self._path(name)
            if not path.exists():
                raise DataError(f"{path}: no such file")
            h.update(file_sha256(path).encode())
        h.update(tokenizer_digest(self.tokenizer).encode())
        return h.hexdigest()[:16]

    def prepare(self) -> None:
        """Read the data and fix the label set (the training split's labels, sorted)."""
        if self._labels is None:
            self._labels = sorted({e.label for e in self.texts()["train"]})
            if len(self._labels) < 2:
                raise DataError(f"the training split has {len(self._labels)} label(s); classification needs at least 2")

    @property
    def labels(self) -> list[str]:
        self.prepare()
        assert self._labels is not None
        return self._labels

    def compute_vocabulary_id(self) -> str:
        return hashlib.sha256(json.dumps([self.labels, tokenizer_digest(self.tokenizer)]).encode()).hexdigest()[:16]

    def output_space(self) -> dict[str, Any]:
        """The label set, and which tokenizer the model reads (a teacher must read the same ids)."""
        return {"vocabulary": self.vocabulary_id(), "labels": self.labels, "tokenizer": tokenizer_digest(self.tokenizer)}

    def encode(self, text: str, pair: str | None) -> tuple[torch.Tensor, torch.Tensor]:
        """Token ids and segment ids of a text (pair), special tokens added, cut to ``max_seq_len``."""
        out = self.tokenizer(text, pair, truncation=True, max_length=self.config.max_seq_len, return_token_type_ids=True)
        return torch.tensor(out["input_ids"]), torch.tensor(out["token_type_ids"])

    def _encode_all(self, texts: list[Text]) -> list[Example]:
        ids = {label: i for i, label in enumerate(self.labels)}
        examples = []
        for index, t in enumerate(texts):
            tokens, segments = self.encode(t.text, t.pair)
            examples.append({"tokens": tokens, "segments": segments, "label": ids.get(t.label, UNKNOWN), "index": index})
        return examples

    def _examples(self, split: str) -> list[Example]:
        if split not in self._encoded:
            self._encoded[split] = self._encode_all(self.texts()[split])
        return self._encoded[split]

    @property
    def pad_idx(self) -> int:
        return int(self.tokenizer.pad_token_id)

    def _batches(self, examples: list[Example], max_tokens: int) -> list[ClassificationBatch]:
        return [collate(group, self.pad_idx) for group in budget_groups(examples, max_tokens)]

    def train_reader(self, max_tokens: int, seed: int, target_sets: Sequence[TargetSet] = (None,)) -> EpochReader:
        """Shuffled training batches; a target set maps example indices to label ids."""
        examples = with_target_sets(self._examples("train"), target_sets, lambda example, label: {**example, "label": int(label)})
        return EpochReader(examples, max_tokens, seed, lambda group: collate(group, self.pad_idx))

    def valid_batches(self, max_tokens: int) -> list[ClassificationBatch]:
        return self._batches(self._examples("valid"), max_tokens)

    def num_examples(self, split: str) -> int:
        return len(self.texts()[split])

    def indexed_batches(self, split: str, start: int, stop: int, max_tokens: int) -> list[ClassificationBatch]:
        return self._batches(self._examples(split)[start:stop], max_tokens)

    # -- models -------------------------------------------------------------------------------

    def build_model(self, model_config: ClassifierConfig, output_space: dict[str, Any] | None = None) -> torch.nn.Module:
        """A classifier over this task's labels, or over ``output_space``'s (a teacher trained on
        another label set); either way it reads this task's tokenizer."""
        labels = self.labels
        tokenizer = tokenizer_digest(self.tokenizer)
        if output_space is not None:
            if output_space.get("tokenizer") != tokenizer:
                raise DataError("the model reads another tokenizer than this task's; it cannot classify this task's batches")
            labels = output_space["labels"]
        if model_config.kind == "encoder":
            return EncoderClassifier(model_config, len(self.tokenizer), len(labels), self.pad_idx, self.config.max_seq_len)
        folder = resolve(model_config.pretrained, self.base_dir)
        if tokenizer_digest(load_tokenizer(folder)) != tokenizer:
            raise DataError(f"{folder}: its tokenizer differs from the task's ({self.tokenizer_folder}); set `task.tokenizer` to the model's folder")
        positions = read_config(folder).get("max_position_embeddings")
        if positions is not None and self.config.max_seq_len > positions:
            raise DataError(f"{folder}: reads at most {positions} tokens; lower task.max_seq_len ({self.config.max_seq_len})")
        return PretrainedClassifier(model_config, folder, len(labels))

    def _output(self, logits: torch.Tensor, batch: ClassificationBatch) -> ClassLogits:
        targets = batch.labels.unsqueeze(1)
        return ClassLogits(logits.unsqueeze(1), targets, targets != UNKNOWN)

    def forward(self, model: torch.nn.Module, batch: ClassificationBatch, view: str | None = None) -> ClassLogits:
        if view is not None:
            raise DataError(f"the classification task has no input view {view!r}")
        return self._output(model(batch.tokens, batch.segments, batch.lengths).logits, batch)

    def layer_states(self, model: torch.nn.Module, batch: ClassificationBatch, attentions: bool = False, view: str | None = None) -> LayerStates:
        if view is not None:
            raise DataError(f"the classification task has no input view {view!r}")
        out = model(batch.tokens, batch.segments, batch.lengths, layers=True, attentions=attentions)
        return LayerStates(out.hidden, out.attentions, lengths_mask(batch.tokens, batch.lengths), self._output(out.logits, batch))

    def init_from_layers(self, student: torch.nn.Module, teacher: torch.nn.Module, layers: Sequence[int]) -> None:
        init_from_layers(student, teacher, list(layers))

    def init_from_task(self, student: torch.nn.Module, source: TaskAdapter, model: torch.nn.Module, layers: Sequence[int] | None) -> None:
        """Start ``student`` (``kind: encoder``) from another task's encoder (a masked LM): its
        token, position and segment embeddings and its layers (``layers``: which, one per student
        layer); the pooler and the head stay as built. Refused unless both read one vocabulary."""
        theirs = source.output_space().get("tokenizer")
        mine = tokenizer_digest(self.tokenizer)
        if theirs != mine:
            how = (f"set `vocabulary_from: <the key of task {source.name!r}>` in this task" if self.config.vocabulary_from is None
                   else f"this task reads task {self.config.vocabulary_from!r}'s vocabulary; start from a model of that task")
            raise DataError(f"the {source.name} model reads another vocabulary ({theirs}) than this task ({mine}); "
                            f"its token embeddings would mean other tokens here: {how}")
        init_encoder_from(student, model, None if layers is None else list(layers))

    @classmethod
    def task_init_problem(
        cls, config: ClassificationConfig, model: ClassifierConfig, source_key: str, source: type[TaskAdapter], source_model: Any,
        layers: Sequence[int] | None,
    ) -> str | None:
        if config.vocabulary_from != source_key:
            return (f"a classifier that starts from task {source_key!r}'s encoder must read that task's vocabulary: "
                    f"set `vocabulary_from: {source_key}` in the classification task")
        if model.kind != "encoder":
            return "only a `kind: encoder` classifier can start from another task's encoder"
        sizes = [f"{name} {getattr(model, name)} here, {getattr(source_model, name, None)} there"
                 for name in ("dim", "heads", "ffn_dim") if getattr(source_model, name, None) != getattr(model, name)]
        if sizes:
            return f"the encoders differ in size ({'; '.join(sizes)})"
        depth = getattr(source_model, "num_layers", None)
        if depth is None:
            return None
        if layers is None and depth != model.num_layers:
            return f"its encoder has {depth} layers and this model {model.num_layers}; pick {model.num_layers} of them with `init_layers`"
        if layers is not None and (len(layers) != model.num_layers or any(not 0 <= j < depth for j in layers)):
            return f"init_layers {list(layers)}: give one of its {depth} layers (0..{depth - 1}) per layer of this model ({model.num_layers})"
        return None

    def nll(self, output: ClassLogits, label_smoothing: float) -> tuple[torch.Tensor, int]:
        """Cross-entropy summed over the examples whose label is known."""
        logits, targets = output.logits[output.mask].float(), output.targets[output.mask]
        return F.cross_entropy(logits, targets, label_smoothing=label_smoothing, reduction="sum"), int(output.mask.sum())

    # -- classifying and metrics --------------------------------------------------------------

    @torch.no_grad()
    def classify(self, model: torch.nn.Module, inputs: list[tuple[str, str | None]], batch_size: int = 128) -> list[tuple[str, float]]:
        """The most probable label of each (text, pair) and its probability, in input order."""
        was_training = model.training
        model.eval()
        device = next(model.parameters()).device
        examples = []
        for index, (text, pair) in enumerate(inputs):
            tokens, segments = self.encode(text, pair)
            examples.append({"tokens": tokens, "segments": segments, "label": UNKNOWN, "index": index})
        out: list[tuple[str, float]] = []
        for start in range(0, len(examples), batch_size):
            batch = collate(examples[start : start + batch_size], self.pad_idx).to(device)
            probs = model(batch.tokens, batch.segments, batch.lengths).logits.float().softmax(-1)
            best = probs.max(-1)
            out += [(self.labels[i], round(float(p), 4)) for p, i in zip(best.values.tolist(), best.indices.tolist())]
        model.train(was_training)
        return out

    def _translated(self, split: str, options: ClassificationEvaluation) -> dict[str, list[Text]]:
        """The examples of ``split`` with a translation into each of ``options.languages``."""
        if not options.languages:
            return {}
        if self.config.data.translations_field is None:
            raise DataError("evaluation.languages scores translations: name their field in task.data.translations_field")
        if self.config.data.pair_field is not None:
            raise DataError("evaluation.languages: translations of text pairs are not supported")
        out = {lang: [t for t in self.texts()[split] if lang in t.translations] for lang in options.languages}
        empty = [lang for lang, items in out.items() if not items]
        if empty:
            raise DataError(f"evaluation.languages: no {split} example has a translation into {', '.join(empty)}")
        return out

    def eval_inputs(self, split: str, options: ClassificationEvaluation) -> list[tuple[str, str | None]]:
        """The split's texts, then (with ``languages``) each language's translations in turn."""
        inputs = [(t.text, t.pair) for t in self.texts()[split]]
        for lang, items in self._translated(split, options).items():
            inputs += [(t.translations[lang], None) for t in items]
        return inputs

    def predict(self, model: torch.nn.Module, inputs: list[tuple[str, str | None]], options: ClassificationEvaluation) -> list[str]:
        return [label for label, _ in self.classify(model, inputs, options.batch_size)]

    def score(self, split: str, predictions: list[str], options: ClassificationEvaluation) -> dict[str, Any]:
        """Accuracy and macro-F1 (over the labels in the gold set or the predictions, in percent);
        with ``languages``, ``accuracy_<lang>``, ``macro_f1_<lang>`` and ``sentences_<lang>`` of
        each language's translations (the predictions after the split's own, in ``eval_inputs``' order).

        An example whose gold label the training split never shows counts as an error and is
        reported in ``unseen_labels`` (by label), so a test set drawn from another label set shows.
        """
        texts = self.texts()[split]
        translated = self._translated(split, options)
        own = len(texts) if translated else len(predictions)
        metrics = self._metrics(split, [t.label for t in texts[:own]], predictions[:own])
        start = own
        for lang, items in translated.items():
            part = self._metrics(split, [t.label for t in items], predictions[start : start + len(items)])
            start += len(items)
            metrics.update({f"accuracy_{lang}": part["accuracy"], f"macro_f1_{lang}": part["macro_f1"], f"sentences_{lang}": part["sentences"]})
        return metrics

    def _metrics(self, split: str, gold: list[str], predictions: list[str]) -> dict[str, Any]:
        known = set(self.labels)
        unseen = Counter(g for g in gold if g not in known)
        correct = Counter(g for g, p in zip(gold, predictions) if g == p)
        gold_counts, predicted_counts = Counter(gold), Counter(predictions)
        per_label = {}
        for label in sorted(set(gold_counts) | set(predicted_counts)):
            tp = correct[label]
            precision = tp / predicted_counts[label] if predicted_counts[label] else 0.0
            recall = tp / gold_counts[label] if gold_counts[label] else 0.0
            f1 = 2 * precision * recall / (precision + recall) if tp else 0.0
            per_label[label] = {"precision": round(100 * precision, 2), "recall": round(100 * recall, 2), "f1": round(100 * f1, 2), "support": gold_counts[label]}
        return {
            "split": split, "sentences": len(gold),
            "accuracy": round(100 * sum(correct.values()) / max(len(gold), 1), 2),
            "macro_f1": round(sum(v["f1"] for v in per_label.values()) / max(len(per_label), 1), 2),
            "unseen_labels": dict(unseen),
            "per_label": per_label,
        }

    @classmethod
    def report_notes(cls, metrics: dict[str, Any]) -> list[str]:
        unseen = metrics.get("unseen_labels") or {}
        if not unseen:
            return []
        names = ", ".join(f"{label} ({n})" for label, n in sorted(unseen.items()))
        return [f"{sum(unseen.values())} {metrics.get('split', 'test')} examples carry labels unseen in training, counted as errors: {names}"]
