"""Grouping a batch of B instances into G = ceil(B / N) groups of N, and shrinking layer arguments to match.

Groups are consecutive instances: group g holds instances g*N .. g*N+N-1. When B is not a multiple of N the last
group is completed with dummy instances, copies of the batch's last instance, which never reach an output.
After the multiplexing point every layer receives G composites, so every argument with the batch size B is
shrunk to G rows: attention masks to the union over the group, positions to the group's first instance, ALiBi
biases (B*heads rows) to the bias of the union mask. A layer whose forward names a tensor argument with no rule
here is refused at injection (``unknown_layer_arguments``), not in the middle of a forward.

Decoders lay each group out *right-aligned* (``RevMuxConfig(align_last_tokens=True)``): after the multiplexing point
instance i is shifted right by s_i = T - L_i positions, as if it had been left-padded, so the last real tokens of a
group (where a decoder's head reads) share the composite's last position. Its masks and ALiBi bias are shifted alike
(``shift_layer_argument``) before the union, which makes the group's arguments exactly those the model builds for a
left-padded batch: the upper layers see every instance with its own relative positions (RoPE, ALiBi and layers
without position information are unchanged by the shift).
"""

from __future__ import annotations

import inspect
import math
from typing import Any

import torch
from torch import nn

# Arguments that never carry a batch dimension, whatever their size.
NO_BATCH_DIM = frozenset({
    "cache_position",
    "rel_embeddings",  # DeBERTa: (2 * span, d) relative position embeddings
})
# Arguments that are equal across a group (shared positions): keep the group's first instance.
FIRST_OF_GROUP = frozenset({
    "position_ids", "position_embeddings", "position_bias", "encoder_decoder_position_bias", "rotary_pos_emb",
})
# ALiBi biases (BLOOM, Falcon), (B * heads, 1, T): slope_h * (position among the attended tokens), 0 where masked.
# Their union over a group is the bias the union mask gives (see ``group_union_per_head``).
PER_HEAD_UNION = frozenset({"alibi"})
# Layer arguments that are not batch-sized tensors in the models' own loops (flags, caches, tensors shared by the
# batch, an encoder-decoder's encoder output, which is already G composites). Checked at run time all the same: a
# tensor with the batch size under one of these names is rejected by ``reduce_layer_argument``.
NOT_BATCH_SIZED = frozenset({
    "cache", "past_key_value", "past_key_values", "layer_past", "use_cache", "output_attentions",
    "output_hidden_states", "return_dict", "layer_idx", "encoder_hidden_states",
    "relative_pos", "query_states",  # DeBERTa: (1, T, T) shared; query_states is None in its encoder loop
    "sinusoidal_pos",  # RoFormer: (1, 1, T, d) shared
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


def group_union_per_head(bias: torch.Tensor, batch_size: int, compose_size: int) -> torch.Tensor:
    """(B*H, ...) ALiBi bias -> (G*H, ...): per head, the maximum over the group.

    An instance's bias is ``slope_h * (number of attended tokens before j)`` at an attended position j and 0 at a
    masked one, with slopes > 0. When the masks of a group are nested (right- or left-padded batches: decoders
    accept right padding only) the union mask is the widest one, and its bias is the elementwise maximum: exactly
    what the model computes for a single sequence under the union mask, the mask the composite attends with.

    Raises:
        ValueError: if the bias does not have a multiple of B rows.
    """
    heads = bias.shape[0] // batch_size
    if heads * batch_size != bias.shape[0]:
        raise ValueError(f"An ALiBi bias of {bias.shape[0]} rows does not hold batch_size={batch_size} instances "
                         "of equally many heads; revmux cannot combine it per group.")
    per_instance = bias.view(batch_size, heads, *bias.shape[1:])  # (B, H, 1, T)
    return group_union(per_instance, compose_size).flatten(0, 1)  # (G, H, 1, T) -> (G*H, 1, T)


def group_first(x: torch.Tensor, compose_size: int) -> torch.Tensor:
    """(B, ...) -> (G, ...): the first instance of every group."""
    return pad_to_groups(x, compose_size)[::compose_size]  # (G, ...)


def check_identical_in_groups(x: torch.Tensor, compose_size: int, what: str = "decoder_input_ids") -> None:
    """Decoder inputs (B, T_dec[, d]) must be identical within each group: the decoder runs once per group.

    Raises:
        ValueError: if two instances of a group differ (``what`` names the argument in the message).
    """
    x = pad_to_groups(x, compose_size)
    x = x.view(-1, compose_size, *x.shape[1:])  # (G, N, T_dec, ...)
    if not torch.equal(x, x[:, :1].expand_as(x)):
        raise ValueError(
            f"Decoder inputs differ inside a group of compose_size={compose_size} instances ({what}). RevMUX runs "
            "the decoder of an encoder-decoder model once per group, so every instance of a group needs the same "
            f"{what} (e.g. one shared classification prompt, or labels of length 1). Pass identical {what}, or "
            "group the instances so that each group of compose_size shares them."
        )


def right_align_shifts(mask: torch.Tensor) -> torch.Tensor:
    """(B, T) right-padded attention mask -> (B,) shifts s_i = T - L_i that put each last real token at T - 1."""
    return mask.shape[1] - mask.long().sum(-1)  # (B,)


def shift_right(x: torch.Tensor, shifts: torch.Tensor) -> torch.Tensor:
    """(B, T, ...) -> (B, T, ...) with row b moved ``shifts[b]`` positions to the right along T, circularly.

    On a right-padded row of length L and shift T - L the wrapped positions are its padding: it becomes left-padded.
    ``shift_right(x, -shifts)`` undoes it.
    """
    t = x.shape[1]
    source = (torch.arange(t, device=x.device)[None, :] - shifts.to(x.device)[:, None]) % t  # (B, T)
    index = source.view(*source.shape, *([1] * (x.dim() - 2))).expand_as(x)  # (B, T, ...)
    return x.gather(1, index)


def shift_layer_argument(name: str, value: Any, shifts: torch.Tensor, compose_size: int) -> Any:
    """One batch-sized layer argument of the right-padded instances, laid out right-aligned (module docstring).

    Attention masks, (B, T) or (B, h, T, T), move with their instance (a square mask along both axes; the positions
    moved in from the left are masked, in the mask's own encoding); ALiBi biases, (B*H, 1, T), move along T.
    Everything else (positions shared by the group, caches, flags) is left as it is: for relative positions the
    shift changes nothing.

    Raises:
        ValueError: for an attention mask of a shape revmux cannot lay out right-aligned.
    """
    if isinstance(value, (tuple, list)):
        return type(value)(shift_layer_argument(name, v, shifts, compose_size) for v in value)
    if not isinstance(value, torch.Tensor) or value.dim() == 0 or name in NO_BATCH_DIM:
        return value
    b = len(shifts)
    if name in PER_HEAD_UNION and value.shape[0] % b == 0 and value.dim() == 3:
        heads = value.shape[0] // b
        per_instance = value.view(b, heads, value.shape[-1])  # (B, H, T)
        return shift_right(per_instance.transpose(1, 2), shifts).transpose(1, 2).reshape(value.shape)  # (B*H, 1, T)
    if "mask" not in name or value.shape[0] != b:
        return value
    if value.dim() == 2:  # (B, T) padding mask (flash attention): left-padded after the shift
        return shift_right(value, shifts)
    if value.dim() == 4 and value.shape[-1] == value.shape[-2]:
        masked = False if value.dtype == torch.bool else (0 if not value.is_floating_point()
                                                          else torch.finfo(value.dtype).min)
        t = value.shape[-1]
        rows = shift_right(value.transpose(1, 2), shifts).transpose(1, 2)  # (B, h, T, T): queries moved
        both = shift_right(rows.permute(0, 3, 1, 2), shifts).permute(0, 2, 3, 1)  # keys moved too
        position = torch.arange(t, device=value.device)
        outside = position[None, :] < shifts.to(value.device)[:, None]  # (B, T): moved in from the left
        outside = outside[:, None, :, None] | outside[:, None, None, :]  # (B, 1, T, T)
        return both.masked_fill(outside, masked)
    raise ValueError(
        f"The attention mask {name!r} of shape {tuple(value.shape)} cannot be laid out right-aligned (revmux shifts "
        "(B, T) and (B, heads, T, T) masks). Set RevMuxConfig(align_last_tokens=False) for this model.")


def reduce_layer_argument(name: str, value: Any, batch_size: int, compose_size: int) -> Any:
    """Shrink one layer argument from the batch size B to G groups (see module docstring).

    Raises:
        ValueError: for a tensor argument of batch size B that revmux does not know how to combine per group.
    """
    if isinstance(value, (tuple, list)):
        return type(value)(reduce_layer_argument(name, v, batch_size, compose_size) for v in value)
    if not isinstance(value, torch.Tensor) or value.dim() == 0 or name in NO_BATCH_DIM:
        return value
    if batch_size == num_groups(batch_size, compose_size):
        return value  # nothing to shrink
    if name in PER_HEAD_UNION:
        return group_union_per_head(value, batch_size, compose_size)
    if name == "position_bias" and value.dim() == 3:
        return value  # MPT's ALiBi, (heads, 1, T): shared by the batch (T5's is (B or 1, heads, T_q, T_k))
    if value.shape[0] != batch_size:
        return value  # broadcast (dim 0 == 1) or already per group
    if "mask" in name:
        return group_union(value, compose_size)
    if name in FIRST_OF_GROUP:
        return group_first(value, compose_size)
    raise ValueError(
        f"The layer argument {name!r} has the batch size {batch_size}, and revmux does not know how to combine it "
        f"over a group of {compose_size} instances. Supported batch-sized arguments: attention masks (union), "
        f"{', '.join(sorted(PER_HEAD_UNION))} (union per head) and {', '.join(sorted(FIRST_OF_GROUP))} (first of "
        "group). Please report the model so it can be added."
    )


def _may_be_tensor(annotation: Any) -> bool:
    if annotation is inspect.Parameter.empty:
        return True  # unannotated: could be anything
    return "Tensor" in (annotation if isinstance(annotation, str) else repr(annotation))


def unknown_layer_arguments(layer: nn.Module) -> list[str]:
    """Arguments of ``layer.forward`` (after the hidden states) that may be batch-sized tensors without a rule here.

    Known: masks (any name with "mask"), the names of ``NO_BATCH_DIM``, ``FIRST_OF_GROUP``, ``PER_HEAD_UNION`` and
    ``NOT_BATCH_SIZED``, and arguments annotated as something other than a tensor (flags, sizes, caches).
    """
    params = list(inspect.signature(layer.forward).parameters.values())[1:]  # [0]: the hidden states
    known = NO_BATCH_DIM | FIRST_OF_GROUP | PER_HEAD_UNION | NOT_BATCH_SIZED
    return [p.name for p in params
            if p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD) and p.name not in known and "mask" not in p.name
            and _may_be_tensor(p.annotation)]
