"""The training objective's two auxiliary terms (method.md, "Training objective")."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def info_nce(student: torch.Tensor, teacher: torch.Tensor, scale: float = 20.0,
             statistics: tuple[torch.Tensor, torch.Tensor] | None = None) -> torch.Tensor:
    """In-batch InfoNCE between (B, d) student and teacher readouts: instance i must pick teacher i among all B.

    loss = CE(scale * z t^T, arange(B)) with z, t L2-normalised; the teacher side carries no gradient. With
    ``statistics`` = per-feature (mean, std) of the readouts, both sides are standardised first: decoder readouts share
    one massive direction (pairwise cosine ~0.97 on SmolLM2), so raw cosines barely tell instances apart and even a
    perfect student stays near ln(B).
    """
    if statistics is not None:
        mean, std = statistics
        student, teacher = (student - mean) / std, (teacher - mean) / std  # (B, d)
    z = F.normalize(student, dim=-1)  # (B, d)
    t = F.normalize(teacher.detach().to(z.dtype), dim=-1)  # (B, d)
    logits = scale * z @ t.T  # (B, B)
    return F.cross_entropy(logits, torch.arange(len(z), device=z.device))


def orthogonality(instances: torch.Tensor, mask: torch.Tensor | None, compose_size: int,
                  batch_size: int | None = None) -> torch.Tensor:
    """Mean |cos| between the instances of each group, per token, over positions both attend.

    Args:
        instances: (G*N, T, w) per-instance representations the multiplexer mixes, grouped consecutively.
        mask: (B, T) attention mask of the real instances (or None: every position counts).
        compose_size: N.
        batch_size: B real instances; pairs with a dummy instance (index >= B) are left out.

    Returns:
        0 for mutually orthogonal instances, 1 for identical (or opposite) ones.
    """
    total_rows, length = instances.shape[:2]
    b = total_rows if batch_size is None else batch_size
    x = F.normalize(instances, dim=-1).view(-1, compose_size, length, instances.shape[-1])  # (G, N, T, w)
    real = torch.ones(total_rows, length, device=instances.device)
    real[:b] = 1.0 if mask is None else mask.to(real.dtype)
    real[b:] = 0.0  # dummies never enter the loss
    real = real.view(-1, compose_size, length)  # (G, N, T)
    terms, weights = [], []
    for i in range(compose_size):
        for j in range(i + 1, compose_size):
            cos = (x[:, i] * x[:, j]).sum(-1).abs()  # (G, T)
            both = real[:, i] * real[:, j]  # (G, T)
            terms.append((cos * both).sum())
            weights.append(both.sum())
    return torch.stack(terms).sum() / torch.stack(weights).sum().clamp_min(1.0)


def distillation(student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float = 2.0) -> torch.Tensor:
    """KL(teacher || student) between (B, C) class distributions at ``temperature``, scaled by T² (Hinton et al.,
    2015), so its gradients keep their size as T changes. The teacher side carries no gradient.

    For a zero-shot decoder both sides are the calibrated label-word logits: the student learns the teacher's
    confidence per instance, a denser signal than the gold label alone.
    """
    t = temperature
    target = F.log_softmax(teacher_logits.detach().to(student_logits.dtype) / t, dim=-1)  # (B, C)
    return F.kl_div(F.log_softmax(student_logits / t, dim=-1), target, log_target=True, reduction="batchmean") * t * t


def state_distance(student: torch.Tensor, teacher: torch.Tensor,
                   statistics: tuple[torch.Tensor, torch.Tensor] | None = None) -> torch.Tensor:
    """Mean squared distance between (B, d) student and teacher readouts, per feature in the teacher's standard
    deviations (``statistics`` = per-feature (mean, std)), else relative to the teacher's mean squared norm: a
    regression to the teacher's state, which decoder readouts (one massive shared direction) need besides InfoNCE."""
    teacher = teacher.detach().to(student.dtype)
    if statistics is not None:
        _, std = statistics
        return (((student - teacher) / std) ** 2).mean()
    return ((student - teacher) ** 2).sum(-1).mean() / (teacher ** 2).sum(-1).mean().clamp_min(1e-8)
