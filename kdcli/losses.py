"""The distillation loss of Hinton et al. (2015), batched over students.

    loss = hard_weight * CE(s, y) + distillation_weight * T^2 * KL(softmax(t/T) || softmax(s/T))

KL is summed over classes and averaged over the batch ("batchmean"). The T^2
keeps the soft-target gradients the same size as T changes (they scale as 1/T^2).
With hard_weight 1 this is the reference's formula; 0.9 / 0.1 is the common alpha mix.
"""

import torch
import torch.nn.functional as F


def distillation_loss(student, labels, teacher=None, temperature=1.0, distillation_weight=0.0, hard_weight=1.0):
    """student [..., B, C] logits, labels [..., B], teacher [..., B, C] or None -> loss [...].

    The leading dimensions index students trained together; temperature and the
    weights are numbers or tensors of those leading dimensions, one per student.
    """
    hard = F.cross_entropy(student.flatten(0, -2).float(), labels.flatten(), reduction="none")
    hard = hard.view(labels.shape).mean(-1)  # [...]
    if teacher is None:
        return hard_weight * hard
    T = torch.as_tensor(temperature, dtype=torch.float32, device=student.device)
    t = T[..., None, None]  # broadcast one temperature per student over [B, C]
    log_p_student = F.log_softmax(student.float() / t, dim=-1)
    log_p_teacher = F.log_softmax(teacher.float() / t, dim=-1)
    kl = (log_p_teacher.exp() * (log_p_teacher - log_p_student)).sum(-1).mean(-1)  # [...]
    return hard_weight * hard + distillation_weight * T**2 * kl
