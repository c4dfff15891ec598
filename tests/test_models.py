"""kdcli.models: the registry, output shapes, and parameter counts pinned to the reference architectures."""

import pytest
import torch

from kdcli import KdcliError
from kdcli.models import MODELS, create_model

# The reference's numbers (README's "The reference"): a changed architecture shows up here first.
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


def test_a_resnet_block_adds_its_input():
    """Residual connections do not change the parameter count: without them the pins above would still hold."""
    from kdcli.models import BasicBlock

    block = BasicBlock(4, 4, 1).eval()
    with torch.no_grad():
        block.bn2.weight.zero_()  # the residual branch now outputs bn2's bias, zero: only the shortcut is left
    x = torch.randn(2, 4, 8, 8)
    assert torch.equal(block(x), torch.relu(x))


@pytest.mark.parametrize("name, features", [("resnet18", (1, 512, 4, 4)), ("resnet8", (1, 64, 8, 8))])
def test_each_resnet_stage_after_the_first_halves_the_resolution(name, features):
    """Where the stride is does not change the parameter count either, only the compute (4x for one stage too late)."""
    model = create_model(name)
    assert model.layers(model.stem(torch.randn(1, 3, 32, 32))).shape == features


def test_lenet5_is_the_tutorials_network():
    """The PyTorch CIFAR-10 tutorial's forward pass, written out: max-pooling, ReLU after every layer but the last."""
    import torch.nn.functional as F

    torch.manual_seed(0)
    m, x = create_model("lenet5"), torch.randn(4, 3, 32, 32)
    pool = torch.nn.MaxPool2d(2, 2)
    h = pool(F.relu(m.conv1(x)))
    h = pool(F.relu(m.conv2(h)))
    h = F.relu(m.fc2(F.relu(m.fc1(torch.flatten(h, 1)))))
    assert torch.equal(m(x), m.fc3(h))


def test_resnet8_is_the_cifar_resnet_written_out():
    """Where the ReLUs and the strides are, and the average-pooled head, change neither the parameter count nor a
    shape: the forward pass written out with the model's own weights pins them."""
    import torch.nn.functional as F

    torch.manual_seed(0)
    m, x = create_model("resnet8").eval(), torch.randn(2, 3, 32, 32)

    def block(b, x, stride):
        out = F.relu(b.bn1(F.conv2d(x, b.conv1.weight, stride=stride, padding=1)))
        out = b.bn2(F.conv2d(out, b.conv2.weight, padding=1))
        shortcut = b.shortcut[1](F.conv2d(x, b.shortcut[0].weight, stride=stride)) if len(b.shortcut) else x
        return F.relu(out + shortcut)

    h = F.relu(m.stem[1](F.conv2d(x, m.stem[0].weight, padding=1)))
    for b, stride in zip(m.layers, (1, 2, 2), strict=True):
        h = block(b, h, stride)
    torch.testing.assert_close(m(x), m.fc(h.mean((2, 3))))
