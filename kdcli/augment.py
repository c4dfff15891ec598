"""The reference augmentation as data: parameters drawn once, views built on the device.

    p = params(seed, epoch, n)        # [n, 3] int8: crop offset y, crop offset x, flip
    views = apply(images_uint8, p)    # [n, 3, 32, 32] uint8, same device as the images
    x = normalize(views)              # float, (x / 255 - mean) / std

Splitting "draw" from "apply" is what lets the logit cache store 3 bytes per
image instead of the augmented pixels, and lets a student rebuild exactly the
view its teacher labelled. `apply` matches torchvision's
RandomCrop(32, padding=4) + RandomHorizontalFlip pixel for pixel.
"""

import functools
import hashlib

import torch
import torch.nn.functional as F

PAD = 4  # zero padding on every side, as in the reference
CROP = 32  # output size
FILL = 0  # padding value (black)
FLIP = 0.5  # horizontal flip probability
MEAN = (0.4914, 0.4822, 0.4465)
STD = (0.2471, 0.2435, 0.2616)
SPEC = {"pad": PAD, "fill": FILL, "crop": CROP, "flip": FLIP, "mean": MEAN, "std": STD}


def epoch_generator(seed: int, epoch: int, stream: str = "augment") -> torch.Generator:
    """A CPU generator for one (seed, epoch, stream): every random draw of kdcli is derived this way,
    so any epoch can be recomputed alone (resume, cache) and draws match on every device."""
    digest = hashlib.sha256(f"{stream}:{seed}:{epoch}".encode()).digest()
    return torch.Generator().manual_seed(int.from_bytes(digest[:8], "little"))


def params(seed: int, epoch: int, n: int) -> torch.Tensor:
    """[n, 3] int8: crop offset y and x in the padded 40x40 image (0..8), horizontal flip (0/1)."""
    g = epoch_generator(seed, epoch)
    offsets = torch.randint(0, 2 * PAD + 1, (n, 2), generator=g)
    flips = (torch.rand(n, 1, generator=g) < FLIP).long()
    return torch.cat([offsets, flips], dim=1).to(torch.int8)


def unaugmented(n: int, device=None) -> torch.Tensor:
    """[n, 3] int8 params whose views are the images themselves: the crop at the padding's offset, no flip. Filled in
    on `device`: a copy from the host would make a GPU's host wait for every batch queued before it."""
    p = torch.full((n, 3), PAD, dtype=torch.int8, device=device)
    p[:, 2] = 0
    return p


def apply(images: torch.Tensor, p: torch.Tensor) -> torch.Tensor:
    """[B, C, H, W] uint8 + [B, 3] params -> [B, C, 32, 32] uint8 views; one gather, no Python loop."""
    p = p.to(images.device, torch.long)
    padded = F.pad(images, (PAD, PAD, PAD, PAD), value=FILL)  # [B, C, 40, 40]
    steps = torch.arange(CROP, device=images.device)
    rows = p[:, 0:1] + steps  # [B, 32]
    # A flipped view reads its columns right to left: column j comes from CROP-1-j.
    cols = p[:, 1:2] + torch.where(p[:, 2:3].bool(), CROP - 1 - steps, steps)  # [B, 32]
    batch = torch.arange(len(images), device=images.device)[:, None, None, None]
    channel = torch.arange(images.shape[1], device=images.device)[None, :, None, None]
    return padded[batch, channel, rows[:, None, :, None], cols[:, None, None, :]]


@functools.cache
def _mean_std(device):
    """Made once per device: a host-to-device copy at every step would wait for the GPU (and break graph capture)."""
    # float32 whatever the default dtype where first made: a cached float64 pair made every later input float64.
    mean = torch.tensor(MEAN, dtype=torch.float32, device=device).view(1, 3, 1, 1) * 255
    std = torch.tensor(STD, dtype=torch.float32, device=device).view(1, 3, 1, 1) * 255
    return mean, std


def normalize(images: torch.Tensor) -> torch.Tensor:
    """uint8 [B, 3, H, W] -> normalised float32 (autocast casts it where it runs); channels_last on CUDA GPUs, where convolutions run faster in it."""
    # Under torch.compile the constants become part of the graph; the cache is for eager calls (dynamo warns of it).
    mean, std = _mean_std.__wrapped__(images.device) if torch.compiler.is_compiling() else _mean_std(images.device)
    x = (images.float() - mean) / std
    # On CPUs channels_last made LeNet-5 steps 2-5x slower (measured), so only CUDA GPUs get it.
    return x.contiguous(memory_format=torch.channels_last) if x.is_cuda else x
