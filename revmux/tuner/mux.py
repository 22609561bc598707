"""The RevMUX method: multiplexers that mix N instances into one composite, and their demultiplexers.

Shapes: G groups of N instances, T positions, hidden size d. A multiplexer maps the hidden states of G*N
instances, (G*N, T, d), ordered group by group, to G composites (G, T, d); ``demux`` maps G composites back to
(G*N, T, d) in the same order. Grouping, padding and dummy instances are the caller's business (``grouping.py``).

Coupling chain (``mux_type="revmux"``), exactly invertible for any N >= 2, with x_n = P(h_n) in R^{d/N}:

    mux:    y_0 = x_0 + F_0(x_1);            y_n = x_n + F_n(y_{n-1})    for n = 1 .. N-1
    demux:  x_n = y_n - F_n(y_{n-1})  for n = N-1 .. 1;                  x_0 = y_0 - F_0(x_1)

Where the slots are written (``composite``):

    blocks: the composite is the block concatenation [y_0; ...; y_{N-1}] along features (the paper's). One shared
            down-projection P: d -> d/N.
    basis:  the composite is written back in the residual stream's own basis, in place: c = mu + Q [y_0; ...; y_{N-1}]
            with Q = [Q_0, ..., Q_{N-1}] (d, d) orthogonal, Q_n the principal directions n, n+N, n+2N, ... of the
            layer-K states and mu their mean (``set_basis``). Slot n's own down-projection P_n starts as Q_n^T (x_n =
            Q_n^T (h_n - mu)) and each coupling function at zero (no final ReLU, so its last layer learns from step
            one): at initialisation c = mu + sum_n Q_n Q_n^T (h_n - mu), each instance keeps its own share of the
            directions the frozen layers read, at their own scale. The demultiplexer reads Q^T (c - mu), undoes the
            chain, and restores slot n with U_n (starts as Q_n, bias mu) plus the shared up-projection (starts at 0).
            Absent instances (padding, entering as zero vectors) contribute nothing.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def _mlp(sizes: list[int], dropout: float, final_activation: bool) -> nn.Sequential:
    """Linear layers of the given sizes with ReLU + Dropout between them (and after the last if asked)."""
    layers: list[nn.Module] = []
    for i, (n_in, n_out) in enumerate(zip(sizes[:-1], sizes[1:])):
        layers.append(nn.Linear(n_in, n_out))
        if i < len(sizes) - 2 or final_activation:
            layers += [nn.ReLU(), nn.Dropout(dropout)]
    return nn.Sequential(*layers)


class Multiplexer(nn.Module):
    """Protocol: ``forward`` mixes (G*N, T, d) -> (G, T, d) as ``combine(instances(hidden))``; ``demux`` restores
    (G, T, d) -> (G*N, T, d). Subclasses implement ``_instances``, ``_combine``, ``_demux`` and ``_demux_slots``.

    Standardisation (``standardize=True``): residual streams of decoder LLMs carry massive activations (a few
    features in the thousands, tokens with a pairwise cosine near 1). Per-feature statistics of the states entering
    the multiplexer (``input_mean``/``input_std``) and of the states the head reads (``output_mean``/``output_std``),
    calibrated on data (``set_statistics``), standardise what the learned functions see; the composite is mapped back
    to the backbone's own statistics, and the restored states to the head's. Unset statistics are the identity.
    """

    compose_size: int
    hidden_size: int

    def _init_statistics(self, standardize: bool) -> None:
        self.standardize = standardize
        if standardize:
            d = self.hidden_size
            for name, value in (("input_mean", 0.0), ("input_std", 1.0), ("output_mean", 0.0), ("output_std", 1.0)):
                self.register_buffer(name, torch.full((d,), value))

    @torch.no_grad()
    def set_statistics(self, input_mean, input_std, output_mean, output_std) -> None:
        """Per-feature (d,) mean and std of the states entering the multiplexer and of those the head reads.

        Raises:
            ValueError: if the multiplexer was built without ``standardize``.
        """
        if not self.standardize:
            raise ValueError("This multiplexer was built with standardize=False; set RevMuxConfig(standardize=True).")
        for name, value in (("input_mean", input_mean), ("input_std", input_std), ("output_mean", output_mean),
                            ("output_std", output_std)):
            buffer = getattr(self, name)
            buffer.copy_(torch.as_tensor(value, dtype=buffer.dtype).to(buffer.device))

    def instances(self, hidden: torch.Tensor) -> torch.Tensor:
        """The per-instance representations the multiplexer mixes, (G*N, T, d) -> (G*N, T, d')."""
        present = (hidden != 0).any(-1, keepdim=True) if self._masks_absent() else None  # (G*N, T, 1)
        if self.standardize:
            hidden = (hidden - self.input_mean) / self.input_std  # (G*N, T, d)
        instances = self._instances(hidden)
        return instances if present is None else instances * present  # absent (zero) states contribute nothing

    def _masks_absent(self) -> bool:
        """Whether an absent instance (padding, a zero vector) is zero in the instance space too."""
        return False

    def combine(self, instances: torch.Tensor) -> torch.Tensor:
        """(G*N, T, d') per-instance representations -> (G, T, d) composites."""
        composite = self._combine(instances)  # (G, T, d)
        return composite * self.input_std + self.input_mean if self.standardize else composite

    def demux(self, composite: torch.Tensor, keep: int | None = None) -> torch.Tensor:
        """(G, T, d) -> (min(keep, G*N), T, d): the first ``keep`` instances (dummies of the last group dropped)."""
        if self.standardize:
            composite = (composite - self.output_mean) / self.output_std  # (G, T, d)
        restored = self._demux(composite, keep)  # (B, T, d)
        return restored * self.output_std + self.output_mean if self.standardize else restored

    def demux_slots(self, rows: torch.Tensor, slots: torch.Tensor) -> torch.Tensor:
        """(R, d) composite vectors -> (R, d): for row r, the instance in slot ``slots[r]`` of that composite."""
        if self.standardize:
            rows = (rows - self.output_mean) / self.output_std  # (R, d)
        restored = self._demux_slots(rows, slots)  # (R, d)
        return restored * self.output_std + self.output_mean if self.standardize else restored

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        return self.combine(self.instances(hidden))  # (G, T, d)

    def _instances(self, hidden: torch.Tensor) -> torch.Tensor:  # pragma: no cover - protocol
        raise NotImplementedError

    def _combine(self, instances: torch.Tensor) -> torch.Tensor:  # pragma: no cover - protocol
        raise NotImplementedError

    def _demux(self, composite: torch.Tensor, keep: int | None) -> torch.Tensor:  # pragma: no cover - protocol
        raise NotImplementedError

    def _demux_slots(self, rows: torch.Tensor, slots: torch.Tensor) -> torch.Tensor:  # pragma: no cover
        raise NotImplementedError


COMPOSITES = ("blocks", "basis")  # where the slots are written (module docstring)


def slot_order(hidden_size: int, compose_size: int) -> torch.Tensor:
    """(d,) the basis directions in slot order: slot n holds directions n, n+N, n+2N, ... (alternate ones, so each
    slot gets its share of the high-variance directions)."""
    return torch.cat([torch.arange(n, hidden_size, compose_size) for n in range(compose_size)])


class SlotLinear(nn.Module):
    """One affine map per slot: (..., N, T, n_in) -> (..., N, T, n_out), slot n through weight[n], bias[n]."""

    def __init__(self, compose_size: int, n_in: int, n_out: int):
        super().__init__()
        self.weight = nn.Parameter(torch.zeros(compose_size, n_out, n_in))
        self.bias = nn.Parameter(torch.zeros(compose_size, n_out))

    def forward(self, x: torch.Tensor, slots: torch.Tensor | None = None,
                centre: torch.Tensor | None = None) -> torch.Tensor:
        """(..., N, T, n_in) -> (..., N, T, n_out), slot n through its own map; with ``slots``, (R, n_in) rows ->
        (R, n_out), row r through slot slots[r]'s map. ``centre`` (n_in,): map x - centre, folded into the bias.

        Every use of the weights is inside ``forward``: hooks that bring offloaded weights in (accelerate) wrap it.
        """
        bias = self.bias if centre is None else self.bias - torch.einsum("noi,i->no", self.weight, centre)  # (N, n_out)
        if slots is not None:
            return torch.einsum("ri,roi->ro", x, self.weight[slots]) + bias[slots]  # (R, n_out)
        return torch.einsum("...nti,noi->...nto", x, self.weight) + bias[:, None, :]  # (..., N, T, n_out)


class ReversibleCoupling(nn.Module):
    """The coupling chain over N slots of width w = d/N, one MLP F_n per slot (w -> hidden -> w).

    ``start_at_identity``: no final ReLU and a zero last layer, so every F_n is 0 and the chain the identity at the
    start (the ``basis`` composite); the last layer still gets gradients, which a zero layer under a ReLU would not.
    """

    def __init__(self, compose_size: int, width: int, hidden: int, dropout: float, start_at_identity: bool = False):
        super().__init__()
        self.functions = nn.ModuleList(
            _mlp([width, hidden, width], dropout, final_activation=not start_at_identity) for _ in range(compose_size)
        )
        if start_at_identity:
            for function in self.functions:
                nn.init.zeros_(function[-1].weight)
                nn.init.zeros_(function[-1].bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(G, N, T, w) instances -> (G, T, N*w) composite, blocks [y_0; ...; y_{N-1}]."""
        f = self.functions
        y = [x[:, 0] + f[0](x[:, 1])]  # each (G, T, w)
        for n in range(1, len(f)):
            y.append(x[:, n] + f[n](y[-1]))
        return torch.cat(y, dim=-1)  # (G, T, N*w)

    def inverse(self, composite: torch.Tensor) -> torch.Tensor:
        """(G, T, N*w) composite -> (G, N, T, w) instances, undoing ``forward`` with the same F_n."""
        f = self.functions
        y = composite.chunk(len(f), dim=-1)  # N x (G, T, w)
        x = [None] * len(f)
        for n in range(len(f) - 1, 0, -1):
            x[n] = y[n] - f[n](y[n - 1])
        x[0] = y[0] - f[0](x[1])
        return torch.stack(x, dim=1)  # (G, N, T, w)


class _ReversibleMultiplexer(Multiplexer):
    """The multiplexer shared by ``revmux`` and ``ora``: a down-projection (d -> d/N; one shared P for ``blocks``,
    P_n per slot for ``basis``), then the coupling chain, its output written as blocks or in the basis."""

    def __init__(self, hidden_size: int, compose_size: int, coupling_hidden: int, dropout: float,
                 standardize: bool = False, composite: str = "blocks"):
        super().__init__()
        self.hidden_size, self.compose_size, self.composite = hidden_size, compose_size, composite
        self._init_statistics(standardize)
        width = hidden_size // compose_size
        if composite == "basis":
            # Q with its columns in slot order; the identity (raw features, alternately) until set_basis calibrates it
            self.register_buffer("basis", torch.eye(hidden_size)[:, slot_order(hidden_size, compose_size)])
            self.register_buffer("basis_mean", torch.zeros(hidden_size))
            self.slot_down = SlotLinear(compose_size, hidden_size, width)
        else:
            self.down = nn.Linear(hidden_size, width)
        self.coupling = ReversibleCoupling(compose_size, width, coupling_hidden, dropout,
                                           start_at_identity=composite == "basis")
        if composite == "basis":
            self._init_from_basis()

    @torch.no_grad()
    def _init_from_basis(self) -> None:
        """P_n = Q_n^T (after centring on mu), and U_n = Q_n with bias mu where there is one: the composite and the
        restored slots start in place."""
        q = self.basis.view(self.hidden_size, self.compose_size, -1).permute(1, 0, 2)  # (N, d, w): Q_n
        self.slot_down.weight.copy_(q.transpose(1, 2))  # (N, w, d)
        self.slot_down.bias.zero_()
        if hasattr(self, "slot_up"):
            self.slot_up.weight.copy_(q)  # (N, d, w)
            self.slot_up.bias.copy_(self.basis_mean.expand_as(self.slot_up.bias))  # (N, d)

    @torch.no_grad()
    def set_basis(self, states: torch.Tensor) -> None:
        """Calibrate the ``basis`` composite from (tokens, d) layer-K states of real tokens: mu their mean, Q their
        principal directions (by variance, dealt alternately to the slots), in the space the multiplexer mixes in
        (standardised first when ``standardize``). Resets P_n and U_n to start in place.

        Raises:
            ValueError: for a ``blocks`` multiplexer, or states that are not (tokens >= 2, d).
        """
        if self.composite != "basis":
            raise ValueError("set_basis() calibrates the 'basis' composite; this multiplexer writes blocks "
                             "(RevMuxConfig(composite='basis') builds one that uses it).")
        if states.dim() != 2 or states.shape[1] != self.hidden_size or len(states) < 2:
            raise ValueError(f"set_basis() takes (tokens, {self.hidden_size}) layer-K states of at least two tokens, "
                             f"got {tuple(states.shape)}.")
        x = states.double().to(self.basis.device)  # (tokens, d)
        if self.standardize:
            x = (x - self.input_mean.double()) / self.input_std.double()
        mean = x.mean(0)  # (d,)
        values, vectors = torch.linalg.eigh(torch.cov((x - mean).T))  # ascending
        q = vectors[:, values.argsort(descending=True)][:, slot_order(self.hidden_size, self.compose_size)]  # (d, d)
        self.basis.copy_(q.to(self.basis.dtype))
        self.basis_mean.copy_(mean.to(self.basis_mean.dtype))
        self._init_from_basis()

    def _masks_absent(self) -> bool:
        return self.composite == "basis"

    def _instances(self, hidden: torch.Tensor) -> torch.Tensor:
        if self.composite == "blocks":
            return self.down(hidden)  # (G*N, T, d/N)
        x = hidden.view(-1, self.compose_size, *hidden.shape[1:])  # (G, N, T, d)
        return self.slot_down(x, centre=self.basis_mean).flatten(0, 1)  # (G*N, T, d/N): P_n (h - mu), no (B, T, d) copy

    def _combine(self, instances: torch.Tensor) -> torch.Tensor:
        x = instances.view(-1, self.compose_size, *instances.shape[1:])  # (G, N, T, d/N)
        y = self.coupling(x)  # (G, T, d): blocks [y_0; ...; y_{N-1}]
        return y if self.composite == "blocks" else F.linear(y, self.basis, self.basis_mean)  # (G, T, d): mu + Q y

    def _read(self, composite: torch.Tensor) -> torch.Tensor:
        """(..., d) composite -> (..., d) the chain's output blocks: the composite itself, or Q^T (c - mu)."""
        if self.composite == "blocks":
            return composite
        return F.linear(composite, self.basis.T, -(self.basis_mean @ self.basis))  # (..., d): Q^T c - Q^T mu


class ReversibleMux(_ReversibleMultiplexer):
    """``revmux``: the reversible multiplexer, and a demultiplexer that reuses its own coupling functions (reverse
    direction) before an up-projection (d/N -> d): the shared MLP U (``blocks``), or U_n per slot plus the shared
    MLP, which starts at 0 (``basis``)."""

    def __init__(self, hidden_size: int, compose_size: int, coupling_hidden: int, demux_hidden: int, dropout: float,
                 standardize: bool = False, composite: str = "blocks"):
        super().__init__(hidden_size, compose_size, coupling_hidden, dropout, standardize, composite)
        width = hidden_size // compose_size
        self.up = nn.Sequential(
            *_mlp([width, demux_hidden, demux_hidden, hidden_size], dropout, False),
            nn.Dropout(dropout),
        )
        if composite == "basis":
            self.slot_up = SlotLinear(compose_size, width, hidden_size)
            nn.init.zeros_(self.up[-2].weight)
            nn.init.zeros_(self.up[-2].bias)
            self._init_from_basis()

    def _demux(self, composite: torch.Tensor, keep: int | None = None) -> torch.Tensor:
        x = self.coupling.inverse(self._read(composite))  # (G, N, T, d/N)
        if self.composite == "blocks":
            return self.up(x.flatten(0, 1)[:keep])  # (B, T, d)
        return (self.slot_up(x) + self.up(x)).flatten(0, 1)[:keep]  # (B, T, d)

    def _demux_slots(self, rows: torch.Tensor, slots: torch.Tensor) -> torch.Tensor:
        x = self.coupling.inverse(self._read(rows)[:, None])  # (R, N, 1, d/N)
        x = x[torch.arange(len(rows), device=rows.device), slots, 0]  # (R, d/N)
        return self.up(x) if self.composite == "blocks" else self.slot_up(x, slots=slots) + self.up(x)  # (R, d)


class MlpDemux(nn.Module):
    """Plain MLP demultiplexer of the baselines: d -> h -> h -> N*d, then one block per instance."""

    def __init__(self, hidden_size: int, compose_size: int, demux_hidden: int, dropout: float):
        super().__init__()
        self.compose_size = compose_size
        self.mlp = _mlp([hidden_size, demux_hidden, demux_hidden, compose_size * hidden_size], dropout, False)

    def forward(self, composite: torch.Tensor, keep: int | None = None) -> torch.Tensor:
        g, t, d = composite.shape
        out = self.mlp(composite)  # (G, T, N*d)
        out = out.view(g, t, self.compose_size, d).transpose(1, 2)  # (G, N, T, d)
        return out.flatten(0, 1)[:keep]  # (B, T, d)

    def slots(self, rows: torch.Tensor, slots: torch.Tensor) -> torch.Tensor:
        out = self.mlp(rows).view(len(rows), self.compose_size, -1)  # (R, N, d)
        return out[torch.arange(len(rows), device=rows.device), slots]  # (R, d)


class OnlyMuxReversible(_ReversibleMultiplexer):
    """``ora``: the reversible multiplexer of ``revmux``, but an MLP demultiplexer on the composite."""

    def __init__(self, hidden_size: int, compose_size: int, coupling_hidden: int, demux_hidden: int, dropout: float,
                 standardize: bool = False, composite: str = "blocks"):
        super().__init__(hidden_size, compose_size, coupling_hidden, dropout, standardize, composite)
        self.demux_mlp = MlpDemux(hidden_size, compose_size, demux_hidden, dropout)

    def _demux(self, composite: torch.Tensor, keep: int | None = None) -> torch.Tensor:
        return self.demux_mlp(composite, keep)  # (B, T, d)

    def _demux_slots(self, rows: torch.Tensor, slots: torch.Tensor) -> torch.Tensor:
        return self.demux_mlp.slots(rows, slots)  # (R, d)


class VanillaAdapterMux(Multiplexer):
    """``adapter``: shared Linear(d -> d) per instance, concatenation, MLP N*d -> h -> d; MLP demultiplexer."""

    def __init__(self, hidden_size: int, compose_size: int, coupling_hidden: int, demux_hidden: int, dropout: float,
                 standardize: bool = False, composite: str = "blocks"):
        super().__init__()
        if composite != "blocks":
            raise ValueError(f"mux_type='adapter' mixes through an MLP and has no slots to write in a basis; use "
                             f"composite='blocks', or mux_type='revmux' for composite={composite!r}.")
        self.hidden_size, self.compose_size = hidden_size, compose_size
        self._init_statistics(standardize)
        self.inp = nn.Linear(hidden_size, hidden_size)
        self.mix = _mlp([compose_size * hidden_size, demux_hidden, hidden_size], dropout, final_activation=True)
        self.demux_mlp = MlpDemux(hidden_size, compose_size, demux_hidden, dropout)

    def _instances(self, hidden: torch.Tensor) -> torch.Tensor:
        return self.inp(hidden)  # (G*N, T, d)

    def _combine(self, instances: torch.Tensor) -> torch.Tensor:
        n, z = self.compose_size, instances  # (G*N, T, d)
        g, t, d = z.shape[0] // n, z.shape[1], z.shape[2]
        z = z.view(g, n, t, d).transpose(1, 2).reshape(g, t, n * d)  # (G, T, N*d)
        return self.mix(z)  # (G, T, d)

    def _demux(self, composite: torch.Tensor, keep: int | None = None) -> torch.Tensor:
        return self.demux_mlp(composite, keep)  # (B, T, d)

    def _demux_slots(self, rows: torch.Tensor, slots: torch.Tensor) -> torch.Tensor:
        return self.demux_mlp.slots(rows, slots)  # (R, d)


MULTIPLEXERS: dict[str, type[Multiplexer]] = {  # mux_type -> class: the one list of mux types
    "revmux": ReversibleMux,
    "ora": OnlyMuxReversible,
    "adapter": VanillaAdapterMux,
}


def _module_names() -> frozenset[str]:
    """Every submodule name inside any multiplexer (``down``, ``coupling``, ...), from tiny instances of each."""
    names = set()
    for mux_type, composite in [(m, "blocks") for m in MULTIPLEXERS] + [("revmux", "basis"), ("ora", "basis")]:
        tiny = MULTIPLEXERS[mux_type](4, 2, 4, 4, 0.0, composite=composite)
        names.update(part for path, _ in tiny.named_modules() for part in path.split(".") if not part.isdigit())
    return frozenset(names - {""})


# Adapter names that would clash with these in state-dict keys (PEFT strips ".<adapter name>." when saving).
MULTIPLEXER_MODULE_NAMES = _module_names()


def check_divisible(hidden_size: int, compose_size: int) -> None:
    """Raises: ValueError if the hidden size d cannot be split into N blocks of d/N features."""
    if hidden_size % compose_size:
        divisors = [n for n in range(2, min(hidden_size, 16) + 1) if hidden_size % n == 0]
        raise ValueError(
            f"The hidden size {hidden_size} is not divisible by compose_size={compose_size}: each of the N instances "
            f"gets d/N features of the composite. Choose compose_size from {divisors}."
        )


def build_multiplexer(mux_type: str, hidden_size: int, compose_size: int, coupling_hidden: int | None = None,
                      demux_hidden: int | None = None, dropout: float = 0.1, standardize: bool = False,
                      composite: str = "blocks") -> Multiplexer:
    """Build the multiplexer of ``mux_type`` with the paper's default widths (coupling d, demux 3d).

    Raises:
        ValueError: if ``hidden_size`` is not divisible by ``compose_size``, ``mux_type`` or ``composite`` is unknown,
            or ``composite="basis"`` with ``mux_type="adapter"``.
    """
    if mux_type not in MULTIPLEXERS:
        raise ValueError(f"Unknown mux_type {mux_type!r}; choose one of {', '.join(MULTIPLEXERS)}.")
    if composite not in COMPOSITES:
        raise ValueError(f"Unknown composite {composite!r}; choose one of {', '.join(COMPOSITES)}.")
    check_divisible(hidden_size, compose_size)
    return MULTIPLEXERS[mux_type](
        hidden_size, compose_size, coupling_hidden or hidden_size, demux_hidden or 3 * hidden_size, dropout, standardize,
        composite=composite,
    )
