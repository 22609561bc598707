"""What a validation pass says about *why* an adapter classifies as it does, beside its accuracy.

Measured where the head reads each instance (``head.positions``), against the frozen teacher run un-multiplexed from
the same layer-K states:

| key              | what                                                                                       |
|------------------|--------------------------------------------------------------------------------------------|
| `read_cosine`    | mean cosine between restored and teacher last-layer states (standardised when calibrated)  |
| `read_rel_error` | mean ‖restored − teacher‖ / ‖teacher‖ (raw states)                                        |
| `margin`         | mean student class-logit margin (gold minus best other class), as the head scores it       |
| `teacher_margin` | the same for the teacher (calibrated label words for zero-shot decoders)                   |
| `agreement`      | share of instances where student and teacher predict the same class                        |
| `aligned_reads`  | share of composites whose instances are read at one position (1.0 for right-aligned groups) |

A restored state close to the teacher's (cosine near 1) with a small margin points at the head (a weak teacher); a
low cosine with chance accuracy points at the multiplexer; ``aligned_reads`` far below 1 means each instance's
answer cue shares its composite position with another instance's text.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from revmux.train.heads import ClassificationHead

DIAGNOSTICS = ("read_cosine", "read_rel_error", "margin", "teacher_margin", "agreement", "aligned_reads")


def margins(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """(B,) gold class logit minus the best other class's: > 0 where the prediction is right."""
    gold = logits.gather(1, labels[:, None]).squeeze(1)  # (B,)
    others = logits.scatter(1, labels[:, None], float("-inf"))  # (B, C)
    return gold - others.max(-1).values


def aligned_reads(positions: torch.Tensor, shifts: torch.Tensor | None, compose_size: int) -> tuple[int, int]:
    """(composites whose real instances share one read position, composites) for a batch's (B,) read positions."""
    at = positions if shifts is None else positions + shifts.to(positions.device)  # (B,) position in the composite
    full = len(at) - len(at) % compose_size  # the last, incomplete group has dummies that are never read
    groups = at[:full].view(-1, compose_size)  # (G, N)
    shared = int((groups == groups[:, :1]).all(-1).sum()) + (1 if full < len(at) else 0)
    return shared, groups.shape[0] + (1 if full < len(at) else 0)


class ReadoutDiagnostics:
    """Accumulates the table above over the batches of one validation pass."""

    def __init__(self, compose_size: int, statistics: tuple[torch.Tensor, torch.Tensor] | None = None):
        self.compose_size, self.statistics = compose_size, statistics
        self.sums = dict.fromkeys(DIAGNOSTICS, 0.0)
        self.instances = self.composites = 0

    @torch.no_grad()
    def add(self, tuner, model, head: ClassificationHead, batch: dict, student_logits: torch.Tensor,
            recording) -> None:
        """One batch: ``recording`` holds the student forward's restored states and layer-K states."""
        labels = batch["labels"]
        with tuner.teacher(recording):  # the frozen backbone, un-multiplexed, from the same layer-K states
            teacher_logits = head.logits(model, batch)  # (B, C)
        rows = torch.arange(len(labels), device=labels.device)
        positions = head.positions(batch).to(labels.device)  # (B,)
        student = recording.restored[rows, positions].float()  # (B, d)
        teacher = recording.teacher_hidden[rows, positions].float()  # (B, d)
        if self.statistics is not None:
            mean, std = (s.to(student.device) for s in self.statistics)
            cosine = F.cosine_similarity((student - mean) / std, (teacher - mean) / std, dim=-1)
        else:
            cosine = F.cosine_similarity(student, teacher, dim=-1)
        self.sums["read_cosine"] += float(cosine.sum())
        self.sums["read_rel_error"] += float(((student - teacher).norm(dim=-1) / teacher.norm(dim=-1)).sum())
        self.sums["margin"] += float(margins(student_logits.float(), labels).sum())
        self.sums["teacher_margin"] += float(margins(teacher_logits.float(), labels).sum())
        self.sums["agreement"] += float((student_logits.argmax(-1) == teacher_logits.argmax(-1)).sum())
        shared, composites = aligned_reads(positions, recording.shifts, self.compose_size)
        self.sums["aligned_reads"] += shared
        self.instances += len(labels)
        self.composites += composites

    def result(self) -> dict[str, float]:
        out = {k: v / max(self.instances, 1) for k, v in self.sums.items() if k != "aligned_reads"}
        out["aligned_reads"] = self.sums["aligned_reads"] / max(self.composites, 1)
        return {k: round(v, 4) for k, v in out.items()}
