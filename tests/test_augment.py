"""kdcli.augment: seeded crop/flip parameters, and views that match torchvision pixel for pixel."""

import pytest
import torch
import torchvision.transforms as T
import torchvision.transforms.functional as TF

from kdcli import augment


def random_images(n, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (n, 3, 32, 32), dtype=torch.uint8, generator=g)


def torchvision_view(image, top, left, flip):
    """What RandomCrop(32, padding=4) + RandomHorizontalFlip do once they have drawn (top, left, flip)."""
    view = TF.crop(TF.pad(image, 4, fill=0), top, left, 32, 32)
    return TF.hflip(view) if flip else view


def test_apply_matches_torchvision_for_drawn_params():
    images, p = random_images(64), augment.params(seed=5, epoch=3, n=64)
    views = augment.apply(images, p)
    assert views.shape == images.shape and views.dtype == torch.uint8
    assert set(p[:, 2].tolist()) == {0, 1}  # both branches are exercised
    for image, view, (top, left, flip) in zip(images, views, p.tolist()):
        assert torch.equal(view, torchvision_view(image, top, left, flip))


@pytest.mark.parametrize("top,left,flip", [(0, 0, 0), (8, 8, 1), (0, 8, 1), (8, 0, 0), (4, 4, 0), (4, 4, 1)])
def test_apply_matches_torchvision_at_the_corners(top, left, flip):
    images = random_images(2, seed=1)
    p = torch.tensor([[top, left, flip]] * 2, dtype=torch.int8)
    views = augment.apply(images, p)
    for image, view in zip(images, views):
        assert torch.equal(view, torchvision_view(image, top, left, flip))
    if (top, left, flip) == (4, 4, 0):
        assert torch.equal(views, images)  # the centre crop without a flip is the image itself


def test_apply_matches_the_torchvision_transforms_themselves():
    """Run the real RandomCrop + RandomHorizontalFlip, then replay their draws with apply."""
    reference = T.Compose([T.RandomCrop(32, padding=4), T.RandomHorizontalFlip()])
    for i, image in enumerate(random_images(32, seed=2)):
        torch.manual_seed(i)
        expected = reference(image)
        torch.manual_seed(i)  # the same draws, in the same order as the transforms make them
        top, left, _, _ = T.RandomCrop.get_params(torch.zeros(3, 40, 40), (32, 32))
        flip = int(torch.rand(1) < 0.5)
        view = augment.apply(image[None], torch.tensor([[top, left, flip]]))[0]
        assert torch.equal(view, expected)


def test_params_cover_the_range_of_random_crop():
    ours = augment.params(seed=0, epoch=0, n=20_000)
    torch.manual_seed(0)
    theirs = torch.tensor([T.RandomCrop.get_params(torch.zeros(3, 40, 40), (32, 32))[:2] for _ in range(2000)])
    assert set(theirs.flatten().tolist()) == set(range(9))
    for column in (0, 1):
        assert set(ours[:, column].tolist()) == set(range(9))
        counts = torch.bincount(ours[:, column].long(), minlength=9).float()
        assert (counts / len(ours) - 1 / 9).abs().max() < 0.02  # uniform, like torch.randint


def test_params_shape_dtype_and_flips():
    p = augment.params(seed=777, epoch=0, n=10_000)
    assert p.shape == (10_000, 3) and p.dtype == torch.int8
    assert set(p[:, 2].tolist()) == {0, 1}
    assert abs(p[:, 2].float().mean().item() - 0.5) < 0.03  # 6 standard deviations


def test_params_are_a_function_of_seed_and_epoch():
    a = augment.params(seed=1, epoch=4, n=500)
    assert torch.equal(a, augment.params(seed=1, epoch=4, n=500))
    assert not torch.equal(a, augment.params(seed=1, epoch=5, n=500))
    assert not torch.equal(a, augment.params(seed=2, epoch=4, n=500))


def test_params_of_a_seed_and_epoch_never_change():
    """Caches on disk store these draws and verify_cache compares them with params(seed, e): a kdcli that drew
    other views for the same seed (another hash, draw order or threshold) would call every older cache damaged,
    and a resumed dump would label other views than its first epochs did."""
    assert augment.params(seed=777, epoch=0, n=6).tolist() == [[7, 4, 1], [2, 0, 1], [2, 8, 0], [5, 3, 1], [0, 3, 0], [8, 4, 0]]
    assert augment.params(seed=10, epoch=3, n=6).tolist() == [[6, 6, 1], [4, 5, 0], [6, 6, 1], [8, 2, 1], [7, 6, 1], [6, 0, 0]]


def test_params_leave_the_global_rng_alone():
    torch.manual_seed(0)
    expected = torch.rand(3)
    torch.manual_seed(0)
    augment.params(seed=1, epoch=0, n=100)
    assert torch.equal(torch.rand(3), expected)


def test_normalize_matches_the_reference_normalisation():
    images = random_images(8, seed=3)
    reference = T.Normalize(augment.MEAN, augment.STD)(images.float() / 255)
    x = augment.normalize(images)
    assert x.dtype == torch.float32 and x.shape == images.shape
    torch.testing.assert_close(x, reference, rtol=1e-5, atol=1e-5)
    assert x.is_contiguous()  # channels_last is for GPUs: on CPUs it made LeNet-5 steps 2-5x slower
    assert augment.MEAN == (0.4914, 0.4822, 0.4465) and augment.STD == (0.2471, 0.2435, 0.2616)
    assert augment.SPEC["pad"] == 4 and augment.SPEC["crop"] == 32 and augment.SPEC["fill"] == 0


def test_unaugmented_params_give_the_images_themselves():
    images = random_images(5, seed=4)
    assert torch.equal(augment.apply(images, augment.unaugmented(5)), images)


def test_the_order_and_augmentation_streams_are_independent():
    """The batch order and the crops of one (seed, epoch) come from generators of their own."""
    a, b = augment.epoch_generator(1, 0, "augment"), augment.epoch_generator(1, 0, "order")
    assert not torch.equal(torch.randint(0, 2**31, (16,), generator=a), torch.randint(0, 2**31, (16,), generator=b))
