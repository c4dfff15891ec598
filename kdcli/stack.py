"""Many small steps made fast: S models as one module, and one training step as one CUDA graph.

    stack = ModelStack([model_a, model_b, model_c])   # x [S, B, ...] -> logits [S, B, C]
    stack.member_state(1)                              # model_b's state_dict, loadable into a plain model

LeNet-5 is so small that one student leaves a GPU idle between kernel launches.
Stacking S students' weights and calling them through `torch.func.vmap` makes S
small computations one batched one; capturing a whole step (views, forward, loss,
backward, optimizer) as a CUDA graph makes ~120 launches one (group.Group uses both).
"""

import copy
import weakref

import torch
import torch.nn as nn

from kdcli import KdcliError
from kdcli.losses import SoftTargets
from kdcli.models import create_model


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
        if why := unstackable(models[0]):
            raise KdcliError(f"{why} cannot be trained stacked: use --parallel 1")
        params, _ = torch.func.stack_module_state(models)
        self.names = list(params)
        self.stacked = nn.ParameterList(nn.Parameter(params[n]) for n in self.names)
        self._template = [copy.deepcopy(models[0]).to("meta")]  # a list keeps it out of .parameters()

    def forward(self, x):
        if self.size == 1:
            return self.single(x[0])[None]
        template = self._template[0].train(self.training)  # a list hides it from .train()/.eval() too

        def call(params, x):
            return torch.func.functional_call(template, dict(zip(self.names, params)), (x,))

        return torch.vmap(call)(tuple(self.stacked), x)

    def member_state(self, s: int) -> dict:
        """The state_dict of model s, loadable into a plain model."""
        if self.size == 1:
            return {k: v.detach().clone() for k, v in self.single.state_dict().items()}
        return {n: p[s].detach().clone() for n, p in zip(self.names, self.stacked)}

    @torch.no_grad()
    def finite(self) -> list[bool]:
        """Whether each member's weights (and batch-norm statistics) are all finite."""
        if self.size == 1:
            return [bool(torch.stack([v.isfinite().all() for v in self.single.state_dict().values()]).all())]  # one wait for the device, not one a tensor
        return torch.stack([p.flatten(1).isfinite().all(1) for p in self.stacked]).all(0).tolist()

    def load_member_state(self, s: int, state: dict):
        if self.size == 1:
            self.single.load_state_dict(state)
            return
        with torch.no_grad():
            for n, p in zip(self.names, self.stacked):
                p[s].copy_(state[n])


def unstackable(model: nn.Module) -> str | None:
    """Why `model` cannot train stacked, or None: vmap keeps no per-member buffers (batch norm's running
    statistics) and refuses random ops (dropout) under its default randomness="error"."""
    if any(True for _ in model.buffers()):
        return "models with buffers (batch norm)"
    if any(isinstance(m, nn.modules.dropout._DropoutNd) for m in model.modules()):
        return "models with dropout"
    return None


def stackable(model_name: str) -> bool:
    """Whether students of this architecture can train stacked."""
    with torch.random.fork_rng(devices=[]):  # a model made only to be looked at: the caller's RNG stays where it was
        return unstackable(create_model(model_name)) is None


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
    """The inverse of split_optimizer_state: S members' optimizer state_dicts as one of the stack's."""
    if len(states) == 1:
        return states[0]
    stacked = {
        i: {k: torch.stack([st["state"][i][k] for st in states]) if torch.is_tensor(v) and v.dim() > 0 else v for k, v in per_param.items()}
        for i, per_param in states[0]["state"].items()
    }
    return {"state": stacked, "param_groups": states[0]["param_groups"]}


class GraphedStep:
    """A training step captured once as a CUDA graph and replayed: one launch instead of ~120.

    LeNet-5 steps are so small that a GPU spends them waiting for Python to launch
    kernels; replaying a graph removes that wait. The graph reads its inputs from
    fixed buffers (batch indices, the epoch's views and soft targets), so a replay
    is the same computation as an eager step. Capture waits for a few eager steps,
    so that the optimizer state and cuDNN's choices exist before it.
    """

    WARMUP = 3  # eager steps before capture

    def __init__(self, group):
        # A proxy: the group holds this step, and a reference back would make a cycle that keeps a finished group's
        # GPU memory (its weights, this graph's pool) until Python collects garbage, groups later in a sweep.
        self.group, self.eager_steps, self.graph = weakref.proxy(group), 0, None
        self.idx = self.aug = self.soft = None

    def new_epoch(self, aug, soft):
        if self.graph is None:
            self.aug, self.soft = aug, soft
        else:  # the graph reads the buffers it was captured with
            self.aug.copy_(aug)
            for buffer, new in zip(self.soft or (), soft or ()):
                buffer.copy_(new)

    def step(self, idx):
        group = self.group
        if self.graph is None and self.eager_steps < self.WARMUP:
            self.eager_steps += 1
            return group.train_step(idx, self.aug, self.soft)
        if self.graph is None:
            self.idx = idx.clone()
            self.aug = self.aug.clone()
            self.soft = None if self.soft is None else SoftTargets(*(t.clone() for t in self.soft))
            group.optimizer.zero_grad(set_to_none=True)  # gradients are allocated inside the graph's memory
            self.graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(self.graph):
                self.outputs = group.train_step(self.idx, self.aug, self.soft)
        else:
            self.idx.copy_(idx)
        self.graph.replay()
        return tuple(o.clone() for o in self.outputs)  # the next replay overwrites the outputs
