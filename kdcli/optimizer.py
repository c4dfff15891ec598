"""The optimizer and its learning rate: SGD or Adam made for the device, and the schedules as pure functions.

    optimizer = make_optimizer(config, model.parameters(), device, lr_tensor)
    lr = learning_rate(config, epoch + step / steps)   # any fractional epoch, so no scheduler state to save
"""

import math

import torch

from kdcli.config import TrainOptions


def multistep(c: TrainOptions, t: float) -> float:  # stepped once per epoch, as the reference does
    return c.lr * c.lr_gamma ** sum(m <= int(t) for m in c.lr_milestones)


def cosine(c: TrainOptions, t: float) -> float:
    return c.lr * 0.5 * (1 + math.cos(math.pi * t / c.epochs))


def onecycle(c: TrainOptions, t: float) -> float:  # linear warm-up from lr/25 over 30%, then cosine to ~0
    warm = 0.3 * c.epochs
    if t < warm:
        return c.lr * (0.04 + 0.96 * t / warm)
    return c.lr * 0.5 * (1 + math.cos(math.pi * (t - warm) / (c.epochs - warm)))


SCHEDULES = {"multistep": multistep, "cosine": cosine, "onecycle": onecycle, "none": lambda c, t: c.lr}  # --scheduler


def learning_rate(config: TrainOptions, t: float) -> float:
    """The learning rate at fractional epoch t: a pure function, so there is no scheduler state to save."""
    return SCHEDULES[config.scheduler](config, t)


def make_optimizer(config: TrainOptions, parameters, device: torch.device, lr: torch.Tensor):
    fused = device.type == "cuda"  # one kernel for the whole update instead of one per tensor
    lr = lr if fused else float(lr)  # the CPU optimizers want a number
    if config.optimizer == "adam":
        return torch.optim.Adam(parameters, lr=lr, weight_decay=config.weight_decay, fused=fused, capturable=fused)
    sgd = torch.optim.SGD(
        parameters,
        lr=lr,
        momentum=config.momentum,
        nesterov=config.nesterov,
        weight_decay=config.weight_decay,
        fused=fused,
    )
    # Zeros from the start: equal to SGD's first step (buffer = gradient, no dampening), and fused SGD would
    # otherwise allocate its buffers uninitialised on a first step that fp16's loss scale may then skip.
    if config.momentum > 0:
        for group in sgd.param_groups:
            for p in group["params"]:
                sgd.state[p]["momentum_buffer"] = torch.zeros_like(p)
    return sgd
