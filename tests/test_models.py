"""kdcli.models: the registry, output shapes, and parameter counts pinned to the reference architectures."""

import pytest
import torch

from kdcli import KdcliError
from kdcli.models import MODELS, create_model

# The reference's numbers (design.md): a changed architecture shows up here first.
PARAMETERS = {"resnet18": 11_173_962, "resnet8": 78_042, "lenet5": 62_006, "1": 62_006}


def count(model):
    return sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize("name", sorted(MODELS))
def test_forward_shape(name):
    x = torch.randn(2, 3, 32, 32)
    assert create_model(name)(x).shape == (2, 10)
    assert create_model(name, num_classes=7)(x).shape == (2, 7)


@pytest.mark.parametrize("name", sorted(MODELS))
def test_parameter_count(name):
    assert name in PARAMETERS, f"pin the parameter count of the new model {name!r} in PARAMETERS"
    assert count(create_model(name)) == PARAMETERS[name]


def test_alias_1_is_lenet5():
    assert MODELS["1"] is MODELS["lenet5"]
    torch.manual_seed(0)
    a = create_model("1")
    torch.manual_seed(0)
    b = create_model("lenet5")
    assert all(torch.equal(a.state_dict()[k], v) for k, v in b.state_dict().items())


def test_lenet5_has_no_batch_norm():
    """The reference student has none; ModelStack can only stack models without buffers."""
    assert not list(create_model("lenet5").buffers())
    assert list(create_model("resnet18").buffers())


def test_unknown_model_lists_the_known_names():
    with pytest.raises(KdcliError, match="nope") as error:
        create_model("nope")
    assert all(name in str(error.value) for name in MODELS)
