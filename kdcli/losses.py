"""The distillation loss of Hinton et al. (2015), batched over students.

    loss = hard_weight * CE(s, y) + distillation_weight * T^2 * KL(softmax(t/T) || softmax(s/T))

    targets = soft_targets(teacher_logits, T)      # once per cached epoch, not at every step
    loss = distillation_loss(student_logits, labels, targets, T, distillation_weight=0.1)

KL is summed over classes and averaged over the batch ("batchmean"). The T^2
keeps the soft-target gradients the same size as T changes (they scale as 1/T^2).
With hard_weight 1 this is the reference's formula; 0.9 / 0.1 is the common alpha mix.
"""

from typing import NamedTuple

import torch
import torch.nn.functional as F


class SoftTargets(NamedTuple):
    probs: torch.Tensor  # softmax(t / T) [..., B, C], float32
    p_log_p: torch.Tensor  # sum over classes of p log p [..., B]: KL's constant part, kept so the loss reads as KL


def soft_targets(teacher, temperature) -> SoftTargets:
    """Teacher logits [..., B, C] -> their soft targets at `temperature` (a number, or one per leading index).

    The teacher's side of the KL does not depend on the student: a cached epoch's targets are
    computed once for all its steps, so a KD step costs the student's side only.
    """
    T = _temperatures(temperature, teacher)
    log_p = F.log_softmax(teacher.float() / T[..., None, None], dim=-1)
    probs = log_p.exp()
    return SoftTargets(probs, (probs * log_p).sum(-1))


def distillation_loss(student, labels, targets=None, temperature=1.0, distillation_weight=0.0, hard_weight=1.0):
    """student [..., B, C] logits, labels [..., B], targets SoftTargets of [..., B, ...] or None -> loss [...].

    The leading dimensions index students trained together; temperature and the
    weights are numbers or tensors of those leading dimensions, one per student.
    """
    hard = F.cross_entropy(student.flatten(0, -2).float(), labels.flatten(), reduction="none")
    hard = hard.view(labels.shape).mean(-1)  # [...]
    if targets is None:
        return hard_weight * hard
    T = _temperatures(temperature, student)
    log_q = F.log_softmax(student.float() / T[..., None, None], dim=-1)
    kl = (targets.p_log_p - (targets.probs * log_q).sum(-1)).mean(-1)  # [...]
    return hard_weight * hard + distillation_weight * T**2 * kl


def _temperatures(temperature, logits):
    """A number, or one temperature per leading index, as float32 on the logits' device."""
    return torch.as_tensor(temperature, dtype=torch.float32, device=logits.device)
