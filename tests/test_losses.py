"""kdcli.losses: the distillation loss against the formula written out with F.kl_div, single and batched,
its value and its gradient (kdcli computes it in another arrangement, for fewer kernels)."""

import pytest
import torch
import torch.nn.functional as F

from kdcli.losses import distillation_loss, soft_targets

B, C = 16, 10


def logits(*shape, seed=0, scale=3.0):
    return scale * torch.randn(*shape, generator=torch.Generator().manual_seed(seed))


def labels(*shape, seed=0):
    return torch.randint(0, C, shape, generator=torch.Generator().manual_seed(seed))


def reference(student, y, teacher, T, w, hard_w=1.0):
    """Hinton et al.'s loss as the reference writes it: CE + w * T^2 * KL(teacher || student), batchmean."""
    kl = F.kl_div(F.log_softmax(student / T, dim=1), F.softmax(teacher / T, dim=1), reduction="batchmean")
    return hard_w * F.cross_entropy(student, y) + w * T * T * kl


@pytest.mark.parametrize("T", [1.0, 4.0, 30.0, 100.0])
@pytest.mark.parametrize("w,hard_w", [(0.1, 1.0), (0.9, 0.1), (1.0, 0.0)])
def test_matches_the_formula(T, w, hard_w):
    s, t, y = logits(B, C, seed=1).requires_grad_(), logits(B, C, seed=2), labels(B)
    loss, expected = distillation_loss(s, y, soft_targets(t, y, T, w, hard_w)), reference(s, y, t, T, w, hard_w)
    # float32 KL at high T is a difference of nearly equal logs: both forms agree to ~2e-5 at T = 100.
    torch.testing.assert_close(loss, expected, rtol=1e-4, atol=1e-6)
    torch.testing.assert_close(torch.autograd.grad(loss, s)[0], torch.autograd.grad(expected, s)[0], rtol=1e-4, atol=1e-7)


def test_weight_zero_and_no_teacher_are_plain_cross_entropy():
    s, t, y = logits(B, C, seed=1), logits(B, C, seed=2), labels(B)
    ce = F.cross_entropy(s, y)
    torch.testing.assert_close(distillation_loss(s, y, soft_targets(t, y, 4.0, distillation_weight=0.0)), ce)
    torch.testing.assert_close(distillation_loss(s, y), ce)
    torch.testing.assert_close(distillation_loss(s, y, hard_weight=0.5), 0.5 * ce)


def test_soft_part_is_scaled_by_t_squared():
    s, t, y = logits(B, C, seed=1), logits(B, C, seed=2), labels(B)
    for T in (2.0, 10.0):
        soft = distillation_loss(s, y, soft_targets(t, y, T, distillation_weight=1.0, hard_weight=0.0))
        kl = F.kl_div(F.log_softmax(s / T, 1), F.softmax(t / T, 1), reduction="batchmean")
        torch.testing.assert_close(soft, T * T * kl)
    # With T^2, the soft loss tends to a finite limit as T grows (Hinton et al. section 2.1):
    # T^2 KL -> mean over the batch of sum_c (d_c - mean d)^2 / (2C), d = teacher - student logits.
    d = t - s
    limit = ((d - d.mean(1, keepdim=True)) ** 2).sum(1).mean() / (2 * C)
    for T in (100.0, 300.0):  # without the T^2 these would be 1e-4 and 1e-5 of the limit
        soft = distillation_loss(s, y, soft_targets(t, y, T, distillation_weight=1.0, hard_weight=0.0))
        torch.testing.assert_close(soft, limit, rtol=1e-2, atol=0)


def test_batched_students_equal_one_call_each():
    S = 3
    s, t, y = logits(S, B, C, seed=1), logits(S, B, C, seed=2), labels(S, B)
    T, w, hard_w = torch.tensor([1.0, 4.0, 30.0]), torch.tensor([0.1, 0.5, 0.0]), torch.tensor([1.0, 0.5, 1.0])
    batched = distillation_loss(s, y, soft_targets(t, y, T, w, hard_w))
    assert batched.shape == (S,)
    for i in range(S):
        one = float(T[i]), float(w[i]), float(hard_w[i])
        torch.testing.assert_close(batched[i], distillation_loss(s[i], y[i], soft_targets(t[i], y[i], *one)))
        torch.testing.assert_close(batched[i], reference(s[i], y[i], t[i], *one))
    no_teacher = distillation_loss(s, y, None, hard_w)
    torch.testing.assert_close(no_teacher, torch.stack([hard_w[i] * F.cross_entropy(s[i], y[i]) for i in range(S)]))


def test_low_precision_logits_give_a_float32_loss():
    s, t, y = logits(B, C, seed=1), logits(B, C, seed=2), labels(B)
    loss = distillation_loss(s.bfloat16(), y, soft_targets(t.bfloat16(), y, 4.0, 0.1))
    assert loss.dtype == torch.float32
    torch.testing.assert_close(loss, reference(s.bfloat16().float(), y, t.bfloat16().float(), 4.0, 0.1))


def test_low_precision_logits_without_a_teacher_give_a_float32_loss():
    """A baseline's loss under autocast: the cross-entropy of bf16 logits computed in float32, as with a teacher."""
    s, y = logits(B, C, seed=1), labels(B)
    loss = distillation_loss(s.bfloat16(), y, hard_weight=0.5)
    assert loss.dtype == torch.float32
    torch.testing.assert_close(loss, 0.5 * F.cross_entropy(s.bfloat16().float(), y))


def test_soft_targets_are_the_tempered_softmax_and_the_labels_weighted():
    t, y = logits(3, B, C, seed=2), labels(B)  # one set of labels for all three students
    T, w, hard_w = torch.tensor([1.0, 4.0, 30.0]), torch.tensor([0.1, 0.5, 0.0]), torch.tensor([1.0, 0.5, 0.0])
    targets = soft_targets(t, y, T, w, hard_w)
    for i in range(3):
        p = F.softmax(t[i] / T[i], dim=1)
        torch.testing.assert_close(targets.weights[i, :, 0], hard_w[i] * F.one_hot(y, C).float())
        torch.testing.assert_close(targets.weights[i, :, 1], w[i] * T[i] ** 2 * p)
        torch.testing.assert_close(targets.constant[i], w[i] * T[i] ** 2 * (p * p.log()).sum(1))


def test_rows_are_the_targets_of_those_images():
    t, y = logits(2, B, C, seed=2), labels(2, B)
    T, w = torch.tensor([2.0, 30.0]), torch.tensor([0.1, 0.9])
    idx = torch.stack([torch.randperm(B)[:5], torch.randperm(B)[:5]])  # each student its own images
    rows = soft_targets(t, y, T, w).rows(idx)
    expected = soft_targets(t.gather(1, idx[..., None].expand(-1, -1, C)), y.gather(1, idx), T, w)
    for got, want in zip(rows, expected):
        torch.testing.assert_close(got, want)


def test_gradient_reaches_only_the_student():
    s, t, y = logits(B, C, seed=1).requires_grad_(), logits(B, C, seed=2).requires_grad_(), labels(B)
    distillation_loss(s, y, soft_targets(t, y, 4.0, 0.5)).backward()
    assert s.grad is not None and torch.isfinite(s.grad).all() and s.grad.abs().sum() > 0
    assert t.grad is None  # a teacher that requires gradients (trained alongside, say) is still only a target


# ---------------------------------------------------------------- found by mutation testing (2026-11-27, night)


def test_students_sharing_labels_with_weights_as_numbers():
    """One set of labels [N] for teachers [S, N, C], with T and the weights plain numbers: each student's targets
    are those of a call of its own (the labels are broadcast to every student, not left [N, C])."""
    t, y = logits(3, B, C, seed=2), labels(B)
    targets = soft_targets(t, y, 4.0, 0.1, hard_weight=0.5)
    assert targets.weights.shape == (3, B, 2, C)
    for i in range(3):
        one = soft_targets(t[i], y, 4.0, 0.1, hard_weight=0.5)
        torch.testing.assert_close(targets.weights[i], one.weights)
        torch.testing.assert_close(targets.constant[i], one.constant)
