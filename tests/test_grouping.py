"""Grouping and argument shrinking."""

import pytest
import torch

from revmux.tuner.grouping import check_identical_in_groups, group_first, group_union, pad_to_groups, reduce_layer_argument


def test_pad_repeats_last_instance():
    x = torch.arange(5.0).view(5, 1)
    padded = pad_to_groups(x, 3)
    assert padded.flatten().tolist() == [0, 1, 2, 3, 4, 4]
    assert pad_to_groups(x, 5) is x


@pytest.mark.parametrize("encoding", ["bool", "int", "additive"])
def test_mask_union_any_encoding(encoding):
    attend = torch.tensor([[1, 1, 0, 0], [1, 0, 0, 0], [1, 1, 1, 0]]).bool()  # (B=3, T)
    mask = {"bool": attend, "int": attend.long(),
            "additive": torch.where(attend, 0.0, torch.finfo(torch.float32).min)}[encoding]
    union = group_union(mask, 2)  # groups {0, 1}, {2, dummy copy of 2}
    expected = torch.tensor([[1, 1, 0, 0], [1, 1, 1, 0]]).bool()
    got = union if encoding == "bool" else (union > 0 if encoding == "int" else union == 0)
    assert torch.equal(got, expected)


def test_first_of_group():
    x = torch.arange(5).view(5, 1)
    assert group_first(x, 2).flatten().tolist() == [0, 2, 4]


def test_identical_in_groups_rejects_different_inputs():
    same = torch.ones(5, 2, dtype=torch.long)
    check_identical_in_groups(same, 2)
    different = same.clone()
    different[3, 0] = 2
    with pytest.raises(ValueError, match="Decoder inputs differ inside a group"):
        check_identical_in_groups(different, 2)


def test_reduce_layer_argument_rules():
    b, n = 4, 2
    mask = torch.ones(b, 1, 3, 3, dtype=torch.bool)
    assert reduce_layer_argument("attention_mask", mask, b, n).shape == (2, 1, 3, 3)
    assert reduce_layer_argument("position_ids", torch.zeros(b, 3), b, n).shape == (2, 3)
    cos_sin = (torch.zeros(b, 3, 8), torch.zeros(b, 3, 8))
    assert [t.shape[0] for t in reduce_layer_argument("position_embeddings", cos_sin, b, n)] == [2, 2]
    broadcast = torch.zeros(1, 3)
    assert reduce_layer_argument("position_ids", broadcast, b, n) is broadcast
    cache_position = torch.arange(b)  # same length as the batch by coincidence: not a batch dimension
    assert reduce_layer_argument("cache_position", cache_position, b, n) is cache_position
    with pytest.raises(ValueError, match="'token_type_thing' has the batch size 4"):
        reduce_layer_argument("token_type_thing", torch.zeros(b, 3), b, n)
