"""The ``masked_lm`` task adapter: pre-train a BERT-shaped encoder by masked-token prediction on
unlabelled text; masked-token accuracy and perplexity out.

- **Vocabulary.** ``prepare()`` trains a sentencepiece model on the training text with the
  encoder-decoder tasks' trainer (``seqkd.tasks.seq2seq.vocab``) and reads it as a BERT tokenizer
  (``seqkd.tasks.classification.spm_tokenizer``: ``[CLS] text [SEP]``, ``[MASK]`` one id past the
  pieces). Its file is named by a hash of the data and vocabulary settings only, so tasks that
  differ in masking or length share it. A classification task reads it with ``vocabulary_from:``
  (``shared_vocabulary``) and can then start a classifier from this task's encoder (``init:``).
- **Masking** (BERT): each non-special token is chosen with probability ``masking.probability``; a
  chosen token becomes ``[MASK]`` (``masking.mask``), a random non-special token
  (``masking.random``) or stays. Training batches draw it from a generator seeded by the reader's
  seed, the epoch and the batch's example indices (as ``SpecAugmentReader`` does), so a resumed run
  masks exactly as an uninterrupted one, with no state of its own. Validation and evaluation masks
  come from a generator per example, seeded by its split and index: every model, at every
  validation, is scored on the same masks, however examples are batched or sharded.
- **Output.** ``forward`` returns a ``TokenLogits`` over the *chosen* positions only: ``logits``
  ``(N, K, V)``, ``targets`` the original tokens there, ``mask`` False where a row has fewer than
  K. Token-level KD (``word_kd``, ``distilbert``'s KL) therefore compares teacher and student at
  the masked positions; ``nll`` is the cross-entropy there.
"""

from __future__ import annotations

import hashlib
import json
import math
import zlib
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import torch
import torch.nn.functional as F

from seqkd.errors import DataError
from seqkd.hashing import data_file_digests, settings_json
from seqkd.tasks.base import HiddenStates, LayerStates, TargetSet, TaskAdapter, TokenLogits
from seqkd.tasks.batching import EpochReader, Example, budget_groups
from seqkd.tasks.classification.model import init_from_layers, lengths_mask
from seqkd.tasks.classification.pretrained import tokenizer_digest
from seqkd.tasks.classification.spm_tokenizer import SentencePieceTokenizer, load_sentencepiece_tokenizer
from seqkd.tasks.masked_lm.config import Masking, MaskedLMConfig, MaskedLMEvaluation, MaskedLMModelConfig
from seqkd.tasks.masked_lm.corpus import held_out, read_texts
from seqkd.tasks.masked_lm.model import MaskedLanguageModel
from seqkd.tasks.seq2seq.vocab import PAD, train_vocabulary

SPLITS = ("train", "valid", "test")
FIRST_TEXT_ID = 4  # ids below are pad, unk, [CLS], [SEP]; random replacements are drawn from the text pieces


@dataclass
class MLMBatch:
    tokens: torch.Tensor  # (N, T) input ids, the chosen positions already masked
    lengths: torch.Tensor  # (N,)
    positions: torch.Tensor  # (N, K) the chosen positions of each row (0 where ``chosen`` is False)
    targets: torch.Tensor  # (N, K) the original tokens there (PAD where ``chosen`` is False)
    chosen: torch.Tensor  # (N, K) bool
    indices: torch.Tensor  # (N,) each row's example index in its split

    def to(self, device: torch.device) -> "MLMBatch":
        return MLMBatch(self.tokens.to(device), self.lengths, self.positions.to(device), self.targets.to(device), self.chosen.to(device), self.indices)

    @property
    def num_target_elements(self) -> int:
        return int(self.chosen.sum())


def draw_masks(tokens: torch.Tensor, maskable: torch.Tensor, masking: Masking, generator: torch.Generator, mask_id: int, num_ids: int) -> tuple[torch.Tensor, torch.Tensor]:
    """BERT's masking of ``tokens`` ``(N, T)``: the inputs with the chosen positions hidden, and
    which positions are chosen (only where ``maskable``). Draws three tensors of ``tokens``' shape
    from ``generator`` (CPU), so one generator state gives one result."""
    choose = torch.rand(tokens.shape, generator=generator)
    how = torch.rand(tokens.shape, generator=generator)
    random_ids = torch.randint(FIRST_TEXT_ID, num_ids, tokens.shape, generator=generator)
    chosen = (choose < masking.probability) & maskable
    to_mask = chosen & (how < masking.mask)
    to_random = chosen & (how >= masking.mask) & (how < masking.mask + masking.random)
    inputs = tokens.masked_fill(to_mask, mask_id)
    inputs = torch.where(to_random, random_ids, inputs)
    return inputs, chosen


def gather_chosen(tokens: torch.Tensor, chosen: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(positions, targets, valid)`` ``(N, K)``: each row's chosen positions in order, the tokens
    there, and which entries are real (K is the most chosen in a row, at least 1)."""
    counts = chosen.sum(1)
    width = max(int(counts.max()) if counts.numel() else 0, 1)
    order = torch.sort((~chosen).to(torch.int8), dim=1, stable=True).indices[:, :width]
    valid = torch.arange(width).unsqueeze(0) < counts.unsqueeze(1)
    positions = order.masked_fill(~valid, 0)
    targets = tokens.gather(1, positions).masked_fill(~valid, PAD)
    return positions, targets, valid


class MaskingReader:
    """Training batches, masked with a generator seeded by the seed, the epoch and the batch's
    example indices: resumable with the wrapped reader's state alone."""

    def __init__(self, reader: EpochReader, task: "MaskedLMTask", seed: int) -> None:
        self.reader, self.task, self.seed = reader, task, seed

    def __iter__(self) -> Iterator[MLMBatch]:
        for examples in self.reader:
            key = f"{self.seed}:{self.reader.epoch}:{[e['index'] for e in examples]}".encode()
            yield self.task.mask_batch(examples, [torch.Generator().manual_seed(zlib.crc32(key))])

    def state_dict(self) -> dict[str, Any]:
        return self.reader.state_dict()

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.reader.load_state_dict(state)


class MaskedLMTask(TaskAdapter):
    name: ClassVar[str] = "masked_lm"
    description: ClassVar[str] = "Masked-LM pre-training of a BERT-shaped encoder on unlabelled text (sentencepiece, 80/10/10 masking); masked-token accuracy, perplexity"
    capabilities: ClassVar[frozenset[str]] = frozenset({"token_logits", "hidden_states", "layer_states", "layer_init", "shared_vocabulary"})
    headline_metrics: ClassVar[dict[str, str]] = {"accuracy": "masked acc", "perplexity": "ppl"}
    config_schema = MaskedLMConfig
    model_schema = MaskedLMModelConfig
    evaluation_schema = MaskedLMEvaluation

    config: MaskedLMConfig

    def __init__(self, config: MaskedLMConfig, workdir: Path, base_dir: Path, views: Mapping[str, Path] | None = None) -> None:
        super().__init__(config, workdir, base_dir, views)
        if self.views:
            raise DataError(f"the masked_lm task reads no input views (given: {', '.join(self.views)})")
        self._texts: dict[str, list[str]] | None = None
        self._encoded: dict[str, list[Example]] = {}
        self._tokenizer: SentencePieceTokenizer | None = None
        self._vocab_digest: str | None = None

    # -- data ---------------------------------------------------------------------------------

    def _path(self, value: str) -> Path:
        path = Path(value)
        return path if path.is_absolute() else self.base_dir / path

    def data_files(self) -> list[Path]:
        d = self.config.data
        return [self._path(name) for name in (d.corpus, d.train, d.valid, d.test) if name is not None]

    def texts(self) -> dict[str, list[str]]:
        """The examples of each split, in file order (``test`` may be empty)."""
        if self._texts is None:
            d = self.config.data
            split: dict[str, list[str]] = {s: [] for s in SPLITS}
            read = lambda name, field=None: read_texts(self._path(name), fmt=d.format, text_field=d.text_field, split_field=field)  # noqa: E731
            if d.corpus is not None:
                for name, text in read(d.corpus, d.split_field):
                    split[name].append(text)
            else:
                train = [text for _, text in read(d.train)]
                if d.valid is not None:
                    split["train"], split["valid"] = train, [text for _, text in read(d.valid)]
                else:
                    for text in train:
                        split["valid" if held_out(text, d.valid_fraction) else "train"].append(text)
                if d.test is not None:
                    split["test"] = [text for _, text in read(d.test)]
            if d.max_train_examples is not None:
                split["train"] = split["train"][: d.max_train_examples]
            for name in ("train", "valid"):
                needed = self.config.min_train_examples if name == "train" else 1
                if len(split[name]) < needed:
                    raise DataError(f"the {name} split has {len(split[name])} examples; at least {needed} are needed (data: {', '.join(map(str, self.data_files()))})")
            self._texts = split
        return self._texts

    def _file_digests(self) -> list[str]:
        return data_file_digests(self.data_files())

    def compute_fingerprint(self) -> str:
        h = hashlib.sha256(settings_json(self.config).encode())
        for digest in self._file_digests():
            h.update(digest.encode())
        return h.hexdigest()[:16]

    def _vocabulary_digest(self) -> str:
        """What the vocabulary depends on: the data (files and how they are split) and the
        vocabulary settings, not masking or lengths."""
        if self._vocab_digest is None:
            settings = {"data": json.loads(settings_json(self.config))["data"], "vocab_size": self.config.vocab_size, "vocab_model": self.config.vocab_model}
            h = hashlib.sha256(json.dumps(settings, sort_keys=True).encode())
            for digest in self._file_digests():
                h.update(digest.encode())
            self._vocab_digest = h.hexdigest()[:16]
        return self._vocab_digest

    def vocabulary_file(self) -> Path:
        """The sentencepiece model (after ``prepare``), for tasks that read it (``vocabulary_from:``)."""
        return self.workdir / f"mlm-spm-{self._vocabulary_digest()}.model"

    def prepare(self) -> None:
        """Read the data and train (once) the sentencepiece vocabulary on the training text."""
        if self._tokenizer is not None:
            return
        texts = self.texts()
        path = self.vocabulary_file()
        if not path.exists():
            self.workdir.mkdir(parents=True, exist_ok=True)
            train_vocabulary((" ".join(t.split()) for t in texts["train"]), path, self.config.vocab_size, self.config.vocab_model)
        self._tokenizer = load_sentencepiece_tokenizer(path)

    @property
    def tokenizer(self) -> SentencePieceTokenizer:
        self.prepare()
        assert self._tokenizer is not None
        return self._tokenizer

    def compute_vocabulary_id(self) -> str:
        return tokenizer_digest(self.tokenizer)

    def output_space(self) -> dict[str, Any]:
        """The vocabulary; ``tokenizer`` is what a classification task compares before starting a
        classifier from this task's encoder."""
        return {"vocabulary": self.vocabulary_id(), "tokenizer": self.vocabulary_id()}

    def _examples(self, split: str) -> list[Example]:
        if split not in self._encoded:
            if split not in SPLITS:
                raise DataError(f"the masked_lm task has no split {split!r} (splits: {', '.join(SPLITS)})")
            tok, limit = self.tokenizer, self.config.max_seq_len
            self._encoded[split] = [
                {"tokens": torch.tensor(tok(text, truncation=True, max_length=limit)["input_ids"]), "index": index}
                for index, text in enumerate(self.texts()[split])
            ]
        return self._encoded[split]

    def mask_batch(self, examples: list[Example], generators: list[torch.Generator]) -> MLMBatch:
        """Pad and mask examples: with one generator, one draw for the whole batch; with one per
        example, each row drawn from its own."""
        lengths = torch.tensor([len(e["tokens"]) for e in examples])
        tokens = torch.full((len(examples), int(lengths.max())), PAD, dtype=torch.long)
        for row, e in enumerate(examples):
            tokens[row, : len(e["tokens"])] = e["tokens"]
        mask_id = self.tokenizer.mask_token_id  # also the number of text ids: random replacements are below it
        maskable = tokens >= FIRST_TEXT_ID  # never pad, unk, [CLS], [SEP] (nor [MASK], not in the text)
        if len(generators) == 1:
            inputs, chosen = draw_masks(tokens, maskable, self.config.masking, generators[0], mask_id, mask_id)
        else:
            rows = [draw_masks(tokens[i : i + 1], maskable[i : i + 1], self.config.masking, g, mask_id, mask_id) for i, g in enumerate(generators)]
            inputs, chosen = torch.cat([r[0] for r in rows]), torch.cat([r[1] for r in rows])
        positions, targets, valid = gather_chosen(tokens, chosen)
        return MLMBatch(inputs, lengths, positions, targets, valid, torch.tensor([e["index"] for e in examples]))

    def _fixed_masks(self, split: str, examples: list[Example]) -> MLMBatch:
        """Masks drawn per example from its split and index: the same for every model and batching."""
        return self.mask_batch(examples, [torch.Generator().manual_seed(zlib.crc32(f"{split}:{e['index']}".encode())) for e in examples])

    def train_reader(self, max_tokens: int, seed: int, target_sets: Sequence[TargetSet] = (None,)) -> MaskingReader:
        """Shuffled training batches, masked afresh in every epoch; there are no replacement targets
        (a target set must be None)."""
        if any(t is not None for t in target_sets):
            raise DataError("the masked_lm task has no per-example targets to replace; a method cannot train it on teacher outputs")
        examples = self._examples("train") * len(target_sets)
        return MaskingReader(EpochReader(examples, max_tokens, seed, lambda group: group), self, seed)

    def valid_batches(self, max_tokens: int) -> list[MLMBatch]:
        return [self._fixed_masks("valid", group) for group in budget_groups(self._examples("valid"), max_tokens)]

    def num_examples(self, split: str) -> int:
        return len(self._examples(split))

    def indexed_batches(self, split: str, start: int, stop: int, max_tokens: int) -> list[MLMBatch]:
        return [self._fixed_masks(split, group) for group in budget_groups(self._examples(split)[start:stop], max_tokens)]

    # -- models -------------------------------------------------------------------------------

    def build_model(self, model_config: MaskedLMModelConfig, output_space: dict[str, Any] | None = None) -> torch.nn.Module:
        if output_space is not None and output_space.get("vocabulary") != self.vocabulary_id():
            raise DataError(f"a masked_lm model's output space is its vocabulary ({output_space.get('vocabulary')}); this task's is {self.vocabulary_id()}")
        return MaskedLanguageModel(model_config, len(self.tokenizer), PAD, self.config.max_seq_len)

    def _run(self, model: torch.nn.Module, batch: MLMBatch, layers: bool = False, attentions: bool = False, view: str | None = None):
        if view is not None:
            raise DataError(f"the masked_lm task has no input view {view!r}")
        out = model(batch.tokens, batch.lengths, batch.positions, layers=layers, attentions=attentions)
        return out, TokenLogits(out.logits, batch.targets, batch.chosen)

    def forward(self, model: torch.nn.Module, batch: MLMBatch, view: str | None = None) -> TokenLogits:
        return self._run(model, batch, view=view)[1]

    def hidden_states(self, model: torch.nn.Module, batch: MLMBatch, view: str | None = None) -> HiddenStates:
        out, output = self._run(model, batch, view=view)
        return HiddenStates(out.last, lengths_mask(batch.tokens, batch.lengths), output)

    def layer_states(self, model: torch.nn.Module, batch: MLMBatch, attentions: bool = False, view: str | None = None) -> LayerStates:
        out, output = self._run(model, batch, layers=True, attentions=attentions, view=view)
        return LayerStates(out.hidden, out.attentions, lengths_mask(batch.tokens, batch.lengths), output)

    def init_from_layers(self, student: torch.nn.Module, teacher: torch.nn.Module, layers: Sequence[int]) -> None:
        init_from_layers(student, teacher, list(layers))

    def nll(self, output: TokenLogits, label_smoothing: float) -> tuple[torch.Tensor, int]:
        """Cross-entropy summed over the chosen positions, and their number."""
        logits, targets = output.logits[output.mask].float(), output.targets[output.mask]
        return F.cross_entropy(logits, targets, label_smoothing=label_smoothing, reduction="sum"), int(output.mask.sum())

    # -- evaluation ---------------------------------------------------------------------------

    def eval_inputs(self, split: str, options: MaskedLMEvaluation) -> list[tuple[str, int]]:
        """``(split, index)`` of every example: ``predict`` draws each one's fixed masks from them."""
        if split == "test" and not self.texts()["test"]:
            raise DataError("evaluation.split test: the masked_lm task has no test data (give `data.test`, or a corpus with test rows)")
        return [(split, i) for i in range(self.num_examples(split))]

    @torch.no_grad()
    def predict(self, model: torch.nn.Module, inputs: list[tuple[str, int]], options: MaskedLMEvaluation) -> list[tuple[float, int, int]]:
        """Each example's summed NLL over its masked tokens, their number and how many the model
        predicts exactly."""
        was_training = model.training
        model.eval()
        device = next(model.parameters()).device
        out: list[tuple[float, int, int]] = []
        for start in range(0, len(inputs), options.batch_size):
            chunk = inputs[start : start + options.batch_size]
            split = chunk[0][0]
            if any(s != split for s, _ in chunk):
                raise ValueError("predict: inputs of one call come from one split")
            batch = self._fixed_masks(split, [self._examples(split)[i] for _, i in chunk]).to(device)
            output = self.forward(model, batch)
            nll = F.cross_entropy(output.logits.float().transpose(1, 2), output.targets, reduction="none").masked_fill(~output.mask, 0.0)
            correct = (output.logits.argmax(-1) == output.targets) & output.mask
            out += [(round(float(n), 4), int(k), int(c)) for n, k, c in zip(nll.sum(1).tolist(), output.mask.sum(1).tolist(), correct.sum(1).tolist())]
        model.train(was_training)
        return out

    def as_text(self, prediction: tuple[float, int, int]) -> str:
        return "\t".join(map(str, prediction))

    def score(self, split: str, predictions: list[tuple[float, int, int]], options: MaskedLMEvaluation) -> dict[str, Any]:
        """Masked-token accuracy (percent), perplexity (exp of the mean NLL per masked token) and that NLL."""
        nll = sum(p[0] for p in predictions)
        tokens = sum(p[1] for p in predictions)
        correct = sum(p[2] for p in predictions)
        mean = nll / max(tokens, 1)
        return {
            "split": split, "sentences": len(predictions), "masked_tokens": tokens,
            "accuracy": round(100 * correct / max(tokens, 1), 2),
            "perplexity": round(math.exp(min(mean, 50.0)), 2),
            "nll": round(mean, 4),
        }
