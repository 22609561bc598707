"""Grouping a batch of B instances into G = ceil(B / N) groups of N, and shrinking layer arguments to match.

Groups are consecutive instances: group g holds instances g*N .. g*N+N-1. When B is not a multiple of N the last
group is completed with dummy instances, copies of the batch's last instance, which never reach an output.
After the multiplexing point every layer receives G composites, so every argument with the batch size B is
shrunk to G rows: attention masks to the union over the group, positions to the group's first instance.
"""

from __future__ import annotations

import math
from typing import Any

import torch

# Arguments that never carry a batch dimension, whatever their size.
NO_BATCH_DIM = frozenset({"cache_position"})
# Arguments that are equal across a group (shared positions): keep the group's first instance.
FIRST_OF_GROUP = frozenset({
    "position_ids", "position_embeddings", "position_bias", "encoder_decoder_position_bias", "rotary_pos_emb",
})


def num_groups(batch_size: int, compose_size: int) -> int:
    return math.ceil(batch_size / compose_size)


def pad_to_groups(x: torch.Tensor, compose_size: int) -> torch.Tensor:
    """(B, ...) -> (G*N, ...), completing the last group with copies of the last instance."""
    missing = -x.shape[0] % compose_size
    if not missing:
        return x
    return torch.cat([x, x[-1:].expand(missing, *x.shape[1:])], dim=0)  # (G*N, ...)


def group_union(mask: torch.Tensor, compose_size: int) -> torch.Tensor:
    """(B, ...) mask -> (G, ...): a position is attended if any instance of the group attends it.

    Works for boolean masks (True = attend), 0/1 integer masks and additive float masks (0 = attend, large negative =
    masked): the union is the maximum over the group in all three encodings.
    """
    m = pad_to_groups(mask, compose_size)
    m = m.view(-1, compose_size, *m.shape[1:])  # (G, N, ...)
    return m.any(dim=1) if m.dtype == torch.bool else m.amax(dim=1)  # (G, ...)


def group_first(x: torch.Tensor, compose_size: int) -> torch.Tensor:
    """(B, ...) -> (G, ...): the first instance of every group."""
    return pad_to_groups(x, compose_size)[::compose_size]  # (G, ...)


def check_identical_in_groups(x: torch.Tensor, compose_size: int) -> None:
    """Decoder inputs (B, T_dec[, d]) must be identical within each group: the decoder runs once per group.

    Raises:
        ValueError: if two instances of a group differ.
    """
    x = pad_to_groups(x, compose_size)
    x = x.view(-1, compose_size, *x.shape[1:])  # (G, N, T_dec, ...)
    if not torch.equal(x, x[:, :1].expand_as(x)):
        raise ValueError(
            "Decoder inputs differ inside a group of compose_size instances. RevMUX runs the decoder of an "
            "encoder-decoder model once per group, so every instance of a group needs the same decoder_input_ids "
            "(e.g. one shared classification prompt, or labels of length 1). Pass identical decoder_input_ids, or "
            "use compose_size instances that share them per group."
        )


def reduce_layer_argument(name: str, value: Any, batch_size: int, compose_size: int) -> Any:
    """Shrink one layer argument from the batch size B to G groups (see module docstring).

    Raises:
        ValueError: for a tensor argument of batch size B that revmux does not know how to combine per group.
    """
    if isinstance(value, (tuple, list)):
        return type(value)(reduce_layer_argument(name, v, batch_size, compose_size) for v in value)
    if not isinstance(value, torch.Tensor) or value.dim() == 0 or name in NO_BATCH_DIM:
        return value
    if value.shape[0] != batch_size or batch_size == num_groups(batch_size, compose_size):
        return value  # broadcast (dim 0 == 1), already per group, or nothing to shrink
    if "mask" in name:
        return group_union(value, compose_size)
    if name in FIRST_OF_GROUP:
        return group_first(value, compose_size)
    raise ValueError(
        f"The layer argument {name!r} has the batch size {batch_size}, and revmux does not know how to combine it "
        f"over a group of {compose_size} instances. Supported batch-sized arguments: attention masks (union) and "
        f"{', '.join(sorted(FIRST_OF_GROUP))} (first of group). Please report the model so it can be added."
    )
