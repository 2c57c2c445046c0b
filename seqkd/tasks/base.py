"""The task-adapter contract that the engine and every method rely on.

A task adapter turns a recipe's ``task:`` section into data batches, builds a model for a role,
runs a forward pass that returns a *typed* output, and evaluates a trained model. Methods never
touch a model's internals; they ask the adapter through the capabilities it declares:

- ``token_logits``: ``forward`` returns :class:`TokenLogits` (per-position vocabulary logits),
- ``generation``: ``evaluate`` / ``translate`` decode with a search (beam search, Viterbi, ...),
- ``hidden_states``: ``hidden_states`` returns :class:`HiddenStates` (the final hidden state at each
  target position, with the ``forward`` output of the same pass),
- ``parameter_classes``: the model's weights grouped by class and layer, for methods that map a
  teacher's weights onto a student's (weight distillation).

Later adapters add their own output types and capabilities (``crf``, ...).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Protocol

import torch
from pydantic import BaseModel


# The capabilities seqkd defines a contract for, and what an adapter that offers one provides
# (docs/plugins.md is generated from this).
CAPABILITIES: dict[str, str] = {
    "token_logits": "`forward()` returns `TokenLogits(logits, targets, mask)`: per-position logits over a vocabulary",
    "generation": "`generate()`, `detokenize()` and `target_texts()`: n-best decoding of a split (beam search)",
    "hidden_states": "`hidden_states()` returns `HiddenStates(hidden, mask, output)`: final hidden states and the `forward()` output of the same pass",
    "parameter_classes": "`parameter_classes(model)` maps each weight class (e.g. `encoder.self_attn.q_proj.weight`) to the model's parameter names, one per layer in order; `layer_counts(model_config)` gives each layer stack's depth",
    "crf": "`forward()` returns `CRFOutput(logits, targets, mask, crf)`: emissions plus the linear-chain CRF (transitions, `nll()`, `kbest()`, `marginals()`)",
    "perturb": "`perturb(batch, noise, generator)` returns a noisy copy of the batch's inputs (`noise_schema` validates the settings), reproducible from the generator",
}

# The methods an adapter must override (from TaskAdapter) for each capability it declares; the host
# refuses a task that declares one without implementing it.
CAPABILITY_HOOKS: dict[str, tuple[str, ...]] = {
    "generation": ("generate", "detokenize", "target_texts", "sentence_score"),
    "hidden_states": ("hidden_states",),
    "parameter_classes": ("parameter_classes", "layer_counts"),
    "perturb": ("perturb",),
}


class Batch(Protocol):
    """Whatever an adapter batches; the engine only moves it and counts its targets."""

    def to(self, device: torch.device) -> "Batch": ...

    @property
    def num_target_elements(self) -> int: ...


@dataclass(frozen=True)
class TokenLogits:
    """Per-position logits over a vocabulary, the targets they predict and which are real."""

    logits: torch.Tensor  # (N, T, V)
    targets: torch.Tensor  # (N, T)
    mask: torch.Tensor  # (N, T) bool, False at padding


@dataclass(frozen=True)
class CRFOutput(TokenLogits):
    """Emission scores of a linear-chain CRF tagger (``logits``, over tags) and the CRF itself.

    It is a :class:`TokenLogits`, so token-level methods read the emissions as per-tag logits;
    sequence-level methods ask ``crf`` for ``nll(emissions, tags, mask)``, ``kbest(emissions, mask,
    k)`` and ``log_marginals(emissions, mask, temperature)`` (``seqkd.tasks.ner.crf.CRF``).
    """

    crf: Any = None


@dataclass(frozen=True)
class HiddenStates:
    """The model's final hidden state at each target position, for representation-matching losses.

    ``output`` is the adapter's ordinary ``forward`` output computed in the same pass, so a method
    that needs both (e.g. KD on logits plus a cosine loss on hidden states) runs the model once.
    """

    hidden: torch.Tensor  # (N, T, D), the representation the output layer reads
    mask: torch.Tensor  # (N, T) bool, False at padding
    output: Any  # what ``forward`` returns for the same batch (TokenLogits for translation)


@dataclass(frozen=True)
class GenerationSettings:
    """Search settings for adapters with the ``generation`` capability."""

    beam_size: int = 4
    nbest: int = 1
    len_penalty: float = 1.0
    max_len_a: float = 1.2
    max_len_b: int = 10
    batch_size: int = 64


NBest = list[tuple[list[int], float]]  # hypotheses (token ids, score), best first


class BatchReader(Protocol):
    """An endless, resumable stream of training batches (epochs roll over by themselves)."""

    def __iter__(self) -> Iterator[Batch]: ...

    def state_dict(self) -> dict[str, Any]: ...

    def load_state_dict(self, state: dict[str, Any]) -> None: ...


class TaskAdapter(ABC):
    """Base class of every task adapter; subclasses set the class attributes below."""

    name: ClassVar[str]
    description: ClassVar[str]
    capabilities: ClassVar[frozenset[str]]
    config_schema: ClassVar[type[BaseModel]]  # validates the recipe's ``task:`` section
    model_schema: ClassVar[type[BaseModel]]  # validates each entry of the recipe's ``models:``
    evaluation_schema: ClassVar[type[BaseModel]]  # validates the recipe's ``evaluation:`` section
    # the keys of ``evaluate()``'s result that ``seqkd run`` prints as columns, with their headers
    headline_metrics: ClassVar[dict[str, str]] = {}

    def __init__(self, config: BaseModel, workdir: Path, base_dir: Path) -> None:
        """``workdir`` holds shared artifacts (vocabulary); relative data paths start at ``base_dir``."""
        self.config = config
        self.workdir = workdir
        self.base_dir = base_dir

    @abstractmethod
    def prepare(self) -> None:
        """Read and check the data and build shared artifacts (vocabulary); idempotent."""

    @abstractmethod
    def fingerprint(self) -> str:
        """A hash of everything data-side a trained model depends on (data, vocabulary)."""

    @abstractmethod
    def vocabulary_id(self) -> str:
        """Identifies the vocabulary; teacher and student must agree where a method says so."""

    @abstractmethod
    def build_model(self, model_config: BaseModel) -> torch.nn.Module: ...

    @abstractmethod
    def train_reader(
        self, max_tokens: int, seed: int, targets: dict[int, list[int]] | None = None, keep_original: bool = False
    ) -> BatchReader:
        """Shuffled training batches. ``targets`` replaces the target of each listed training example
        (e.g. by a teacher's output, for sequence-level KD); examples not listed are dropped unless
        ``keep_original``, which also keeps every original pair beside the replaced ones."""

    @abstractmethod
    def valid_batches(self, max_tokens: int) -> list[Batch]: ...

    @abstractmethod
    def num_examples(self, split: str) -> int: ...

    @abstractmethod
    def indexed_batches(self, split: str, start: int, stop: int, max_tokens: int) -> list[Batch]:
        """Unshuffled batches over examples ``start..stop-1`` of ``split``; rows carry their index."""

    # -- the ``generation`` capability --------------------------------------------------------

    def generate(self, model: torch.nn.Module, split: str, start: int, stop: int, settings: GenerationSettings) -> list[NBest]:
        """The model's n-best hypotheses for examples ``start..stop-1`` of ``split``."""
        raise NotImplementedError(f"task {self.name!r} does not offer generation")

    def detokenize(self, tokens: list[int]) -> str:
        raise NotImplementedError(f"task {self.name!r} does not offer generation")

    def target_texts(self, split: str, start: int, stop: int) -> list[str]:
        raise NotImplementedError(f"task {self.name!r} does not offer generation")

    # -- the ``hidden_states`` capability -----------------------------------------------------

    def hidden_states(self, model: torch.nn.Module, batch: Any) -> HiddenStates:
        """The model's final hidden states on ``batch``, with its ``forward`` output from the same pass."""
        raise NotImplementedError(f"task {self.name!r} does not offer hidden_states")

    @abstractmethod
    def forward(self, model: torch.nn.Module, batch: Any) -> Any:
        """Run a model on a batch and return the adapter's typed output (e.g. TokenLogits)."""

    @abstractmethod
    def nll(self, output: Any, label_smoothing: float) -> tuple[torch.Tensor, int]:
        """The task's own supervised loss, summed, and the number of targets it covers."""

    @abstractmethod
    def evaluate(self, model: torch.nn.Module, split: str, out_dir: Path, options: BaseModel) -> dict[str, Any]:
        """Decode ``split``, write hypotheses under ``out_dir`` and return the metrics."""
