"""Evaluation and inference: test accuracy of a checkpoint, logits of a model.

    result = evaluate("runs/teacher")          # {"test_accuracy": 90.51, "per_class": [...], ...} (+ "val_accuracy")
    model, state = load_model(path, device)    # a checkpoint -> a model in eval mode
    logits = predict(model, images_uint8)      # [M, C] on un-augmented images
"""

import warnings

import torch

from kdcli import KdcliError, augment
from kdcli.checkpoint import checkpoint_file, load_checkpoint, training_reached
from kdcli.data import load_cifar10, recorded_data_dir
from kdcli.device import autocast_dtype, autocast_to, resolve_device
from kdcli.models import canonical_name, create_model
from kdcli.records import as_recorded_now, read_json

# On a CPU a forward pass of 1,000 images is slower than sixteen of 64: its activations (ResNet8's 64 MB each) are
# above glibc's mmap threshold (32 MB at most), so every op's output is mapped and unmapped afresh and its pages
# faulted in and zeroed by the kernel (12 M page faults and 18 s of system time in make demo's dump at 1,024; 0.2 M
# and 0.5 s at 128). `bench/variants.py infer --device cpu`, 2 threads: ResNet8 7,573 / 4,121 / 1,454 img/s at batch
# 64 / 128 / 1,024, ResNet18 280 / 176 / 163 (its 128-image pass still holds 33.5 MB). GPUs keep their large batches.
# Results do not move: on the CI's x86 CPU the logits at 64 and at 1,024 are equal bit for bit (ResNet18, ResNet8, LeNet-5).
CPU_BATCH = 64


def forward_batch(batch_size: int, device) -> int:
    """Images per no-grad forward pass on `device`: `batch_size`, at most CPU_BATCH on a CPU."""
    return min(batch_size, CPU_BATCH) if torch.device(device).type == "cpu" else batch_size


@torch.no_grad()
def evaluate_stack(stack, images, labels, autocast, batch_size=1000) -> list:
    """Top-1 accuracy in percent on `images` (the test set, or the held-out ones) for each of the S models."""
    stack.eval()
    correct = torch.zeros(stack.size, device=images.device)
    batch_size = forward_batch(batch_size, images.device)
    for i in range(0, len(labels), batch_size):
        x = augment.normalize(images[i : i + batch_size])
        with autocast:
            logits = stack(x.expand(stack.size, *x.shape))  # [S, b, C]
        correct += (logits.argmax(-1) == labels[i : i + batch_size]).sum(-1)
    return [round(100 * c / len(labels), 4) for c in correct.tolist()]


@torch.no_grad()
def predict(model, images, amp="bf16", batch_size=1000) -> torch.Tensor:
    """Logits [M, C] of one model on un-augmented images, under --amp `amp`."""
    model.eval()
    dtype, out = autocast_dtype(amp, images.device), []
    batch_size = forward_batch(batch_size, images.device)
    for i in range(0, len(images), batch_size):
        with autocast_to(dtype):
            out.append(model(augment.normalize(images[i : i + batch_size])).float())
    return torch.cat(out)


def top1(logits, labels) -> float:
    """Top-1 accuracy in percent."""
    return round(100 * float((logits.argmax(1) == labels).float().mean()), 4)


def recorded_precision(state: dict) -> str:
    """The --amp a checkpoint's run trained and evaluated itself in: its test accuracy is reproduced in it."""
    return as_recorded_now(state.get("config", {})).get("amp", "bf16")


def load_model(checkpoint_path, device) -> tuple:
    """A checkpoint -> (model in eval mode on `device`, checkpoint dict)."""
    state = load_checkpoint(checkpoint_path)
    return model_from(state, device, checkpoint_path), state


def model_from(state: dict, device, checkpoint_path):
    """The model in eval mode on `device` of a loaded checkpoint (`checkpoint_path` names it in errors)."""
    with torch.random.fork_rng(devices=[]):  # the weights are loaded over its initialisation: the caller's RNG stays where it was
        model = create_model(state["model_name"], state.get("num_classes", 10))
    if misfit := weights_misfit(model.state_dict(), state["model"]):
        raise KdcliError(f"{checkpoint_path}: weights do not fit {state['model_name']} ({misfit})")
    model.load_state_dict(state["model"])
    model = model.to(device, memory_format=torch.channels_last if device.type == "cuda" else torch.preserve_format)
    return model.eval()


def weights_misfit(expected: dict, given: dict) -> str | None:
    """What keeps weights `given` out of a model whose state_dict is `expected`, in a line (torch's says it in one
    line per weight); None if they fit."""
    missing, unexpected = [k for k in expected if k not in given], [k for k in given if k not in expected]
    misshapen = [f"{k} is {list(given[k].shape)}, not {list(v.shape)}" for k, v in expected.items() if k in given and given[k].shape != v.shape]
    said = [f"{what}{names[0]}{f' and {len(names) - 1} more' if len(names) > 1 else ''}"
            for what, names in (("missing ", missing), ("unexpected ", unexpected), ("", misshapen)) if names]  # fmt: skip
    return "; ".join(said) or None


def _trained_on(images_fingerprint: str, state, checkpoint_path) -> bool:
    """Whether the run trained on the images of this fingerprint, as far as it recorded them (kdcli before
    2026-11-27 recorded them in config.json only, beside the checkpoint)."""
    was = state.get("train_fingerprint")
    if was is None:
        try:
            was = read_json(checkpoint_file(checkpoint_path).parent / "config.json").get("train_fingerprint")
        except KdcliError:  # no, or no readable, config.json beside it: nothing to check
            pass
    return was is None or was == images_fingerprint


def evaluate(checkpoint_path, data_dir=None, device="auto", download=True) -> dict:
    """Test accuracy of a checkpoint, overall and per class (percent), and its accuracy on the training
    images its run held out (--val-size), if it did. data_dir None: the one its run recorded."""
    dev = resolve_device(device)
    model, state = load_model(checkpoint_path, dev)
    config = state.get("config", {})
    if data_dir is None:
        data_dir = recorded_data_dir(config, f"the run of {checkpoint_path}")
    data = load_cifar10(data_dir, dev, download=download)  # every image: the test set does not depend on the run's --subset
    n = config.get("subset") or len(data.train_labels)  # it trained on the first n images, less the last held_out
    held_out = config.get("val_size", 0)
    if held_out >= n:
        raise KdcliError(f"{checkpoint_path} records --val-size {held_out} of its {n:,} training images: was it edited? a run trains on at least one")
    if n > len(data.train_labels) or not _trained_on(data.fingerprint_of_first(n), state, checkpoint_path):
        warnings.warn(
            f"{checkpoint_path} was trained on other images than those now in {data_dir}, so its test set may be another too"
            + (" (its held-out accuracy is left out)" if held_out else "") + ": pass the --data-dir it trained on"
        )
        held_out = 0
    amp = recorded_precision(state)
    logits = predict(model, data.test_images, amp)
    per_class = [round(top1(logits[data.test_labels == c], c), 2) for c in range(data.num_classes)]  # each class's images
    accuracy = top1(logits, data.test_labels)
    result = {"model": canonical_name(state["model_name"]), "epoch": state.get("epoch"), "trained": training_reached(state), "test_accuracy": accuracy, "per_class": per_class, "data_dir": data_dir}
    if held_out:
        held = slice(n - held_out, n)
        result.update(val_accuracy=top1(predict(model, data.train_images[held], amp), data.train_labels[held]), val_size=held_out)
    return result
