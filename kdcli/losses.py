"""The distillation loss of Hinton et al. (2015), batched over students.

    loss = hard_weight * CE(s, y) + distillation_weight * T^2 * KL(softmax(t/T) || softmax(s/T))

    targets = soft_targets(teacher_logits, labels, T, distillation_weight=0.1)   # once per cached epoch
    loss = distillation_loss(student_logits, labels, targets.rows(idx))          # at every step

KL is summed over classes and averaged over the batch ("batchmean"). The T^2
keeps the soft-target gradients the same size as T changes (they scale as 1/T^2).
With hard_weight 1 this is the reference's formula; 0.9 / 0.1 is the common alpha mix.

A LeNet-5 step is ~120 kernels of ~3 µs each (README, Performance), so the loss is written for few kernels
rather than as two separate terms: both cross-entropies are one weighted sum over the
log-softmax of [s, s/T], with the weights and the teacher's side computed once per epoch.
"""

from typing import NamedTuple

import torch
import torch.nn.functional as F


class SoftTargets(NamedTuple):
    """Per image, what the student's two log-softmaxes are weighted by, the loss's weights folded in."""

    weights: torch.Tensor  # [..., N, 2, C]: hard_weight * onehot(y), and distillation_weight * T^2 * softmax(t/T)
    constant: torch.Tensor  # [..., N]: distillation_weight * T^2 * sum of p log p, the part of KL no student changes
    temperatures: torch.Tensor  # [..., 1, 2, 1]: 1 and T, what the logits are divided by for each row of weights

    def rows(self, idx) -> "SoftTargets":
        """The targets of images idx [..., b] (each student its own rows)."""
        weights = self.weights.gather(-3, idx[..., None, None].expand(*idx.shape, *self.weights.shape[-2:]))
        return SoftTargets(weights, self.constant.gather(-1, idx), self.temperatures)


def soft_targets(teacher, labels, temperature, distillation_weight, hard_weight=1.0) -> SoftTargets:
    """Teacher logits [..., N, C] and labels [..., N] -> the SoftTargets of distillation_loss.

    temperature and the weights are numbers, or one per leading index (per student). The teacher's
    side does not depend on the student: a cached epoch's targets are computed once for all its steps.
    """
    T, soft_weight, hard_weight = (_per_student(v, teacher) for v in (temperature, distillation_weight, hard_weight))
    log_p = F.log_softmax(teacher.detach().float() / T[..., None, None], dim=-1)  # targets: no gradient to the teacher
    p = log_p.exp()
    soft_weight = soft_weight * T**2  # [...]
    hard = hard_weight[..., None, None] * F.one_hot(labels.expand(p.shape[:-1]), p.shape[-1]).float()
    weights = torch.stack([hard, soft_weight[..., None, None] * p], dim=-2)
    temperatures = torch.stack([torch.ones_like(T), T], dim=-1)[..., None, :, None]
    return SoftTargets(weights, soft_weight[..., None] * (p * log_p).sum(-1), temperatures)


def distillation_loss(student, labels, targets=None, hard_weight=1.0):
    """student [..., B, C] logits, labels [..., B], targets SoftTargets of [..., B, ...] or None -> loss [...].

    The leading dimensions index students trained together. Without targets the loss is
    hard_weight * CE(s, y), a number or one per student; with them, the weights are theirs.
    """
    s = student.float()
    if targets is None:
        hard = F.cross_entropy(s.flatten(0, -2), labels.flatten(), reduction="none")
        return _per_student(hard_weight, s) * hard.view(labels.shape).mean(-1)
    log_q = F.log_softmax(s[..., None, :] / targets.temperatures, dim=-1)  # [..., B, 2, C]: log softmax(s), log softmax(s/T)
    # Per image, constant - weights . log_q = hard_weight * CE(s, y) + distillation_weight * T^2 * KL: the formula above.
    return (targets.constant - (targets.weights * log_q).sum((-2, -1))).mean(-1)


def _per_student(value, like):
    """A number, or one value per leading index, as float32 on `like`'s device."""
    return torch.as_tensor(value, dtype=torch.float32, device=like.device)
