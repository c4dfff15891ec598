"""GPU-only checks (skipped without CUDA): the fast paths compute what the plain ones do.

Run on a GPU machine with `python -m pytest tests/test_cuda.py`.
"""

import pytest
import torch

from kdcli.data import load_cifar10
from kdcli.runs import DrawnAugmentation, Run
from kdcli.train import StudentConfig, TeacherConfig, train_runs

DEVICE = "cuda"
pytestmark = pytest.mark.skipif(DEVICE == "cuda" and not torch.cuda.is_available(), reason="needs a CUDA GPU")


def train(tmp_path, name, config_class, seeds, data_dir, device=DEVICE, **options):
    data = load_cifar10(data_dir, device, options.get("subset"))
    runs = [
        Run(config_class(out=str(tmp_path / f"{name}{s}"), seed=s, device=device, data_dir=str(data_dir), **options), DrawnAugmentation(s, len(data.train_labels)))
        for s in seeds
    ]
    train_runs(runs, data, torch.device(device), progress=False)
    return [torch.load(r.dir / "checkpoint.pt", weights_only=True)["model"] for r in runs]


@pytest.fixture(autouse=True)
def deterministic_cudnn(monkeypatch):
    """cuDNN's default backward kernels add with atomics in any order: two eager runs differ by ~1e-5 too."""
    monkeypatch.setattr(torch.backends.cudnn, "deterministic", True)
    monkeypatch.setattr(torch.backends.cudnn, "benchmark", False)


def assert_close_weights(a, b, atol):
    for key in a:
        assert torch.allclose(a[key].float(), b[key].float(), atol=atol), (key, (a[key].float() - b[key].float()).abs().max())


@pytest.mark.parametrize("seeds", [(1,), (1, 2, 3)], ids=["one", "stacked"])
def test_cuda_graph_steps_equal_eager_steps(tmp_path, data_dir, seeds):
    options = dict(model="lenet5", epochs=2, batch_size=32, data_dir=data_dir, distillation_weight=0.0, amp=False)
    graphed = train(tmp_path, "graph", StudentConfig, seeds, cuda_graphs=True, **options)
    eager = train(tmp_path, "eager", StudentConfig, seeds, cuda_graphs=False, **options)
    for g, e in zip(graphed, eager):
        assert_close_weights(g, e, atol=1e-5)


def test_cuda_graph_teacher_with_batch_norm_equals_eager(tmp_path, data_dir):
    options = dict(model="resnet18", epochs=1, batch_size=32, data_dir=data_dir, amp=True, subset=160)
    graphed = train(tmp_path, "graph", TeacherConfig, (7,), cuda_graphs=True, **options)
    eager = train(tmp_path, "eager", TeacherConfig, (7,), cuda_graphs=False, **options)
    assert_close_weights(graphed[0], eager[0], atol=1e-2)  # bf16 autocast: cuDNN may pick other kernels
