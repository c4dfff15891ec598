"""One training loop for teachers and students; evaluation.

    summary = train_teacher(TeacherConfig(epochs=30, scheduler="onecycle"))
    summary = train_student(StudentConfig(temperature=30))
    summaries = train_runs([run, run, ...], data, device)   # S students at once

The loop trains a *group* of S runs of one architecture and one schedule side by
side (S = 1 for a teacher or a single student): each run has its own seed
(initialisation and batch order), its own augmentation and soft targets, its own
temperature and loss weights, and its own run folder. S > 1 stacks the S models'
weights and calls them through `torch.func.vmap`, one batched computation instead
of S small ones that leave a GPU idle between kernel launches.

Every random draw is derived from (seed, epoch) (augment.epoch_generator), so a
run needs no RNG state to resume: an interrupted run ends with the same weights
as one never stopped.
"""

import copy
import json
import math
import signal
import subprocess
import time
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Literal

import torch
import torch.nn as nn
from tqdm import tqdm

from kdcli import KdcliError, __version__, augment
from kdcli.checkpoint import CHECKPOINT, load_checkpoint, save_atomic
from kdcli.data import load_cifar10
from kdcli.losses import distillation_loss
from kdcli.models import create_model


class ConfigError(KdcliError):
    """A bad option value; `option` names the flag (the CLI reports it as a usage error)."""

    def __init__(self, option, message):
        super().__init__(f"{option}: {message}")
        self.option = option


class TrainingInterrupted(KdcliError):
    """Ctrl-C: the run stopped at a step boundary and saved a checkpoint it can resume from."""


@dataclass
class TeacherConfig:
    model: str = "resnet18"  # architecture name (see `kdcli models`)
    epochs: int = 300  # passes over the training set (reference: 300)
    batch_size: int = 128  # images per step (reference: 128)
    lr: float = 0.1  # peak learning rate (reference: 0.1)
    optimizer: Literal["sgd", "adam"] = "sgd"  # reference: SGD
    momentum: float = 0.9  # SGD momentum (reference: 0.9)
    nesterov: bool = False  # Nesterov momentum for SGD
    weight_decay: float = 5e-4  # L2 penalty (reference: 5e-4)
    scheduler: Literal["multistep", "cosine", "onecycle", "none"] = "multistep"  # learning-rate schedule
    lr_milestones: tuple[int, ...] = (150, 225)  # epochs where multistep multiplies the lr by lr-gamma
    lr_gamma: float = 0.1  # multistep factor (reference: 0.1)
    seed: int = 777  # initialisation, batch order and augmentation (reference: 777)
    device: Literal["auto", "cuda", "mps", "cpu"] = "auto"  # auto: cuda, then mps, then cpu
    amp: bool = True  # bf16 autocast on CUDA; no effect elsewhere
    compile: bool = False  # torch.compile the model (CUDA; pays off for long runs)
    eval_every: int = 1  # epochs between test-set evaluations (the last epoch always is)
    save_every: int = 1  # epochs between checkpoints (1: a crash loses at most one epoch)
    data_dir: str = "data"  # folder holding cifar-10-batches-py/
    download: bool = True  # fetch CIFAR-10 when it is missing
    subset: int | None = None  # use only the first N training images (smoke runs)
    out: str = "runs/teacher"  # run folder: config.json, metrics.jsonl, checkpoint.pt, summary.json
    resume: bool = False  # continue the run in --out from its checkpoint
    force: bool = False  # overwrite a finished or unfinished run in --out
    quiet: bool = False  # one log line per evaluation instead of a progress bar

    def __post_init__(self):
        for name in ("epochs", "batch_size", "eval_every", "save_every"):
            if getattr(self, name) < 1:
                raise ConfigError(_flag(name), f"must be at least 1, got {getattr(self, name)}")
        if self.subset is not None and self.subset < 1:
            raise ConfigError("--subset", f"must be at least 1, got {self.subset}")
        if not self.lr > 0:  # also catches nan
            raise ConfigError("--lr", f"must be > 0, got {self.lr}")
        if self.weight_decay < 0 or self.momentum < 0:
            raise ConfigError("--weight-decay/--momentum", "must be >= 0")
        late = [m for m in self.lr_milestones if m >= self.epochs]
        if self.scheduler == "multistep" and late:
            warnings.warn(f"--lr-milestones {late} are at or beyond --epochs {self.epochs}: they never apply", stacklevel=3)


@dataclass
class StudentConfig(TeacherConfig):
    model: str = "lenet5"  # architecture name (see `kdcli models`)
    out: str = "runs/student"  # run folder: config.json, metrics.jsonl, checkpoint.pt, summary.json
    cache: str = "cache/logits.h5"  # teacher-logit cache written by dump-logits
    temperature: float = 4.0  # softmax temperature T of the soft targets (> 0)
    distillation_weight: float = 0.1  # weight of T^2 * KL; 0 trains without the teacher (the baseline)
    hard_weight: float = 1.0  # weight of the cross-entropy with the true labels
    allow_partial: bool = False  # train from an unfinished cache, using its complete epochs

    def __post_init__(self):
        super().__post_init__()
        if not self.temperature > 0 or math.isinf(self.temperature):
            raise ConfigError("--temperature", f"must be a number > 0, got {self.temperature}")
        for name in ("distillation_weight", "hard_weight"):
            if not getattr(self, name) >= 0:
                raise ConfigError(_flag(name), f"must be >= 0, got {getattr(self, name)}")


def _flag(name):
    return "--" + name.replace("_", "-")


# ---------------------------------------------------------------- devices and schedules


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "mps" if torch.backends.mps.is_available() else "cpu"
    if name == "cuda" and not torch.cuda.is_available():
        raise KdcliError("--device cuda: no CUDA GPU is visible to PyTorch; use --device cpu")
    if name == "mps" and not torch.backends.mps.is_available():
        raise KdcliError("--device mps: MPS is not available on this machine; use --device cpu")
    return torch.device(name)


def learning_rate(config: TeacherConfig, t: float) -> float:
    """The learning rate at fractional epoch t: a pure function, so there is no scheduler state to save."""
    if config.scheduler == "multistep":  # stepped once per epoch, as the reference does
        return config.lr * config.lr_gamma ** sum(m <= int(t) for m in config.lr_milestones)
    if config.scheduler == "cosine":
        return config.lr * 0.5 * (1 + math.cos(math.pi * t / config.epochs))
    if config.scheduler == "onecycle":  # linear warm-up from lr/25 over 30%, then cosine to ~0
        warm = 0.3 * config.epochs
        if t < warm:
            return config.lr * (0.04 + 0.96 * t / warm)
        return config.lr * 0.5 * (1 + math.cos(math.pi * (t - warm) / (config.epochs - warm)))
    return config.lr


def make_optimizer(config: TeacherConfig, parameters, device: torch.device):
    fused = device.type == "cuda"  # one kernel for the whole update instead of one per tensor
    if config.optimizer == "adam":
        return torch.optim.Adam(parameters, lr=config.lr, weight_decay=config.weight_decay, fused=fused)
    return torch.optim.SGD(
        parameters,
        lr=config.lr,
        momentum=config.momentum,
        nesterov=config.nesterov,
        weight_decay=config.weight_decay,
        fused=fused,
    )


# ---------------------------------------------------------------- S models as one


class ModelStack(nn.Module):
    """S models of one architecture as one module: x [S, B, ...] -> logits [S, B, C].

    S = 1 calls the model itself. S > 1 stacks the weights ([S, ...] per tensor)
    and vmaps one functional call over them; SGD and Adam act element-wise, so one
    optimizer over the stacked tensors equals S optimizers over the separate ones.
    """

    def __init__(self, models):
        super().__init__()
        self.size = len(models)
        if self.size == 1:
            self.single = models[0]
            return
        if any(True for _ in models[0].buffers()):
            raise KdcliError("models with buffers (batch norm) cannot be trained stacked: use --parallel 1")
        params, _ = torch.func.stack_module_state(models)
        self.names = list(params)
        self.stacked = nn.ParameterList(nn.Parameter(params[n]) for n in self.names)
        self._template = [copy.deepcopy(models[0]).to("meta")]  # a list keeps it out of .parameters()

    def forward(self, x):
        if self.size == 1:
            return self.single(x[0])[None]
        template = self._template[0]

        def call(params, x):
            return torch.func.functional_call(template, dict(zip(self.names, params)), (x,))

        return torch.vmap(call)(tuple(self.stacked), x)

    def member_state(self, s: int) -> dict:
        """The state_dict of model s, loadable into a plain model."""
        if self.size == 1:
            return {k: v.detach().clone() for k, v in self.single.state_dict().items()}
        return {n: p[s].detach().clone() for n, p in zip(self.names, self.stacked)}

    def load_member_state(self, s: int, state: dict):
        if self.size == 1:
            self.single.load_state_dict(state)
            return
        with torch.no_grad():
            for n, p in zip(self.names, self.stacked):
                p[s].copy_(state[n])


def split_optimizer_state(state: dict, size: int, s: int) -> dict:
    """Member s's share of a stacked optimizer's state_dict (per-parameter tensors sliced on dim 0)."""
    if size == 1:
        return state
    share = {
        i: {k: v[s].clone() if torch.is_tensor(v) and v.dim() > 0 else v for k, v in per_param.items()}
        for i, per_param in state["state"].items()
    }
    return {"state": share, "param_groups": state["param_groups"]}


def stack_optimizer_states(states: list) -> dict:
    if len(states) == 1:
        return states[0]
    stacked = {
        i: {k: torch.stack([st["state"][i][k] for st in states]) if v.dim() > 0 else v for k, v in per_param.items()}
        for i, per_param in states[0]["state"].items()
    }
    return {"state": stacked, "param_groups": states[0]["param_groups"]}


# ---------------------------------------------------------------- where each run's targets come from


class DrawnAugmentation:
    """A run without a cache (teacher, baseline student): it draws its own views from (seed, epoch)."""

    def __init__(self, seed: int, num_images: int):
        self.seed, self.num_images = seed, num_images

    def epoch(self, e: int):
        return augment.params(self.seed, e, self.num_images), None  # [N, 3], no soft targets


class CachedTargets:
    """A student of the cache: epoch e replays cached epoch e mod E, its views and its teacher logits."""

    def __init__(self, cache):
        self.cache = cache

    def epoch(self, e: int):
        return self.cache.epoch(e % self.cache.epochs_complete)  # [N, 3] int8, [N, C]


@dataclass
class Run:
    """One model to train: its options, where its targets come from, and its folder."""

    config: TeacherConfig
    targets: object  # DrawnAugmentation or CachedTargets
    extra: dict = field(default_factory=dict)  # recorded in config.json (e.g. the cache's teacher)

    @property
    def dir(self) -> Path:
        return Path(self.config.out)

    @property
    def temperature(self):
        return getattr(self.config, "temperature", 1.0)

    @property
    def distillation_weight(self):
        return getattr(self.config, "distillation_weight", 0.0)

    @property
    def hard_weight(self):
        return getattr(self.config, "hard_weight", 1.0)


# ---------------------------------------------------------------- run folders


RESUME_IGNORES = {"resume", "force", "quiet", "device", "out", "eval_every", "save_every", "compile", "cache", "data_dir"}


def prepare_run_dir(config: TeacherConfig):
    """Check --out against --resume/--force; return the checkpoint to resume from, 'done', or None."""
    out = Path(config.out)
    finished, ckpt = (out / "summary.json").exists(), out / CHECKPOINT
    if config.force:
        for name in ("summary.json", "metrics.jsonl", CHECKPOINT):
            (out / name).unlink(missing_ok=True)
    elif finished and config.resume:
        return "done"
    elif finished:
        raise KdcliError(f"{out} holds a finished run: pass --force to overwrite it, or choose another --out")
    elif ckpt.exists() and not config.resume:
        raise KdcliError(f"{out} holds an unfinished run: pass --resume to continue it, or --force to start over")
    try:
        out.mkdir(parents=True, exist_ok=True)
        probe = out / ".write-test"
        probe.touch()
        probe.unlink()
    except OSError as e:
        raise KdcliError(f"cannot write to --out {out}: {e.strerror or e}") from None
    if not (config.resume and ckpt.exists()):
        return None
    state = load_checkpoint(ckpt)
    saved = state.get("config", {})
    changed = [
        f"{_flag(k)} {getattr(config, k)!r} (run has {saved[k]!r})"
        for k in saved
        if k not in RESUME_IGNORES and hasattr(config, k) and _plain(getattr(config, k)) != _plain(saved[k])
    ]
    if changed:
        raise KdcliError(f"--resume of {out} with other options: {', '.join(changed)}; drop them, or use another --out")
    return state


def _plain(value):
    return list(value) if isinstance(value, tuple) else value


def git_commit() -> str | None:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=Path(__file__).parent, capture_output=True, text=True, timeout=5
        )
        return out.stdout.strip() or None if out.returncode == 0 else None
    except (OSError, subprocess.SubprocessError):
        return None


def write_json(path: Path, obj):
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(obj, indent=2) + "\n")
    tmp.replace(path)


# ---------------------------------------------------------------- the loop


def train_runs(runs: list, data, device: torch.device, teacher: nn.Module | None = None, progress=True) -> list:
    """Train S runs side by side; return their summaries.

    `teacher`, when given, labels every batch online (no cache): the benchmark and
    the cache-equivalence test use it; kdcli itself trains students from the cache.
    """
    config = runs[0].config
    states = [prepare_run_dir(r.config) for r in runs]
    if all(s == "done" for s in states):
        return [json.loads((r.dir / "summary.json").read_text()) for r in runs]
    if any(s == "done" for s in states) or len({(s or {}).get("epoch", 0) for s in states}) > 1:
        raise KdcliError("runs trained together must all be at the same epoch; train them separately")
    S, N, B = len(runs), len(data.train_labels), config.batch_size
    steps = math.ceil(N / B)  # the last batch is smaller, as with a DataLoader's default drop_last=False

    models = []
    for r in runs:
        with torch.random.fork_rng(devices=[]):  # initialisation from the run's seed, global RNG untouched
            torch.manual_seed(r.config.seed)
            models.append(create_model(r.config.model, data.num_classes))
    stack = ModelStack(models).to(device)
    if S == 1:  # channels_last speeds up convolutions; stacked [S, ...] weights are not 4-d
        stack.to(memory_format=torch.channels_last)
    optimizer = make_optimizer(config, stack.parameters(), device)
    forward = torch.compile(stack) if config.compile and device.type == "cuda" else stack
    autocast = torch.autocast("cuda", torch.bfloat16, enabled=config.amp and device.type == "cuda")

    start_epoch, start_step, partial = 0, 0, None
    if states[0] is not None:
        for s, st in enumerate(states):
            stack.load_member_state(s, st["model"])
        optimizer.load_state_dict(stack_optimizer_states([st["optimizer"] for st in states]))
        start_epoch, start_step, partial = states[0]["epoch"], states[0].get("step", 0), states[0].get("partial")
        for r in runs:  # epochs logged after the checkpoint will be trained again
            _truncate_metrics(r.dir / "metrics.jsonl", start_epoch)
    else:
        for r in runs:
            record = {**asdict(r.config), **r.extra, "kdcli_version": __version__, "git_commit": git_commit()}
            write_json(r.dir / "config.json", record)
            (r.dir / "metrics.jsonl").unlink(missing_ok=True)

    temperature = torch.tensor([r.temperature for r in runs], device=device)
    distill_w = torch.tensor([r.distillation_weight for r in runs], device=device)
    hard_w = torch.tensor([r.hard_weight for r in runs], device=device)
    images, labels = data.train_images, data.train_labels
    test_acc = [st.get("test_accuracy") if isinstance(st, dict) else None for st in states]
    stop = _StopOnSigint()
    bar = tqdm(total=config.epochs, initial=start_epoch, unit="epoch", disable=not progress or config.quiet, dynamic_ncols=True)
    try:
        for epoch in range(start_epoch, config.epochs):
            # The epoch's views and soft targets, one row per run: [S, N, 3] and [S, N, C] or None.
            sources = [r.targets.epoch(epoch) for r in runs]
            aug = torch.stack([a.to(device) for a, _ in sources])
            soft = None
            if any(t is not None for _, t in sources):  # a baseline in a KD group gets zeros at weight 0
                soft = torch.stack([(t if t is not None else torch.zeros(N, data.num_classes)).to(device) for _, t in sources])
            order = torch.stack(
                [torch.randperm(N, generator=augment.epoch_generator(r.config.seed, epoch, "order")) for r in runs]
            ).to(device)  # [S, N]
            if partial is None:
                partial = {"losses": torch.zeros(steps, S, device=device), "correct": torch.zeros(steps, S, device=device), "seconds": 0.0}
            losses, correct = partial["losses"].to(device), partial["correct"].to(device)
            stack.train()
            t0 = time.perf_counter()
            for i in range(start_step, steps):
                for group in optimizer.param_groups:
                    group["lr"] = learning_rate(config, epoch + i / steps)
                idx = order[:, i * B : (i + 1) * B]  # [S, b]
                x = augment.apply(images[idx].flatten(0, 1), aug.gather(1, idx[..., None].expand(-1, -1, 3)).flatten(0, 1))
                x = augment.normalize(x).unflatten(0, idx.shape)  # [S, b, 3, 32, 32]
                y = labels[idx]  # [S, b]
                with autocast:
                    logits = forward(x)  # [S, b, C]
                    if teacher is not None:
                        with torch.no_grad():
                            t_logits = teacher(x.flatten(0, 1)).view(logits.shape)
                    else:
                        t_logits = None if soft is None else soft.gather(1, idx[..., None].expand(-1, -1, soft.shape[-1]))
                loss = distillation_loss(logits, y, t_logits, temperature, distill_w, hard_w)  # [S]
                optimizer.zero_grad(set_to_none=True)
                loss.sum().backward()  # the runs share no weights, so each gets its own gradient
                optimizer.step()
                losses[i] = loss.detach()  # kept on the device: no host sync inside the step
                correct[i] = (logits.argmax(-1) == y).sum(-1).float()
                if stop.requested:
                    partial = {"losses": losses, "correct": correct, "seconds": partial["seconds"] + time.perf_counter() - t0}
                    for s, r in enumerate(runs):
                        _save(r, stack, optimizer, s, epoch, i + 1, partial, test_acc[s])
                    raise TrainingInterrupted(
                        f"interrupted at epoch {epoch + 1}, step {i + 1} of {steps}; checkpoint saved in {runs[0].dir}"
                    )
            finite = torch.isfinite(losses).all(1)
            if not bool(finite.all()):
                step = int((~finite).nonzero()[0]) + 1
                bad = [str(r.dir) for r, ok in zip(runs, torch.isfinite(losses).all(0).tolist()) if not ok]
                raise KdcliError(
                    f"loss is not finite at epoch {epoch + 1}, step {step} ({', '.join(bad)}): lower --lr "
                    f"(now {config.lr}); the last good checkpoint is kept"
                )
            seconds = partial["seconds"] + time.perf_counter() - t0
            train_loss = (losses.sum(0) / steps).tolist()
            train_acc = (100 * correct.sum(0) / N).tolist()
            partial, start_step = None, 0
            last = epoch + 1 == config.epochs
            if last or (epoch + 1) % config.eval_every == 0:
                test_acc = evaluate_stack(stack, data.test_images, data.test_labels, autocast)
            for s, r in enumerate(runs):
                metrics = {
                    "epoch": epoch + 1,
                    "lr": learning_rate(config, epoch + (steps - 1) / steps),
                    "train_loss": round(train_loss[s], 6),
                    "train_accuracy": round(train_acc[s], 4),
                    "test_accuracy": test_acc[s] if last or (epoch + 1) % config.eval_every == 0 else None,
                    "seconds": round(seconds, 4),
                    "images_per_s": round(N / seconds, 1),
                }
                with open(r.dir / "metrics.jsonl", "a") as f:
                    f.write(json.dumps(metrics) + "\n")
                if last or (epoch + 1) % config.save_every == 0:
                    _save(r, stack, optimizer, s, epoch + 1, 0, None, test_acc[s])
            _report(bar, config, epoch, train_loss, train_acc, test_acc, seconds, N * S, progress)
    finally:
        bar.close()
        stop.restore()

    summaries = []
    for s, r in enumerate(runs):
        epochs_logged = [json.loads(line) for line in (r.dir / "metrics.jsonl").read_text().splitlines()]
        summary = {
            "model": r.config.model,
            "epochs": config.epochs,
            "seed": r.config.seed,
            "test_accuracy": test_acc[s],
            "train_accuracy": round(train_acc[s], 4),
            "train_seconds": round(sum(m["seconds"] for m in epochs_logged), 2),
            "trained_together": S,
            **({"temperature": r.temperature, "distillation_weight": r.distillation_weight, "hard_weight": r.hard_weight} if hasattr(r.config, "temperature") else {}),
        }
        write_json(r.dir / "summary.json", summary)
        summaries.append(summary)
    return summaries


def _truncate_metrics(path: Path, epochs: int):
    if path.exists():
        kept = [line for line in path.read_text().splitlines() if json.loads(line)["epoch"] <= epochs]
        path.write_text("".join(line + "\n" for line in kept))


def _save(run, stack, optimizer, s, epoch, step, partial, test_accuracy):
    weights = stack.member_state(s)
    save_atomic(
        {
            "model": weights,
            "model_name": run.config.model,
            "num_classes": weights[next(reversed(weights))].shape[0],  # the last layer's bias
            "optimizer": split_optimizer_state(optimizer.state_dict(), stack.size, s),
            "epoch": epoch,  # epochs complete
            "step": step,  # steps done into the next epoch (non-zero only after Ctrl-C)
            "partial": None if partial is None else {**partial, "losses": partial["losses"].cpu(), "correct": partial["correct"].cpu()},
            "config": {k: _plain(v) for k, v in asdict(run.config).items()},
            "test_accuracy": test_accuracy,
            "kdcli_version": __version__,
        },
        run.dir / CHECKPOINT,
    )


def _report(bar, config, epoch, train_loss, train_acc, test_acc, seconds, images, progress):
    mean = lambda v: sum(v) / len(v)  # noqa: E731  (several runs show their mean)
    tested = [a for a in test_acc if a is not None]
    if config.quiet:
        if progress and tested and ((epoch + 1) % config.eval_every == 0 or epoch + 1 == config.epochs):
            print(
                f"epoch {epoch + 1}/{config.epochs}  loss {mean(train_loss):.4f}  train {mean(train_acc):.2f}%  "
                f"test {mean(tested):.2f}%  {seconds:.2f}s  {images / seconds:,.0f} img/s",
                flush=True,
            )
        return
    bar.set_postfix(loss=f"{mean(train_loss):.3f}", train=f"{mean(train_acc):.1f}%", test=f"{mean(tested):.1f}%" if tested else "-", img_s=f"{images / seconds:,.0f}")
    bar.update(1)


class _StopOnSigint:
    """Ctrl-C sets a flag that the loop checks after each step, so weights are never half-updated."""

    def __init__(self):
        self.requested = False
        try:
            self.previous = signal.signal(signal.SIGINT, self._handle)
        except ValueError:  # not the main thread: leave Ctrl-C alone
            self.previous = None

    def _handle(self, signum, frame):
        self.requested = True

    def restore(self):
        if self.previous is not None:
            signal.signal(signal.SIGINT, self.previous)


# ---------------------------------------------------------------- evaluation


@torch.no_grad()
def evaluate_stack(stack, images, labels, autocast, batch_size=1000) -> list:
    """Top-1 test accuracy in percent for each of the S models."""
    stack.eval()
    correct = torch.zeros(stack.size, device=images.device)
    for i in range(0, len(labels), batch_size):
        x = augment.normalize(images[i : i + batch_size])
        with autocast:
            logits = stack(x.expand(stack.size, *x.shape))  # [S, b, C]
        correct += (logits.argmax(-1) == labels[i : i + batch_size]).sum(-1)
    return [round(100 * c / len(labels), 4) for c in correct.tolist()]


@torch.no_grad()
def predict(model, images, amp=True, batch_size=1000) -> torch.Tensor:
    """Logits [M, C] of one model on un-augmented images."""
    model.eval()
    autocast = torch.autocast("cuda", torch.bfloat16, enabled=amp and images.device.type == "cuda")
    out = []
    for i in range(0, len(images), batch_size):
        with autocast:
            out.append(model(augment.normalize(images[i : i + batch_size])).float())
    return torch.cat(out)


def load_model(checkpoint_path, device) -> tuple:
    """A checkpoint -> (model in eval mode on `device`, checkpoint dict)."""
    state = load_checkpoint(checkpoint_path)
    model = create_model(state["model_name"], state.get("num_classes", 10))
    try:
        model.load_state_dict(state["model"])
    except RuntimeError as e:
        raise KdcliError(f"{checkpoint_path}: weights do not fit {state['model_name']} ({str(e).splitlines()[0]})") from None
    return model.to(device, memory_format=torch.channels_last).eval(), state


def evaluate(checkpoint_path, data_dir="data", device="auto", download=True) -> dict:
    """Test accuracy of a checkpoint, overall and per class (percent)."""
    dev = resolve_device(device)
    model, state = load_model(checkpoint_path, dev)
    data = load_cifar10(data_dir, dev, download=download)
    pred = predict(model, data.test_images).argmax(1)
    per_class = [
        round(100 * float((pred[data.test_labels == c] == c).float().mean()), 2) for c in range(data.num_classes)
    ]
    accuracy = round(100 * float((pred == data.test_labels).float().mean()), 4)
    return {"model": state["model_name"], "epoch": state.get("epoch"), "test_accuracy": accuracy, "per_class": per_class}


# ---------------------------------------------------------------- the two commands


def train_teacher(config: TeacherConfig, progress=True) -> dict:
    device = resolve_device(config.device)
    data = load_cifar10(config.data_dir, device, config.subset, config.download)
    run = Run(config, DrawnAugmentation(config.seed, len(data.train_labels)), {"train_fingerprint": data.fingerprint})
    return train_runs([run], data, device, progress=progress)[0]


def student_runs(configs: list, data, cache=None) -> list:
    """Runs for student configs: KD students read `cache`, baselines (weight 0) draw their own views."""
    runs = []
    for c in configs:
        if c.distillation_weight > 0:
            extra = {"cache_teacher_sha256": cache.attrs["teacher_sha256"], "cache_teacher_test_accuracy": cache.attrs["teacher_test_accuracy"], "cache_epochs": cache.epochs_complete}
            runs.append(Run(c, CachedTargets(cache), extra))
        else:
            runs.append(Run(c, DrawnAugmentation(c.seed, len(data.train_labels))))
    return runs


def open_student_cache(config: StudentConfig, data):
    """The cache a KD student reads, validated against its data, or None for a baseline."""
    from kdcli.cache import open_cache  # h5py is only needed by students of a cache

    if config.distillation_weight == 0:
        return None
    cache = open_cache(config.cache, data.fingerprint, data.num_classes, config.allow_partial)
    if cache.epochs_complete < config.epochs:
        warnings.warn(
            f"{config.cache} has {cache.epochs_complete} epochs for a {config.epochs}-epoch student: "
            f"student epoch e reuses cached epoch e mod {cache.epochs_complete}",
            stacklevel=2,
        )
    return cache


def train_student(config: StudentConfig, progress=True) -> dict:
    device = resolve_device(config.device)
    data = load_cifar10(config.data_dir, device, config.subset, config.download)
    cache = open_student_cache(config, data)
    try:
        return train_runs(student_runs([config], data, cache), data, device, progress=progress)[0]
    finally:
        if cache is not None:
            cache.close()
