"""The state of S runs trained together, and what is done to it: a step, an epoch, a checkpoint.

    group = Group(runs, data, device)           # S runs of one architecture and one schedule
    group.start_folders()  or  group.load(checkpoints)
    while group.epoch < epochs:
        group.end_epoch(group.train_epoch(stop))  # evaluates, logs, and checkpoints when due
    group.write_summaries()

S = 1 for a teacher or a single student. Each run has its own seed (initialisation
and batch order), its own augmentation and soft targets, its own temperature and
loss weights, and its own run folder. S > 1 stacks the S models' weights and calls
them through `torch.func.vmap`, one batched computation instead of S small ones
that leave a GPU idle between kernel launches.

Every random draw is derived from (seed, epoch) (augment.epoch_generator), so a
run needs no RNG state to resume: an interrupted run ends with the same weights
as one never stopped (bit for bit on a CPU; on a GPU up to the run-to-run noise
of cuDNN's kernels, which add in no fixed order).
"""

import contextlib
import functools
import json
import math
import time
import warnings
from dataclasses import asdict

import torch

from kdcli import Diverged, Interrupted, KdcliError, __version__, augment
from kdcli.checkpoint import CHECKPOINT, save_all_atomic
from kdcli.device import autocast_dtype, autocast_to
from kdcli.evaluate import evaluate_stack
from kdcli.losses import distillation_loss, soft_targets
from kdcli.models import create_model
from kdcli.optimizer import learning_rate, make_optimizer
from kdcli.records import append_line, plain, read_metrics, truncate_metrics, write_json
from kdcli.runs import DIVERGED, git_commit, machine
from kdcli.stack import GraphedStep, ModelStack, split_optimizer_state, stack_optimizer_states


class TrainingInterrupted(Interrupted):
    """Ctrl-C or SIGTERM: the run stopped at a step boundary, with a checkpoint to resume from where it trained any step."""


@functools.cache  # once per process, not once per group of a sweep
def warn_compile_does_nothing(where: str):
    warnings.warn(f"--compile does nothing {where}: it compiles a run trained alone on CUDA", stacklevel=3)


class Group:
    """The state of S runs trained together: the stacked models, their optimizer, the epoch and step reached."""

    def __init__(self, runs, data, device, teacher=None, in_sweep=False):
        self.runs, self.data, self.device, self.teacher = runs, data, device, teacher
        self.in_sweep = in_sweep  # its errors name a sweep's options (--temperatures), not train-student's
        self.config = config = runs[0].config  # architecture and schedule are shared; seeds and targets are not
        self.size, self.num_images = len(runs), len(data.train_labels)
        self.steps = math.ceil(self.num_images / config.batch_size)  # the last batch is smaller (drop_last=False)
        models = []
        for r in runs:
            with torch.random.fork_rng(devices=[]):  # initialisation from the run's seed, global RNG untouched
                torch.manual_seed(r.config.seed)
                models.append(create_model(r.config.model, data.num_classes))
        self.stack = ModelStack(models).to(device)
        if self.size == 1 and device.type == "cuda":  # channels_last speeds up GPU convolutions; stacked weights are 5-d
            self.stack.to(memory_format=torch.channels_last)
        # The lr is a tensor the optimizer reads on the device, so a captured CUDA graph sees each new value.
        self.lr = torch.tensor(config.lr, device=device)
        self.optimizer = make_optimizer(config, self.stack.parameters(), device, self.lr)
        # Compiled only alone: a vmapped stack was never compiled here, and CUDA graphs already serve it.
        compiled = config.compile and device.type == "cuda" and self.size == 1
        if config.compile and not compiled:
            warn_compile_does_nothing(f"on {device.type}" if device.type != "cuda" else "to students trained stacked (--parallel)")
        self.forward = torch.compile(self.stack) if compiled else self.stack
        dtype = autocast_dtype(config.amp, device)
        self.autocast = autocast_to(dtype)
        self.precision = str(dtype or torch.float32).removeprefix("torch.")  # what --amp came to here: float32 on a CPU
        # fp16 gradients underflow without a loss scale (bf16 has float32's range). With a fused optimizer the
        # scaler's skip of an overflowed step happens on the device, so a CUDA graph captures it.
        fp16 = dtype == torch.float16
        if fp16 and self.size > 1:
            raise KdcliError("--amp fp16 trains one run at a time: stacked runs would share one loss scale, and one's overflow would skip all their steps")
        self.scaler = torch.amp.GradScaler("cuda", enabled=fp16)
        self.graph = GraphedStep(self) if config.cuda_graphs and device.type == "cuda" else None
        self.temperature = torch.tensor([r.temperature for r in runs], device=device)
        self.distillation_weight = torch.tensor([r.distillation_weight for r in runs], device=device)
        self.hard_weight = torch.tensor([r.hard_weight for r in runs], device=device)
        self.epoch, self.step, self.partial = 0, 0, None  # epochs complete, steps into the next, its sums so far
        self.test_accuracy = self.val_accuracy = [None] * self.size
        self.train_loss = self.train_accuracy = [None] * self.size

    def ran_with(self) -> dict:
        """The code and machine computing the runs now (their options say what was asked: --device auto, --amp on a CPU)."""
        return {"kdcli_version": __version__, "git_commit": git_commit(), **machine(self.device), "precision": self.precision}

    def start_folders(self):
        for r in self.runs:
            write_json(r.dir / "config.json", {**r.record, **self.ran_with()})
            (r.dir / "metrics.jsonl").unlink(missing_ok=True)  # left by a run killed before its first checkpoint: epochs trained again
            (r.dir / DIVERGED).unlink(missing_ok=True)  # of a run that diverged before its first checkpoint: trained again now

    def load(self, states):
        """Continue from the runs' checkpoints (one per run, all at the same epoch and step)."""
        for s, state in enumerate(states):
            self.stack.load_member_state(s, state["model"])
        self._load_optimizer(stack_optimizer_states([st["optimizer"] for st in states]))
        if states[0].get("loss_scale"):  # empty: saved without fp16 (e.g. on a CPU); absent: saved before --amp fp16; the scaler starts afresh
            self.scaler.load_state_dict(states[0]["loss_scale"])
        self.epoch, self.step = states[0]["epoch"], states[0]["step"]
        if states[0]["partial"] is not None:  # mid-epoch: each checkpoint holds its own run's column of the sums so far
            self.partial = {**self._stacked_columns([st["partial"] for st in states]), "seconds": states[0]["partial"]["seconds"]}
        self.test_accuracy = [st["test_accuracy"] for st in states]
        self.val_accuracy = [st.get("val_accuracy") for st in states]  # absent from checkpoints of before --val-size
        for r in self.runs:  # epochs logged after the checkpoint will be trained again
            truncate_metrics(r.dir / "metrics.jsonl", self.epoch)
            (r.dir / DIVERGED).unlink(missing_ok=True)  # resumed from its last good checkpoint: it may diverge again, or finish

    def _load_optimizer(self, saved: dict):
        """A saved optimizer state, fitted to the optimizer made here: its kernel choice, lr tensor and memory layout."""
        made_here = [dict(group) for group in self.optimizer.param_groups]
        for group, fresh in zip(saved["param_groups"], made_here):
            # This device's kernel choice, not the saving device's, and before loading, which places the state by it
            # (a CPU checkpoint would otherwise make fused SGD a per-step .item() that CUDA graphs cannot capture).
            group.update({k: fresh[k] for k in ("fused", "foreach", "capturable", "differentiable") if k in fresh})
        self.optimizer.load_state_dict(saved)
        for group, fresh in zip(self.optimizer.param_groups, made_here):
            group["lr"] = fresh["lr"]  # loading copied the shared lr tensor
        for p, state in self.optimizer.state.items():  # loading keeps the saved layout; fused kernels want the param's
            for k, v in state.items():
                if torch.is_tensor(v) and v.shape == p.shape and v.stride() != p.stride():
                    state[k] = torch.empty_like(p).copy_(v)  # e.g. a contiguous CPU checkpoint for channels_last CUDA weights

    def _stacked_columns(self, partials) -> dict:
        """The S runs' sums so far as [steps, S] tables. kdcli 0.1.0 before 2026-11-26 saved the whole
        group's table in every checkpoint: usable only in a group of the same size."""
        if partials[0]["losses"].dim() == 1:
            return {key: torch.stack([p[key] for p in partials], 1) for key in ("losses", "correct")}
        if partials[0]["losses"].shape[1] != self.size:
            raise KdcliError(
                f"{self.runs[0].dir} was stopped mid-epoch by an older kdcli in a group of {partials[0]['losses'].shape[1]} "
                "runs: resume it with the same --parallel (or finish that epoch with the kdcli that started it)"
            )
        return {key: partials[0][key] for key in ("losses", "correct")}

    def epoch_inputs(self):
        """This epoch's views [S, N, 3], SoftTargets of [S, N, ...] or None, and batch order [S, N]."""
        sources = [r.targets.epoch(self.epoch) for r in self.runs]
        aug = torch.stack([a.to(self.device) for a, _ in sources])
        soft = None
        if any(t is not None for _, t in sources):  # a baseline in a KD group gets zeros, at weight 0
            zeros = torch.zeros(self.num_images, self.data.num_classes)
            teacher = torch.stack([(zeros if t is None else t).to(self.device) for _, t in sources])  # [S, N, C] logits
            # Once per epoch, so a step only gathers its rows.
            soft = soft_targets(teacher, self.data.train_labels, self.temperature, self.distillation_weight, self.hard_weight)
        order = [torch.randperm(self.num_images, generator=augment.epoch_generator(r.config.seed, self.epoch, "order")) for r in self.runs]
        return aug, soft, torch.stack(order).to(self.device)

    def train_epoch(self, stop, on_step=None) -> float:
        """Train from the current step to the end of the epoch; return its seconds. on_step(b), if given, is called
        after each step queued, with the images b it took of each run (a progress bar's count)."""
        if stop.requested and self.step == 0:  # it came while the group set up, or the last epoch evaluated or saved
            self._stop_between_epochs(stop)
        aug, soft, order = self.epoch_inputs()
        B, S = self.config.batch_size, self.size
        if self.partial is None:
            self.partial = {"losses": torch.zeros(self.steps, S), "correct": torch.zeros(self.steps, S), "seconds": 0.0}
        losses, correct = self.partial["losses"].to(self.device), self.partial["correct"].to(self.device)
        if self.graph is not None:
            self.graph.new_epoch(aug, soft)
        self.stack.train()
        t0 = time.perf_counter()
        for i in range(self.step, self.steps):
            self.set_lr(learning_rate(self.config, self.epoch + i / self.steps))
            idx = order[:, i * B : (i + 1) * B]  # [S, b]
            if self.graph is not None and idx.shape[1] == B:
                loss, hits = self.graph.step(idx)
            else:  # no graph (not CUDA, or --no-cuda-graphs), or the smaller last batch of an epoch
                loss, hits = self.train_step(idx, aug, soft)
            losses[i], correct[i] = loss, hits  # kept on the device: no host sync inside the step
            if on_step is not None:
                on_step(idx.shape[1])
            if stop.requested:
                self._stop_mid_epoch(stop, i + 1, losses, correct, t0)
        self.partial.update(losses=losses, correct=correct)
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)  # the queued kernels belong to this epoch's time
        return self.partial["seconds"] + time.perf_counter() - t0

    def _stop_mid_epoch(self, stop, step, losses, correct, t0):
        """Save the epoch's first `step` steps (their losses and hits [steps, S] so far, timed from `t0`) and stop."""
        self.check_finite(losses[:step])  # a checkpoint of non-finite weights would replace the last good one
        self.step = step
        # Timed once check_finite has waited for the device: the steps queued on it belong to this epoch's time.
        seconds = self.partial["seconds"] + time.perf_counter() - t0
        self.partial = {"losses": losses.cpu(), "correct": correct.cpu(), "seconds": seconds}
        self.save_all()
        raise TrainingInterrupted(f"interrupted at epoch {self.epoch + 1}, step {step} of {self.steps}; checkpoint saved in {self._folders()}", stop.signum)

    def _stop_between_epochs(self, stop):
        """Stop before another step: the run may cost seconds a step (ResNet18 on a CPU)."""
        if self.epoch == 0:
            raise TrainingInterrupted(f"interrupted before the first step: nothing trained yet in {self._folders()}", stop.signum)
        if self.epoch % self.config.save_every:  # that epoch was not saved yet
            self.save_all()
        raise TrainingInterrupted(f"interrupted after epoch {self.epoch} of {self.config.epochs}; checkpoint saved in {self._folders()}", stop.signum)

    def _folders(self) -> str:
        return f"{self.runs[0].dir}" + (f" and {self.size - 1} more run folders" if self.size > 1 else "")

    def set_lr(self, lr: float):
        if self.device.type == "cuda":
            self.lr.fill_(lr)  # a kernel, not a sync; the optimizer and the graph read this tensor
        else:
            for group in self.optimizer.param_groups:
                group["lr"] = lr

    def train_step(self, idx, aug, soft):
        """One optimizer step on the images idx [S, b]; returns per-run loss [S] and correct count [S]."""
        views = augment.apply(self.data.train_images[idx].flatten(0, 1), _rows(aug, idx).flatten(0, 1))
        x = augment.normalize(views).unflatten(0, idx.shape)  # [S, b, 3, 32, 32]
        y = self.data.train_labels[idx]  # [S, b]
        # The smaller last batch runs eagerly: compiled, its new shape would cost a second compile (fwd + bwd) for one step an epoch.
        forward = self.forward if idx.shape[1] == self.config.batch_size else self.stack
        with self.autocast:
            logits = forward(x)  # [S, b, C]
            if self.teacher is not None:
                with torch.no_grad():
                    teacher = self.teacher(x.flatten(0, 1)).view(logits.shape)
                    targets = soft_targets(teacher, y, self.temperature, self.distillation_weight, self.hard_weight)
            else:
                targets = None if soft is None else soft.rows(idx)
        loss = distillation_loss(logits, y, targets, self.hard_weight)
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(loss.sum()).backward()  # the runs share no weights, so each gets exactly its own gradient
        self.scaler.step(self.optimizer)
        self.scaler.update()
        return loss.detach(), (logits.argmax(-1) == y).sum(-1).float()

    def end_epoch(self, seconds: float):
        """Check the losses and weights, evaluate, log and checkpoint the epoch just trained."""
        losses, correct = self.partial["losses"], self.partial["correct"]
        self.check_finite(losses)  # the epoch's first wait for the device: its steps never wait
        self.epoch, self.step, self.partial = self.epoch + 1, 0, None
        # Before its line is logged: weights blown up by the epoch's last step (its loss came before the update) would
        # log an epoch evaluated with them, and a diverged epoch is not logged (as one whose loss was not finite).
        self.check_finite_weights()
        sizes = torch.full((self.steps, 1), self.config.batch_size, dtype=losses.dtype, device=losses.device)
        sizes[-1] = self.num_images - self.config.batch_size * (self.steps - 1)  # the smaller last batch counts for its images
        self.train_loss = ((losses * sizes).sum(0) / self.num_images).tolist()  # the mean over images, like train_accuracy
        self.train_accuracy = (100 * correct.sum(0) / self.num_images).tolist()
        last = self.epoch == self.config.epochs
        evaluated = last or self.epoch % self.config.eval_every == 0
        if evaluated:
            self.test_accuracy = evaluate_stack(self.stack, self.data.test_images, self.data.test_labels, self.autocast)
            if self.validating:
                self.val_accuracy = evaluate_stack(self.stack, self.data.val_images, self.data.val_labels, self.autocast)
        for s, r in enumerate(self.runs):
            # On disk before any checkpoint counts this epoch (this one's, or a stop's before the next): a power cut
            # must not lose the line. One small fsync an epoch.
            append_line(r.dir / "metrics.jsonl", json.dumps(self._metrics(s, seconds, evaluated)))
        if last or self.epoch % self.config.save_every == 0:
            self.save_all()

    def _metrics(self, s: int, seconds: float, evaluated: bool) -> dict:
        """Run s's line of metrics.jsonl for the epoch just ended."""
        return {
            "epoch": self.epoch,
            "lr": learning_rate(self.config, self.epoch - 1 / self.steps),  # the last step's
            "train_loss": round(self.train_loss[s], 6),
            "train_accuracy": round(self.train_accuracy[s], 4),
            "test_accuracy": self.test_accuracy[s] if evaluated else None,
            **({"val_accuracy": self.val_accuracy[s] if evaluated else None} if self.validating else {}),
            "seconds": round(seconds, 4),
            "images_per_s": round(self.num_images / seconds, 1),
            # Per epoch, not only in summary.json: a resumed sweep may regroup a student, and the group sets its rounding.
            "trained_together": self.size,
        }

    @property
    def validating(self) -> bool:
        return len(self.data.val_labels) > 0

    def check_finite(self, losses):
        """losses [steps so far, S]: all finite, or the error naming the first bad step and its runs."""
        finite = torch.isfinite(losses)
        if not bool(finite.all()):
            step = int((~finite.all(1)).nonzero()[0]) + 1
            self._diverged(finite.all(0).tolist(), f"loss is not finite at epoch {self.epoch + 1}, step {step}", self.epoch, step)

    def check_finite_weights(self):
        """The weights after the last step, whose loss came before it: an lr that blows up there leaves a finite loss."""
        finite = self.stack.finite()
        if not all(finite):
            # The step: the last one taken, after which they were checked (an earlier one's blow-up would have made a later loss not finite).
            if self.step:  # mid-epoch, saving for a stop: the epoch in progress
                where, epoch, step = f"epoch {self.epoch + 1}, step {self.step}", self.epoch, self.step
            else:  # between epochs: the last step of the epoch just ended
                where, epoch, step = f"epoch {self.epoch}", self.epoch - 1, self.steps
            self._diverged(finite, f"weights are not finite after {where}", epoch, step)

    def _diverged(self, finite: list, what: str, epoch: int, step: int):
        """The error for the runs not `finite`: what went wrong, where, and the options that set the step size; each
        of those runs' folders records it (DIVERGED), which the report reads. epoch: the one (from 0) whose steps
        went wrong; step: in it (from 1), the one found to have gone wrong."""
        bad = [r for r, ok in zip(self.runs, finite) if not ok]
        kd = ""
        if kd_run := next((r for r in bad if r.distillation_weight > 0), None):  # the first names the options: a baseline has no KD term
            w, t = kd_run.distillation_weight, kd_run.temperature
            kd = f", or the KD term's weight w * T^2 (now {w * t**2:g}: --distillation-weight {w:g}, {self._temperature_option(kd_run)})"
        c = self.config
        # Only past a milestone: before it, a lower --lr-gamma would diverge the same way.
        rising = f" or --lr-gamma (now {c.lr_gamma:g}: it raises the lr at each milestone)" if c.scheduler == "multistep" and learning_rate(c, epoch) > c.lr else ""
        error = (
            f"{what} ({', '.join(str(r.dir) for r in bad)}): lower --lr "
            f"(now {c.lr}){rising}{kd}, and start over with --force; "
            + ("the last good checkpoint is kept" if (self.runs[0].dir / CHECKPOINT).exists() else "no checkpoint was written before it")
        )
        # Only the runs that diverged: the others of the group stop with them, unfinished, and resume as such.
        for r in bad:
            with contextlib.suppress(KdcliError):  # a full disk: the divergence is still the error to tell
                write_json(r.dir / DIVERGED, {"error": error, "epoch": epoch + 1, "step": step})
        # Made in the raise: held by a local here, the exception and this frame (self: the group's tensors) would hold
        # each other until Python collects garbage, and a sweep makes its next group meanwhile.
        raise Diverged(error)

    def _temperature_option(self, run) -> str:
        """The option that set the run's temperature, as the user gave it: one of a sweep's --temperatures."""
        return f"T {run.temperature:g} of --temperatures" if self.in_sweep else f"--temperature {run.temperature:g}"

    def save_all(self):
        self.check_finite_weights()  # a checkpoint of non-finite weights would replace the last good one
        optimizer_state, scaler_state = self.optimizer.state_dict(), self.scaler.state_dict()
        for group in optimizer_state["param_groups"]:
            group["lr"] = float(group["lr"])  # a number, so that the checkpoint resumes on any device
        checkpoints = []  # renamed into place together: the group resumes as one (save_all_atomic)
        for s, r in enumerate(self.runs):
            weights = self.stack.member_state(s)
            checkpoints.append((
                {
                    "model": weights,
                    "model_name": r.config.model,
                    "num_classes": self.data.num_classes,
                    "optimizer": split_optimizer_state(optimizer_state, self.size, s),
                    "loss_scale": scaler_state,  # the group's (fp16 on CUDA; else empty)
                    "train_images": self.num_images,  # it trains on the first N training images (a dump of a teacher records it)
                    "train_fingerprint": r.inputs.get("train_fingerprint"),  # which images: evaluate checks its held-out ones
                    "epoch": self.epoch,  # epochs complete
                    "step": self.step,  # steps done into the next epoch (non-zero only after Ctrl-C)
                    "partial": self._own_column(s),  # that epoch's per-step losses and hits so far
                    "config": {k: plain(v) for k, v in asdict(r.config).items()},
                    "test_accuracy": self.test_accuracy[s],
                    "val_accuracy": self.val_accuracy[s],
                    "kdcli_version": __version__,
                },
                r.dir / CHECKPOINT,
            ))  # fmt: skip
        save_all_atomic(checkpoints)

    def _own_column(self, s):
        """Run s's share of the epoch's sums so far (None between epochs): it resumes in whatever group it joins."""
        if self.partial is None:
            return None
        # clone: torch.save of a column view would write the whole group's table
        return {"losses": self.partial["losses"][:, s].clone(), "correct": self.partial["correct"][:, s].clone(), "seconds": self.partial["seconds"]}

    def write_summaries(self) -> list:
        summaries = []
        for s, r in enumerate(self.runs):
            logged = read_metrics(r.dir / "metrics.jsonl", self.config.epochs)
            summary = {
                "model": r.config.model,
                "epochs": self.config.epochs,
                "seed": r.config.seed,
                "test_accuracy": self.test_accuracy[s],
                **({"val_accuracy": self.val_accuracy[s]} if self.validating else {}),
                "train_accuracy": logged[-1]["train_accuracy"],  # also after a resume at the last epoch
                "train_seconds": round(sum(m["seconds"] for m in logged), 2),
                "trained_together": logged[-1].get("trained_together", self.size),  # the group that ended its last epoch: a rerun that only writes this is alone
                **self.ran_with(),  # what finished it; config.json's started it (a resume may run other code, on another machine)
            }
            if hasattr(r.config, "temperature"):
                summary.update(temperature=r.temperature, distillation_weight=r.distillation_weight, hard_weight=r.hard_weight)
            write_json(r.dir / "summary.json", summary)
            summaries.append(summary)
        return summaries


def _rows(table, idx):
    """table [S, N, K], idx [S, b] -> [S, b, K]: each run's own rows."""
    return table.gather(1, idx[..., None].expand(-1, -1, table.shape[-1]))
