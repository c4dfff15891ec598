"""The networks, in a registry by name.

    model = create_model("resnet18")   # teacher, 11,173,962 parameters
    model = create_model("resnet8")    # a small teacher for CPU demos
    model = create_model("lenet5")     # the reference student "model 1", 62,006 parameters

A new architecture is one function and one `@register` line.
"""

import contextlib

import torch
import torch.nn as nn
import torch.nn.functional as F

from kdcli import KdcliError

MODELS = {}  # name -> constructor(num_classes), aliases included


def register(name):  # one name: an alias goes in ALIASES, so that canonical_name maps it back
    def add(constructor):
        MODELS[name] = constructor
        return constructor

    return add


def create_model(name: str, num_classes: int = 10) -> nn.Module:
    if name not in MODELS:
        raise KdcliError(unknown_model(name))
    # float32 whatever the caller's default (a notebook's set_default_dtype(torch.float64)): float64 weights trained
    # unremarked, drawn other than a fresh process draws them, and a float32 checkpoint loaded into them failed to evaluate.
    with float32_by_default():
        return MODELS[name](num_classes)


@contextlib.contextmanager
def float32_by_default():
    """torch's default dtype float32 inside, the caller's again after."""
    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.float32)
    try:
        yield
    finally:
        torch.set_default_dtype(previous)


def unknown_model(name: str) -> str:
    return f"unknown model {name!r}; known models: {known_models()}"


def known_models() -> str:
    return ", ".join(sorted(MODELS))


class BasicBlock(nn.Module):
    def __init__(self, c_in, c_out, stride):
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride, 1, bias=False)  # bias is redundant before BN
        self.bn1 = nn.BatchNorm2d(c_out)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(c_out)
        self.shortcut = nn.Sequential()
        if stride != 1 or c_in != c_out:  # project the identity when the shape changes
            self.shortcut = nn.Sequential(nn.Conv2d(c_in, c_out, 1, stride, bias=False), nn.BatchNorm2d(c_out))

    def forward(self, x):
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


class ResNet(nn.Module):
    """The CIFAR variant: 3x3 stride-1 stem and no max-pool, so 32x32 inputs keep their resolution."""

    def __init__(self, widths, blocks, num_classes=10):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, widths[0], 3, 1, 1, bias=False), nn.BatchNorm2d(widths[0]), nn.ReLU())
        layers, c_in = [], widths[0]
        for stage, (width, count) in enumerate(zip(widths, blocks)):
            for i in range(count):  # each stage after the first halves the resolution in its first block
                layers.append(BasicBlock(c_in, width, 2 if stage > 0 and i == 0 else 1))
                c_in = width
        self.layers = nn.Sequential(*layers)
        self.fc = nn.Linear(c_in, num_classes)

    def forward(self, x):
        x = self.layers(self.stem(x))
        return self.fc(F.adaptive_avg_pool2d(x, 1).flatten(1))


class LeNet5(nn.Module):
    """LeNet-5 from the PyTorch CIFAR-10 tutorial, the reference's "model 1" (no batch norm)."""

    def __init__(self, num_classes=10):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 6, 5)
        self.conv2 = nn.Conv2d(6, 16, 5)
        self.fc1 = nn.Linear(16 * 5 * 5, 120)
        self.fc2 = nn.Linear(120, 84)
        self.fc3 = nn.Linear(84, num_classes)

    def forward(self, x):
        x = F.max_pool2d(F.relu(self.conv1(x)), 2)  # [B, 6, 14, 14]
        x = F.max_pool2d(F.relu(self.conv2(x)), 2)  # [B, 16, 5, 5]
        x = F.relu(self.fc1(x.flatten(1)))
        x = F.relu(self.fc2(x))
        return self.fc3(x)


@register("resnet18")
def resnet18(num_classes=10):
    """The reference teacher: 11,173,962 parameters."""
    return ResNet((64, 128, 256, 512), (2, 2, 2, 2), num_classes)


@register("resnet8")
def resnet8(num_classes=10):
    """A small teacher (78,042 parameters) for CPU demos and smoke runs: 1/44 of resnet18's FLOPs (25 M an image
    against 1.1 G), a training step 21x faster on one CPU thread (batch 32, measured)."""
    return ResNet((16, 32, 64), (1, 1, 1), num_classes)


register("lenet5")(LeNet5)
ALIASES = {"1": "lenet5"}  # the reference calls LeNet-5 "model 1"
MODELS.update({alias: MODELS[name] for alias, name in ALIASES.items()})


def canonical_name(name: str) -> str:
    """A model's own name for a name or alias: runs record it, so that `--model 1` and `--model lenet5` are one model."""
    return ALIASES.get(name, name)


def parameter_count(name: str) -> int:
    return sum(p.numel() for p in create_model(name).parameters())
