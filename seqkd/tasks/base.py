"""The task-adapter contract that the engine and every method rely on.

A task adapter turns a recipe's ``task:`` section into data batches, builds a model for a role,
runs a forward pass that returns a *typed* output, and evaluates a trained model. Methods never
touch a model's internals; they ask the adapter through the capabilities it declares:

- ``token_logits``: ``forward`` returns :class:`TokenLogits` (per-position vocabulary logits),
- ``generation``: ``generate`` decodes n-best lists with a search (beam search), ``sentence_score`` ranks them,
- ``hidden_states``: ``hidden_states`` returns :class:`HiddenStates` (the final hidden state at each
  target position, with the ``forward`` output of the same pass),
- ``parameter_classes``: the model's weights grouped by class and layer, for methods that map a
  teacher's weights onto a student's (weight distillation),
- ``layer_states``: ``layer_states`` returns :class:`LayerStates` (every layer's hidden states and
  attention maps), ``layer_init``: ``init_from_layers`` starts a student from chosen teacher layers,
- ``shared_vocabulary``: ``vocabulary_file`` is a vocabulary other tasks of a recipe read (a masked
  LM's sentencepiece model), ``task_init``: ``init_from_task`` starts a model from another task's
  (a classifier from a masked LM's encoder).

Later adapters add their own output types and capabilities (``crf``, ...).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Protocol

import torch
from pydantic import BaseModel

from seqkd.errors import DataError


# The capabilities seqkd defines a contract for, and what an adapter that offers one provides
# (docs/plugins.md is generated from this).
CAPABILITIES: dict[str, str] = {
    "token_logits": "`forward()` returns `TokenLogits(logits, targets, mask)`: per-position logits over a vocabulary",
    "generation": "`generate()`, `detokenize()`, `target_texts()` and `sentence_score()`: n-best decoding of a split (beam search) with the task's `generation_schema` settings",
    "hidden_states": "`hidden_states(model, batch, view)` returns `HiddenStates(hidden, mask, output)`: final hidden states and the `forward()` output of the same pass",
    "parameter_classes": "`parameter_classes(model)` maps each weight class (e.g. `encoder.self_attn.q_proj.weight`) to the model's parameter names, one per layer in order; `layer_counts(model_config)` gives each layer stack's depth",
    "crf": "`forward()` returns `CRFOutput(logits, targets, mask, crf)`: emissions plus the linear-chain CRF (transitions, `nll()`, `kbest()`, `marginals()`)",
    "perturb": "`perturb(batch, noise, generator, view, neighbours)` returns a noisy copy of the batch's inputs (`noise_schema` validates the settings), reproducible from the generator; `noise_neighbours(model, noise)` gives the replacements such noise draws from (each token's nearest tokens in a model's embedding space), or None",
    "layer_states": "`layer_states(model, batch, attentions)` returns `LayerStates(hidden, attentions, mask, output)`: every layer's hidden states (embeddings first) and, on request, attention maps, with the `forward()` output of the same pass",
    "layer_init": "`init_from_layers(student, teacher, layers)` copies the teacher's embeddings, head and chosen layers into a shallower student of the same kind and width",
    "shared_vocabulary": "`vocabulary_file()` is the task's prepared vocabulary (a sentencepiece model), which another task of the recipe reads by naming this one (e.g. classification's `vocabulary_from:`)",
    "task_init": "`init_from_task(student, source, model, layers)` starts a model from a trained model of another task (`init:` a stage of that task, e.g. a classifier from a masked LM's encoder); the classmethod `task_init_problem(...)` says at validation why a pair cannot",
    "ctranslate2": "`export_ctranslate2(model, folder, quantization, settings)` writes a trained model as a CTranslate2 model (and its vocabulary) into an empty folder for `seqkd export`, refusing with `seqkd.export.ExportError` what CTranslate2 cannot express; it returns how to decode as the task does with `settings`",
}

# The methods an adapter must override (from TaskAdapter) for each capability it declares; the host
# refuses a task that declares one without implementing it.
CAPABILITY_HOOKS: dict[str, tuple[str, ...]] = {
    "generation": ("generate", "detokenize", "target_texts", "sentence_score"),
    "hidden_states": ("hidden_states",),
    "parameter_classes": ("parameter_classes", "layer_counts"),
    "perturb": ("perturb", "noise_neighbours"),
    "layer_states": ("layer_states",),
    "layer_init": ("init_from_layers",),
    "ctranslate2": ("export_ctranslate2",),
    "shared_vocabulary": ("vocabulary_file",),
    "task_init": ("init_from_task",),
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
class ClassLogits(TokenLogits):
    """One prediction per sequence, as a :class:`TokenLogits` with a single position: ``logits``
    ``(N, 1, C)`` over the label set, ``targets`` ``(N, 1)``, ``mask`` ``(N, 1)`` (False where the
    gold label is unknown). So token-level losses (``word_kd``, ``seqkd.losses.token_kl``) apply to
    sequence classifiers unchanged."""


@dataclass(frozen=True)
class LayerStates:
    """Every layer's output for intermediate-layer distillation (``layer_states`` capability).

    ``hidden[0]`` is the embedding output and ``hidden[i]`` layer i's, each ``(N, T, D)``;
    ``attentions[i - 1]`` is layer i's attention map ``(N, H, T, T)`` when requested (else empty);
    ``output`` is the ``forward`` output of the same pass.
    """

    hidden: tuple[torch.Tensor, ...]
    attentions: tuple[torch.Tensor, ...]
    mask: torch.Tensor  # (N, T) bool, False at padding
    output: Any

    def pooled(self, layer: int) -> torch.Tensor:
        """Layer ``layer``'s mean over real positions, ``(N, D)``: one vector per sequence."""
        weights = self.mask.unsqueeze(-1).to(self.hidden[layer].dtype)
        return (self.hidden[layer] * weights).sum(1) / weights.sum(1).clamp(min=1.0)


NBest = list[tuple[list[int], float]]  # hypotheses (token ids, score), best first


class BatchReader(Protocol):
    """An endless, resumable stream of training batches (epochs roll over by themselves)."""

    def __iter__(self) -> Iterator[Batch]: ...

    def state_dict(self) -> dict[str, Any]: ...

    def load_state_dict(self, state: dict[str, Any]) -> None: ...


TargetSet = Mapping[int, Any] | None  # example index -> replacement target; None: the gold targets


def with_target_sets(original: list[Any], target_sets: Sequence[TargetSet], replace: Callable[[Any, Any], Any | None]) -> list[Any]:
    """The training examples of every target set in turn, for ``train_reader``: ``None`` is
    ``original`` as it is; a mapping gives ``replace(original[index], target)`` for each listed index
    (``None`` from ``replace`` leaves that example out). A mapping that leaves nothing is refused,
    since training on it would silently train on nothing (e.g. a teacher that generated nothing)."""
    examples: list[Any] = []
    for targets in target_sets:
        if targets is None:
            examples += original
            continue
        replaced = [e for i, t in sorted(targets.items()) if (e := replace(original[i], t)) is not None]
        if not replaced:
            raise DataError("the replacement training targets are empty or do not fit the examples (e.g. a teacher that generated nothing)")
        examples += replaced
    return examples


class TaskAdapter(ABC):
    """Base class of every task adapter; subclasses set the class attributes below.

    Adapters never deal with processes: the engine shards prediction and evaluation over ranks
    (``eval_inputs`` -> ``predict`` on each rank's share -> ``score`` on all of them) and writes
    files on rank 0 only.
    """

    name: ClassVar[str]
    description: ClassVar[str]
    capabilities: ClassVar[frozenset[str]]
    config_schema: ClassVar[type[BaseModel]]  # validates the recipe's ``task:`` section
    model_schema: ClassVar[type[BaseModel]]  # validates each entry of the recipe's ``models:``
    evaluation_schema: ClassVar[type[BaseModel]]  # validates the recipe's ``evaluation:`` section
    # ``generation``: the task's decoding settings (beam size, lengths, ...); the evaluation schema
    # of a generating task includes them, and methods that decode with a teacher embed them
    generation_schema: ClassVar[type[BaseModel] | None] = None
    # ``perturb``: the settings of the noise ``perturb`` applies
    noise_schema: ClassVar[type[BaseModel] | None] = None
    # the keys of ``score()``'s result that ``seqkd run`` prints as columns, with their headers
    headline_metrics: ClassVar[dict[str, str]] = {}

    def __init__(self, config: BaseModel, workdir: Path, base_dir: Path, views: Mapping[str, Path] | None = None) -> None:
        """``workdir`` holds shared artifacts (vocabulary); relative data paths start at ``base_dir``;
        ``views`` names extra input views, each a folder of ``<split>.txt`` files with one line per
        example (e.g. another task's decoded outputs, such as ASR transcripts)."""
        self.config = config
        self.workdir = workdir
        self.base_dir = base_dir
        self.views = dict(views or {})
        # the prepared tasks this one reads a vocabulary from, by recipe key (``vocabulary_sources``);
        # the engine fills it before anything is read
        self.sources: dict[str, TaskAdapter] = {}
        self._fingerprint: str | None = None
        self._vocabulary_id: str | None = None

    @classmethod
    def vocabulary_sources(cls, config: BaseModel) -> dict[str, str]:
        """The other tasks of the recipe whose vocabulary this task reads (their ``vocabulary_file()``,
        ``shared_vocabulary`` capability), as ``{config field: task key}``; the engine hands them over
        prepared, in ``self.sources``. Default: none."""
        return {}

    @abstractmethod
    def prepare(self) -> None:
        """Read and check the data and build shared artifacts (vocabulary); idempotent."""

    def fingerprint(self) -> str:
        """A hash of everything data-side a trained model depends on; computed once per run."""
        if self._fingerprint is None:
            self._fingerprint = self.compute_fingerprint()
        return self._fingerprint

    @abstractmethod
    def compute_fingerprint(self) -> str:
        """Hash the task config and the contents of every data file (not how their paths are spelled)."""

    def vocabulary_id(self) -> str:
        """Identifies the output space; teacher and student must agree where a method says so."""
        if self._vocabulary_id is None:
            self._vocabulary_id = self.compute_vocabulary_id()
        return self._vocabulary_id

    @abstractmethod
    def compute_vocabulary_id(self) -> str:
        """A hash of the prepared vocabulary / tag set (after ``prepare``)."""

    def output_space(self) -> dict[str, Any]:
        """What a model file records of the output space (JSON-able), so a teacher trained on
        another output space (e.g. a subset of the labels) can be rebuilt from its file alone."""
        return {"vocabulary": self.vocabulary_id()}

    @abstractmethod
    def build_model(self, model_config: BaseModel, output_space: dict[str, Any] | None = None) -> torch.nn.Module:
        """A model for this task; with ``output_space`` (from a model file) one whose output layer
        covers that space instead of this task's own."""

    @abstractmethod
    def train_reader(self, max_tokens: int, seed: int, target_sets: Sequence[TargetSet] = (None,)) -> BatchReader:
        """Shuffled training batches over the concatenation of ``target_sets``: ``None`` is the
        training data as it is; a mapping replaces the target of each listed example (e.g. by a
        teacher's output) and leaves out the examples it does not list. Sequence-level KD reads
        ``[distilled]``, or ``[None, distilled]`` to keep the original pairs beside it."""

    @abstractmethod
    def valid_batches(self, max_tokens: int) -> list[Batch]: ...

    @abstractmethod
    def num_examples(self, split: str) -> int: ...

    @abstractmethod
    def indexed_batches(self, split: str, start: int, stop: int, max_tokens: int) -> list[Batch]:
        """Unshuffled batches over examples ``start..stop-1`` of ``split``; rows carry their index."""

    @abstractmethod
    def forward(self, model: torch.nn.Module, batch: Any, view: str | None = None) -> Any:
        """Run a model on a batch and return the adapter's typed output (e.g. TokenLogits); ``view``
        picks one of the batch's named input views (``None``: the task's own inputs)."""

    @abstractmethod
    def nll(self, output: Any, label_smoothing: float) -> tuple[torch.Tensor, int]:
        """The task's own supervised loss, summed, and the number of targets it covers."""

    # -- prediction and evaluation (the engine shards these over ranks) ------------------------

    @abstractmethod
    def eval_inputs(self, split: str, options: BaseModel) -> list[Any]:
        """The inputs of every example of ``split`` in data order (the engine takes the first
        ``max_sentences`` for an evaluation, all of them for a stage's ``outputs:``)."""

    @abstractmethod
    def predict(self, model: torch.nn.Module, inputs: list[Any], options: BaseModel) -> list[Any]:
        """The model's prediction for each input (a part of ``eval_inputs``), in order."""

    @abstractmethod
    def score(self, split: str, predictions: list[Any], options: BaseModel) -> dict[str, Any]:
        """Metrics of the predictions for the first ``len(predictions)`` examples of ``split``."""

    def as_text(self, prediction: Any) -> str:
        """One line for a prediction: what a stage's ``outputs:`` files and hypothesis files hold."""
        return str(prediction)

    @classmethod
    def report_notes(cls, metrics: dict[str, Any]) -> list[str]:
        """Lines ``seqkd run`` prints under its table (e.g. sacreBLEU's signature)."""
        return []

    # -- the ``generation`` capability --------------------------------------------------------

    def generate(self, model: torch.nn.Module, split: str, start: int, stop: int, settings: BaseModel, nbest: int) -> list[NBest]:
        """The model's ``nbest`` best hypotheses for examples ``start..stop-1`` of ``split``."""
        raise NotImplementedError(f"task {self.name!r} does not offer generation")

    def detokenize(self, tokens: list[int]) -> str:
        raise NotImplementedError(f"task {self.name!r} does not offer generation")

    def target_texts(self, split: str, start: int, stop: int) -> list[str]:
        raise NotImplementedError(f"task {self.name!r} does not offer generation")

    def sentence_score(self, hypothesis: str, reference: str) -> float:
        """A sentence-level quality score (higher is better): what Seq-Inter ranks hypotheses by."""
        raise NotImplementedError(f"task {self.name!r} does not offer generation")

    # -- the ``hidden_states`` capability -----------------------------------------------------

    def hidden_states(self, model: torch.nn.Module, batch: Any, view: str | None = None) -> HiddenStates:
        """The model's final hidden states on ``batch``, with its ``forward`` output from the same pass."""
        raise NotImplementedError(f"task {self.name!r} does not offer hidden_states")

    # -- the ``layer_states`` and ``layer_init`` capabilities ---------------------------------

    def layer_states(self, model: torch.nn.Module, batch: Any, attentions: bool = False, view: str | None = None) -> LayerStates:
        """Every layer's hidden states (and attention maps with ``attentions``) on ``batch``."""
        raise NotImplementedError(f"task {self.name!r} does not offer layer_states")

    def init_from_layers(self, student: torch.nn.Module, teacher: torch.nn.Module, layers: Sequence[int]) -> None:
        """Copy ``teacher``'s embeddings, output head and layers ``layers`` (0-based, one per
        student layer, in order) into ``student``."""
        raise NotImplementedError(f"task {self.name!r} does not offer layer_init")

    @classmethod
    def layer_init_problem(cls, student: BaseModel, teacher: BaseModel, layers: Sequence[int]) -> str | None:
        """Why ``init_layers: layers`` cannot start a ``student`` from a ``teacher`` (model
        configs), checked when a recipe is validated; None where only the built models can tell."""
        return None

    # -- the ``shared_vocabulary`` and ``task_init`` capabilities ------------------------------

    def vocabulary_file(self) -> Path:
        """The prepared vocabulary file (after ``prepare``) that other tasks may read."""
        raise NotImplementedError(f"task {self.name!r} does not offer shared_vocabulary")

    def init_from_task(self, student: torch.nn.Module, source: "TaskAdapter", model: torch.nn.Module, layers: Sequence[int] | None) -> None:
        """Copy what ``student`` shares with ``model``, a trained model of the prepared task
        ``source`` (e.g. a masked LM's embeddings and encoder layers; ``layers``: which of them, one
        per student layer), refusing a model it cannot start from (another vocabulary, width, ...)."""
        raise NotImplementedError(f"task {self.name!r} does not offer task_init")

    @classmethod
    def task_init_problem(
        cls, config: BaseModel, model: BaseModel, source_key: str, source: type["TaskAdapter"], source_model: BaseModel,
        layers: Sequence[int] | None,
    ) -> str | None:
        """Why a ``model`` of this task (``config``) cannot start from ``source_model``, a model of
        the recipe's task ``source_key`` (adapter ``source``), or None; checked when a recipe is
        validated, for tasks with ``task_init``."""
        return f"task {cls.name!r} cannot start a model from a {source.name!r} model"

    # -- the ``ctranslate2`` capability -------------------------------------------------------

    def export_ctranslate2(self, model: torch.nn.Module, folder: Path, quantization: str, settings: BaseModel) -> dict[str, Any]:
        """Write ``model`` as a CTranslate2 model (weights of type ``quantization``) into the empty
        ``folder``; returns what ``seqkd export`` records about decoding it like ``settings`` do."""
        raise NotImplementedError(f"task {self.name!r} does not offer ctranslate2")

    # -- the ``parameter_classes`` capability -------------------------------------------------

    def parameter_classes(self, model: torch.nn.Module) -> dict[str, list[str]]:
        raise NotImplementedError(f"task {self.name!r} does not offer parameter_classes")

    @classmethod
    def layer_counts(cls, model_config: BaseModel) -> dict[str, int]:
        raise NotImplementedError(f"task {cls.name!r} does not offer parameter_classes")

    # -- the ``perturb`` capability -----------------------------------------------------------

    def perturb(
        self, batch: Any, noise: BaseModel, generator: torch.Generator, view: str | None = None,
        neighbours: torch.Tensor | None = None,
    ) -> Any:
        """A copy of ``batch`` whose inputs (``view``) are noised by ``noise``; the same generator
        state gives the same copy, so a resumed run draws the noise it would have drawn. Tokens are
        replaced by their ``neighbours`` (from ``noise_neighbours``) where the noise says so."""
        raise NotImplementedError(f"task {self.name!r} does not offer perturb")

    def noise_neighbours(self, model: torch.nn.Module, noise: BaseModel) -> torch.Tensor | None:
        """The replacement candidates ``noise`` draws from, in ``model``'s input embedding space
        (``(V, k)``: each token's nearest tokens), or None when it replaces nothing that way."""
        raise NotImplementedError(f"task {self.name!r} does not offer perturb")
