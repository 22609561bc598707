"""The auxiliary losses have the properties the objective relies on."""

import torch

from revmux.train.losses import info_nce, orthogonality


def test_info_nce_ranks_the_true_positive():
    torch.manual_seed(0)
    teacher = torch.randn(8, 16)
    aligned = info_nce(teacher + 0.01 * torch.randn(8, 16), teacher)
    shuffled = info_nce(teacher[torch.roll(torch.arange(8), 1)], teacher)
    assert aligned < 0.01
    assert shuffled > 5.0
    student = torch.randn(8, 16, requires_grad=True)
    info_nce(student, teacher).backward()
    assert student.grad.abs().sum() > 0


def test_orthogonality_zero_for_orthogonal_and_one_for_identical():
    e = torch.eye(4)
    orthogonal = torch.stack([e[0], e[1], e[2], e[3]]).view(4, 1, 4).expand(4, 3, 4)  # pairs (e0,e1), (e2,e3)
    assert orthogonality(orthogonal, None, compose_size=2).item() == 0.0
    identical = torch.randn(2, 3, 4).repeat_interleave(2, dim=0)  # each instance paired with a copy of itself
    torch.testing.assert_close(orthogonality(identical, None, 2), torch.tensor(1.0))
    torch.testing.assert_close(orthogonality(-identical * torch.tensor([1, -1, 1, -1.0])[:, None, None], None, 2),
                               torch.tensor(1.0))


def test_orthogonality_ignores_masked_positions_and_dummies():
    x = torch.randn(4, 5, 8)
    x[1, 3:] = x[0, 3:]  # identical only where instance 1 is padding
    mask = torch.tensor([[1, 1, 1, 1, 1], [1, 1, 1, 0, 0], [1, 1, 1, 1, 1]])
    with_mask = orthogonality(x, mask, 2, batch_size=3)
    x[1, 3:] = torch.randn(2, 8)
    assert torch.equal(with_mask, orthogonality(x, mask, 2, batch_size=3))
    x[3] = x[2]  # instance 3 is a dummy copy of 2: must not count
    dummy_free = orthogonality(x, mask, 2, batch_size=3)
    only_first_group = orthogonality(x[:2], mask[:2], 2)
    torch.testing.assert_close(dummy_free, only_first_group)


def test_info_nce_with_statistics_tells_instances_apart_despite_a_shared_massive_direction():
    torch.manual_seed(0)
    specific = torch.randn(16, 32)
    massive = torch.zeros(32)
    massive[3] = 1000.0  # one feature in the thousands, shared by every instance (decoder residual streams)
    readouts = massive + specific  # (B, d): pairwise cosine ~1
    std = torch.ones(32)
    perfect_raw = info_nce(readouts, readouts)
    perfect_standardised = info_nce(readouts, readouts, statistics=(massive, std))
    assert perfect_raw > 0.9 * torch.log(torch.tensor(16.0))  # near chance although the student is exact
    assert perfect_standardised < 0.01
    shuffled = info_nce(readouts[torch.roll(torch.arange(16), 1)], readouts, statistics=(massive, std))
    assert shuffled > 5.0


def test_the_objective_compares_standardised_readouts_when_the_adapter_standardises(monkeypatch):
    from conftest import make_batch, make_muxed

    import revmux.train.trainer as trainer
    from revmux.train.heads import head_for
    from revmux.tiny import tiny_tokenizer

    seen = []
    monkeypatch.setattr(trainer, "info_nce", lambda s, t, statistics=None: seen.append(statistics) or s.sum() * 0)
    for standardize in (False, True):
        model = make_muxed("llama-seqcls", standardize=standardize).train()
        if standardize:
            model.base_model.calibrate(torch.zeros(32), torch.ones(32), torch.full((32,), 7.0), torch.full((32,), 2.0))
        batch = make_batch("llama-seqcls", batch_size=4)
        batch["labels"] = torch.tensor([0, 1, 0, 1])
        trainer.revmux_objective(model.base_model, model, head_for(model, tiny_tokenizer(), "sst-2"), batch)
    assert seen[0] is None
    mean, std = seen[1]
    assert torch.equal(mean, torch.full((32,), 7.0)) and torch.equal(std, torch.full((32,), 2.0))


def test_distillation_is_zero_at_the_teacher_and_grows_with_disagreement():
    from revmux.train.losses import distillation

    teacher = torch.tensor([[2.0, -1.0], [0.5, 0.0]])
    assert distillation(teacher.clone(), teacher).abs() < 1e-6
    near, far = teacher + torch.tensor([[0.0, 0.5], [0.0, 0.5]]), teacher.flip(-1)
    assert 0 < distillation(near, teacher) < distillation(far, teacher)
    student = far.clone().requires_grad_(True)
    distillation(student, teacher).backward()
    assert student.grad.abs().sum() > 0


def test_state_distance_in_standard_deviations():
    from revmux.train.losses import state_distance

    teacher = torch.randn(4, 8)
    assert state_distance(teacher.clone(), teacher) == 0
    std = torch.full((8,), 2.0)
    moved = teacher + 2.0  # one standard deviation per feature
    torch.testing.assert_close(state_distance(moved, teacher, (torch.zeros(8), std)), torch.tensor(1.0))
    torch.testing.assert_close(state_distance(2 * teacher, teacher), torch.tensor(1.0))  # relative to the teacher
