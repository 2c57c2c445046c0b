"""Starting a shallower student from chosen layers of a deeper teacher (the ``layer_init`` capability).

DistilBERT starts its student from every other teacher layer, and "shrink and fine-tune"
(Shleifer & Rush, 2020) starts a seq2seq student from spread-out decoder layers: both copy whole
layers by position in the teacher's state dict, which works for any model whose layers sit in
numbered stacks (``encoder.layers.0``, ...). Tasks name their stacks; this module does the copy.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch

from seqkd.errors import DataError


def layers_problem(student: Mapping[str, int], teacher: Mapping[str, int], layers: Sequence[int]) -> str | None:
    """Why ``layers`` (one teacher layer per student layer, stack after stack in the order of
    ``student``: stack name -> depth) cannot start the student from ``teacher``'s stacks, or None."""
    if len(layers) != sum(student.values()):
        if len(student) == 1:
            (depth,), (teacher_depth,) = student.values(), teacher.values()
            return (f"init layers {list(layers)}: the student has {depth} layers and the teacher {teacher_depth}; "
                    f"give one teacher layer (0..{teacher_depth - 1}) per student layer")
        has = " and ".join(f"{d} {name}" for name, d in student.items())
        return f"init layers {list(layers)}: the student has {has} layers; give {sum(student.values())} teacher layers, the {next(iter(student))}'s first"
    start = 0
    for name, depth in student.items():
        wrong = [j for j in layers[start : start + depth] if not 0 <= j < teacher[name]]
        if wrong:
            return f"init layers {list(layers)}: the teacher has {teacher[name]} {name} layers (0..{teacher[name] - 1}), not {wrong[0]}"
        start += depth
    return None


def copy_layers(student: torch.nn.Module, teacher: torch.nn.Module, stacks: Sequence[str], layers: Sequence[int]) -> None:
    """Load every weight of ``teacher`` into ``student``: for the stacks of layers named by their
    prefixes ``stacks`` (e.g. ``encoder.layers``), teacher layer ``layers[i]`` into student layer
    ``i``, stack after stack; weights outside the stacks (embeddings, final norms, head) as they
    are. Refused, saying why, where a depth or a width does not fit."""
    depths = {prefix.split(".")[0]: len(student.get_submodule(prefix)) for prefix in stacks}
    problem = layers_problem(depths, {prefix.split(".")[0]: len(teacher.get_submodule(prefix)) for prefix in stacks}, layers)
    if problem:
        raise DataError(problem)
    chosen, start = {}, 0
    for prefix, depth in zip(stacks, depths.values()):
        chosen[prefix], start = layers[start : start + depth], start + depth
    state = {}
    for key, value in teacher.state_dict().items():
        prefix = next((p for p in stacks if key.startswith(p + ".")), None)
        if prefix is None:
            state[key] = value
            continue
        index, rest = key[len(prefix) + 1 :].split(".", 1)
        for i, j in enumerate(chosen[prefix]):
            if j == int(index):
                state[f"{prefix}.{i}.{rest}"] = value
    try:
        student.load_state_dict(state)
    except RuntimeError as exc:
        raise DataError(f"the student's layers do not fit the teacher's ({str(exc).strip().splitlines()[-1].strip()}); init needs equal widths") from None
