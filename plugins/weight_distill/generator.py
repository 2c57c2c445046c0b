"""The parameter generator of weight distillation (Lin et al., ACL 2021), written by hand: it is the method.

For one weight class (say the encoder's query projections), the teacher's L_t layers are split into
L_s contiguous groups of ts = L_t / L_s; student layer i reads group i, stacked as T (ts, O_t, I_t):

    T' = ((T x_O W_O) x_L W_L) x_I W_I, contracted over the layer axis by w,
    S  = A * tanh(T') + B

W_O (O_t, O_s), W_I (I_t, I_s), W_L (ts, ts) and w (ts) are shared by the class; A and B (O_s, I_s)
belong to each generated weight. Init: A = 1, B = 0, W_O / W_I / W_L Xavier-normal, w = 1 / ts. An
axis whose size does not change gets no matrix (with ts = 1 neither W_L nor w), so matching shapes
reduce to S = A * tanh(T) + B. Vectors (biases, LayerNorm gamma / beta) have no input axis.
Embeddings are the same rule with the vocabulary as the unchanged output axis: E_t W_E, then tanh.
"""

from __future__ import annotations

import torch
from torch import nn

from seqkd.errors import SeqkdError


class GeneratorError(SeqkdError):
    pass


def depth_problem(teacher: dict[str, int], student: dict[str, int]) -> str | None:
    """Why the student's layer stacks cannot be generated from the teacher's, or ``None``."""
    for stack, depth in student.items():
        have = teacher.get(stack)
        if have is None:
            return f"the teacher has no {stack} layers"
        if depth > have:
            return (f"the student's {stack} has {depth} layers, the teacher's {have}: each student layer is "
                    "generated from a group of teacher layers, so the student cannot be deeper")
        if have % depth:
            return (f"the teacher's {have} {stack} layers do not split into {depth} equal contiguous groups "
                    f"(ts = L_t / L_s must be a whole number; use {', '.join(str(d) for d in range(1, have + 1) if have % d == 0)} layers)")
    return None


def _xavier(rows: int, cols: int) -> nn.Parameter:
    return nn.Parameter(nn.init.xavier_normal_(torch.empty(rows, cols)))


class ClassTransform(nn.Module):
    """W_O, W_L, w and W_I of one weight class; maps a stack (L_s, ts, O_t[, I_t]) to (L_s, O_s[, I_s])."""

    def __init__(self, teacher_shape: torch.Size, student_shape: torch.Size, group: int) -> None:
        super().__init__()
        self.w_out = _xavier(teacher_shape[0], student_shape[0]) if teacher_shape[0] != student_shape[0] else None
        matrix = len(teacher_shape) == 2
        self.w_in = _xavier(teacher_shape[1], student_shape[1]) if matrix and teacher_shape[1] != student_shape[1] else None
        self.w_layer = _xavier(group, group) if group > 1 else None
        self.w = nn.Parameter(torch.full((group,), 1.0 / group)) if group > 1 else None

    def forward(self, stack: torch.Tensor) -> torch.Tensor:
        x = stack
        if self.w_out is not None:
            x = (x.movedim(2, -1) @ self.w_out).movedim(-1, 2)
        if self.w_layer is not None:
            x = torch.einsum("ls...,sr->lr...", x, self.w_layer)
        if self.w_in is not None:
            x = x @ self.w_in
        if self.w is not None:
            return torch.einsum("lr...,r->l...", x, self.w)
        return x[:, 0]


def _key(name: str) -> str:
    return name.replace(".", "__")  # module and parameter names cannot hold dots


class WeightGenerator(nn.Module):
    """Generates every student parameter from the frozen teacher's; its own parameters are the only
    ones phase 1 trains. The teacher's weights are non-persistent buffers: checkpoints hold the
    generator alone and the teacher is reloaded from its own file."""

    def __init__(
        self,
        teacher: nn.Module,
        teacher_classes: dict[str, list[str]],
        student: nn.Module,
        student_classes: dict[str, list[str]],
    ) -> None:
        super().__init__()
        teacher_params = dict(teacher.named_parameters())
        student_params = dict(student.named_parameters())
        self.transforms = nn.ModuleDict()
        self.scale = nn.ParameterDict()  # A, per generated weight
        self.shift = nn.ParameterDict()  # B
        self.targets: list[tuple[str, int, str]] = []  # (class, student layer, student parameter)
        for cls, names in student_classes.items():
            sources = teacher_classes.get(cls)
            if sources is None:
                raise GeneratorError(f"the teacher has no {cls!r} weights to generate the student's from")
            if len(sources) % len(names):
                raise GeneratorError(f"{cls}: the teacher's {len(sources)} layers do not split into {len(names)} groups")
            group = len(sources) // len(names)
            t_shape, s_shape = teacher_params[sources[0]].shape, student_params[names[0]].shape
            if len(t_shape) != len(s_shape):
                raise GeneratorError(f"{cls}: teacher weights have {len(t_shape)} axes, the student's {len(s_shape)}")
            stack = torch.stack([teacher_params[n].detach() for n in sources]).view(len(names), group, *t_shape)
            self.register_buffer(f"teacher__{_key(cls)}", stack, persistent=False)
            self.transforms[_key(cls)] = ClassTransform(t_shape, s_shape, group)
            for layer, name in enumerate(names):
                if _key(name) in self.scale:  # a tied weight, generated from its first class
                    continue
                self.scale[_key(name)] = nn.Parameter(torch.ones(s_shape))
                self.shift[_key(name)] = nn.Parameter(torch.zeros(s_shape))
                self.targets.append((cls, layer, name))
        missing = set(student_params) - {name for _, _, name in self.targets}
        if missing:
            raise GeneratorError(f"no weight class covers the student's {', '.join(sorted(missing))}")

    def forward(self) -> dict[str, torch.Tensor]:
        """Every student parameter, by its name in the student."""
        generated = {cls: self.transforms[_key(cls)](getattr(self, f"teacher__{_key(cls)}")) for cls in {c for c, _, _ in self.targets}}
        return {
            name: self.scale[_key(name)] * torch.tanh(generated[cls][layer]) + self.shift[_key(name)]
            for cls, layer, name in self.targets
        }
