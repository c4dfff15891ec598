"""kdcli.data: the CIFAR-10 pickles -> uint8 tensors, subsets, fingerprints, and the errors a user can hit."""

import pickle
import re
import shutil
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import TEST_IMAGES, write_cifar_folder

from kdcli import KdcliError
from kdcli import data as data_module
from kdcli.data import BATCH_FOLDER, OFFICIAL_MD5, NotOfficialDataWarning, fingerprint, load_cifar10

TRAIN_IMAGES = 5 * 40


def copy_folder(data_dir, tmp_path):
    """A private copy of the session data folder that a test may damage."""
    shutil.copytree(data_dir, tmp_path / "copy")
    return tmp_path / "copy"


def assert_same_data(a, b):
    for name in ("train_images", "train_labels", "test_images", "test_labels"):
        assert torch.equal(getattr(a, name), getattr(b, name)), name
    assert a.fingerprint == b.fingerprint


def test_shapes_dtypes_and_pixels(data_dir):
    data = load_cifar10(data_dir, download=False)
    assert data.train_images.shape == (TRAIN_IMAGES, 3, 32, 32) and data.train_images.dtype == torch.uint8
    assert data.train_labels.shape == (TRAIN_IMAGES,) and data.train_labels.dtype == torch.int64
    assert data.test_images.shape == (TEST_IMAGES, 3, 32, 32) and data.test_images.dtype == torch.uint8
    assert data.test_labels.shape == (TEST_IMAGES,) and data.test_labels.dtype == torch.int64
    assert data.num_classes == 10 and not data.official
    # The rows of the pickle are channel-major 3x32x32 images, batches in order 1..5.
    with open(data_dir / BATCH_FOLDER / "data_batch_2", "rb") as f:
        batch = pickle.load(f, encoding="bytes")
    expected = torch.from_numpy(batch[b"data"].reshape(-1, 3, 32, 32))
    assert torch.equal(data.train_images[40:80], expected)
    assert data.train_labels[40:80].tolist() == batch[b"labels"]


def test_bytes_and_str_keys_load_the_same(tmp_path):
    official_style = load_cifar10(write_cifar_folder(tmp_path / "bytes", seed=3), download=False)
    rewritten = load_cifar10(write_cifar_folder(tmp_path / "str", seed=3, str_keys=True), download=False)
    assert_same_data(official_style, rewritten)


def test_subset_takes_the_first_n(data_dir):
    full = load_cifar10(data_dir, download=False)
    part = load_cifar10(data_dir, subset=50, download=False)
    assert torch.equal(part.train_images, full.train_images[:50])
    assert torch.equal(part.train_labels, full.train_labels[:50])
    assert torch.equal(part.test_images, full.test_images)  # the test set is never cut


def test_subset_of_every_image_is_every_image(data_dir):
    assert_same_data(load_cifar10(data_dir, subset=TRAIN_IMAGES, download=False), load_cifar10(data_dir, download=False))


@pytest.mark.parametrize("subset", [0, TRAIN_IMAGES + 1])
def test_subset_out_of_range(data_dir, subset):
    with pytest.raises(KdcliError, match="--subset"):
        load_cifar10(data_dir, subset=subset, download=False)


def test_val_size_holds_out_the_last_n_after_the_subset(data_dir):
    full = load_cifar10(data_dir, subset=100, download=False)
    split = load_cifar10(data_dir, subset=100, val_size=30, download=False)
    assert torch.equal(split.train_images, full.train_images[:70]) and torch.equal(split.train_labels, full.train_labels[:70])
    assert torch.equal(split.val_images, full.train_images[70:]) and torch.equal(split.val_labels, full.train_labels[70:])
    assert torch.equal(split.test_images, full.test_images)
    # The fingerprint is of the images before the split, the ones a cache labels.
    assert split.fingerprint == full.fingerprint and split.num_before_split == full.num_before_split == 100
    assert len(full.val_labels) == 0 and full.val_images.shape == (0, 3, 32, 32)


@pytest.mark.parametrize("val_size", [-1, TRAIN_IMAGES])
def test_val_size_out_of_range(data_dir, val_size):
    with pytest.raises(KdcliError, match=f"--val-size must be between 0 and {TRAIN_IMAGES - 1}"):
        load_cifar10(data_dir, val_size=val_size, download=False)


def test_fingerprint(data_dir, tmp_path):
    first, again = load_cifar10(data_dir, download=False), load_cifar10(data_dir, download=False)
    assert first.fingerprint == again.fingerprint  # stable across loads
    assert len(first.fingerprint) == 64
    assert load_cifar10(data_dir, subset=100, download=False).fingerprint != first.fingerprint
    other = load_cifar10(write_cifar_folder(tmp_path, seed=1), download=False)
    assert other.fingerprint != first.fingerprint
    # One label or one pixel changed is other data.
    labels = first.train_labels.clone()
    labels[7] = (labels[7] + 1) % 10
    assert fingerprint(first.train_images, labels) != first.fingerprint
    images = first.train_images.clone()
    images[0, 0, 0, 0] ^= 1
    assert fingerprint(images, first.train_labels) != first.fingerprint


def test_missing_folder_without_download(tmp_path, monkeypatch):
    monkeypatch.setattr(data_module, "_download", lambda root: pytest.fail("must not download"))
    with pytest.raises(KdcliError, match="--no-download"):
        load_cifar10(tmp_path / "nowhere", download=False)


def test_an_empty_batches_folder_is_missing_not_lacking_every_file(tmp_path):
    (tmp_path / BATCH_FOLDER).mkdir()
    with pytest.raises(KdcliError, match=rf"no CIFAR-10 at {re.escape(str(tmp_path / BATCH_FOLDER))}: drop the --no-download flag"):
        load_cifar10(tmp_path, download=False)


def test_the_inner_folder_as_data_dir_names_its_parent(data_dir):
    with pytest.raises(KdcliError, match=rf"is the {BATCH_FOLDER} folder itself: pass --data-dir {data_dir}, the folder holding it"):
        load_cifar10(data_dir / BATCH_FOLDER, download=True)  # (no download is tried)


def test_one_missing_file_without_download(data_dir, tmp_path):
    folder = copy_folder(data_dir, tmp_path)
    (folder / BATCH_FOLDER / "test_batch").unlink()
    with pytest.raises(KdcliError, match="--no-download"):
        load_cifar10(folder, download=False)


def test_missing_folder_downloads_when_allowed(tmp_path, monkeypatch):
    calls = []
    monkeypatch.setattr(data_module, "_download", lambda root: calls.append(root) or write_cifar_folder(root))
    data = load_cifar10(tmp_path, download=True)
    assert calls == [tmp_path] and len(data.train_labels) == TRAIN_IMAGES


def test_a_copy_lacking_a_batch_is_not_downloaded_over(data_dir, tmp_path, monkeypatch):
    """A re-encoded copy lacking one batch: the download would unpack the official files over the others."""
    monkeypatch.setattr(data_module, "_download", lambda root: pytest.fail("must not download"))
    folder = copy_folder(data_dir, tmp_path)
    (folder / BATCH_FOLDER / "data_batch_5").unlink()
    before = (folder / BATCH_FOLDER / "data_batch_1").read_bytes()
    with pytest.raises(KdcliError, match=r"lacks data_batch_5, and a download would replace its data_batch_1, .*test_batch, which are not the official"):
        load_cifar10(folder, download=True)
    assert (folder / BATCH_FOLDER / "data_batch_1").read_bytes() == before


def test_official_files_lacking_a_batch_are_downloaded_again(data_dir, tmp_path, monkeypatch):
    """A cut download: the files there are official, so unpacking the release again replaces each with itself."""
    monkeypatch.setattr(data_module, "OFFICIAL_MD5", {name: data_module._md5(data_dir / BATCH_FOLDER / name) for name in OFFICIAL_MD5})
    folder = copy_folder(data_dir, tmp_path)
    (folder / BATCH_FOLDER / "data_batch_5").unlink()
    calls = []
    monkeypatch.setattr(data_module, "_download", lambda root: calls.append(root) or write_cifar_folder(root))
    assert len(load_cifar10(folder, download=True).train_labels) == TRAIN_IMAGES and calls == [folder]


def truncate(path):
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def garbage(path):
    path.write_bytes(np.random.default_rng(0).integers(0, 256, 5000, dtype=np.uint8).tobytes())


def wrong_content(path):
    path.write_bytes(pickle.dumps({b"data": np.zeros((4, 3072), np.uint8)}))  # no labels


def wrong_lengths(path):
    path.write_bytes(pickle.dumps({b"data": np.zeros((4, 3072), np.uint8), b"labels": [0, 1, 2]}))


@pytest.mark.parametrize("damage", [truncate, garbage, wrong_content, wrong_lengths])
def test_corrupt_batch_file(data_dir, tmp_path, damage):
    folder = copy_folder(data_dir, tmp_path)
    damage(folder / BATCH_FOLDER / "data_batch_3")
    with pytest.raises(KdcliError) as error:
        load_cifar10(folder, download=False)
    message = str(error.value)
    assert "data_batch_3" in message and "\n" not in message


def rewrite(path, **changes):
    with open(path, "rb") as f:
        batch = pickle.load(f)
    batch.update({k.encode(): v(batch[k.encode()]) for k, v in changes.items()})
    path.write_bytes(pickle.dumps(batch))


@pytest.mark.parametrize(
    "changes, expected",
    [
        ({"data": lambda d: d.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)}, r"'data' is uint8 \[40, 32, 32, 3\]; a CIFAR-10 batch holds uint8 \[N, 3072\]"),
        ({"data": lambda d: d / 255}, r"'data' is float64 \[40, 3072\]"),
        ({"labels": lambda y: [label + 1 for label in y]}, r"labels must be integers 0..9, found int64 from 1 to 10"),
        ({"labels": lambda y: [-1] + y[1:]}, r"labels must be integers 0..9, found int64 from -1 to 9"),
        ({"labels": lambda y: [float(label) for label in y]}, r"labels must be integers 0..9, found float64"),
        ({"labels": lambda y: [str(label) for label in y]}, r"labels must be integers 0..9, found <U1 from none of them"),
        ({"data": lambda d: d[:, :1024]}, r"'data' is uint8 \[40, 1024\]; a CIFAR-10 batch holds uint8 \[N, 3072\]"),
        ({"data": lambda d: d.reshape(-1)}, r"'data' is uint8 \[122880\]"),
        ({"labels": lambda y: [[label] for label in y]}, r"40 images but labels of shape \[40, 1\]; the file is corrupt"),
    ],
    ids=["hwc images", "float images", "1-based labels", "negative label", "float labels", "text labels", "one channel", "flat images", "column labels"],
)
def test_other_layouts_refused_naming_the_file(data_dir, tmp_path, changes, expected):
    """A re-encoded copy in another layout would load as scrambled images or shifted classes: refused."""
    folder = copy_folder(data_dir, tmp_path)
    rewrite(folder / BATCH_FOLDER / "data_batch_2", **changes)
    with pytest.raises(KdcliError, match=rf"data_batch_2: {expected}"):
        load_cifar10(folder, download=False)


def test_not_official_data_warns_naming_the_files(data_dir):
    with pytest.warns(NotOfficialDataWarning) as caught:
        load_cifar10(data_dir, download=False)
    message = str(caught[0].message)
    assert all(name in message for name in OFFICIAL_MD5)


def test_official_md5_does_not_warn(data_dir, monkeypatch):
    matching = {name: data_module._md5(data_dir / BATCH_FOLDER / name) for name in OFFICIAL_MD5}
    monkeypatch.setattr(data_module, "OFFICIAL_MD5", matching)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        data = load_cifar10(data_dir, download=False)
    assert data.official
    assert not [w for w in caught if issubclass(w.category, NotOfficialDataWarning)]


def test_a_failed_download_leaves_no_folder_behind(tmp_path, monkeypatch):
    """A mistyped --data-dir must not stay behind as an empty folder."""
    import torchvision

    def no_network(root, download):
        Path(root).mkdir(parents=True, exist_ok=True)  # as torchvision does first
        (Path(root) / "cifar-10-python.tar.gz").write_bytes(b"part")  # what a cut download leaves
        raise RuntimeError("<urlopen error [Errno -2] Name or service not known>")

    monkeypatch.setattr(torchvision.datasets, "CIFAR10", no_network)
    with pytest.raises(KdcliError, match="could not download CIFAR-10 into"):
        load_cifar10(tmp_path / "typo" / "data")
    assert list(tmp_path.iterdir()) == []


def test_a_failed_download_into_a_folder_that_was_there_deletes_none_of_it(tmp_path, monkeypatch):
    """--data-dir ~/datasets, a folder of the user's own: only a folder the download made is removed when it fails."""
    import torchvision

    def no_network(root, download):
        raise RuntimeError("<urlopen error [Errno -2] Name or service not known>")

    (tmp_path / "datasets").mkdir()
    (tmp_path / "datasets" / "mnist.npz").write_bytes(b"the user's")
    monkeypatch.setattr(torchvision.datasets, "CIFAR10", no_network)
    with pytest.raises(KdcliError, match="could not download CIFAR-10 into"):
        load_cifar10(tmp_path / "datasets")
    assert (tmp_path / "datasets" / "mnist.npz").read_bytes() == b"the user's"


def test_a_failed_download_says_where_a_local_copy_goes(tmp_path, monkeypatch):
    """Offline (a compute node), or with a mistyped --data-dir, the way out is --data-dir: the error says so."""
    import torchvision

    def no_network(root, download):
        raise RuntimeError("<urlopen error [Errno -2] Name or service not known>")

    monkeypatch.setattr(torchvision.datasets, "CIFAR10", no_network)
    with pytest.raises(KdcliError, match=rf"not known>\): point --data-dir at a folder holding {BATCH_FOLDER}/"):
        load_cifar10(tmp_path / "typo")


def test_fingerprint_of_the_first_n_images(data_dir):
    """fingerprint_of_first(n) is the fingerprint a run on --subset n recorded, which dump-logits, verify and evaluate
    compare against: the first n images whatever a --val-size holds out after them, the load's own for every image,
    and None where the folder holds fewer than n (not the fingerprint of the images it has)."""
    every = load_cifar10(data_dir, download=False)
    held_out = load_cifar10(data_dir, download=False, val_size=50)  # 150 training images + 50 held out
    assert held_out.fingerprint_of_first(200) == held_out.fingerprint == every.fingerprint
    for n in (150, 100):
        assert held_out.fingerprint_of_first(n) == load_cifar10(data_dir, subset=n, download=False).fingerprint
    assert every.fingerprint_of_first(201) is None


def test_an_empty_batch_is_one_clear_error(data_dir, tmp_path):
    """A batch that holds no images at all (a re-export that lost them) is refused in one line naming the file,
    not with numpy's traceback from taking the smallest of no labels."""
    folder = copy_folder(data_dir, tmp_path)
    rewrite(folder / BATCH_FOLDER / "data_batch_4", data=lambda d: d[:0], labels=lambda y: np.asarray(y[:0], dtype=np.int64))
    with pytest.raises(KdcliError, match=r"data_batch_4 holds no images; the file is corrupt$"):
        load_cifar10(folder, download=False)


def test_a_folder_lacking_one_batch_names_it(data_dir, tmp_path):
    folder = copy_folder(data_dir, tmp_path)
    (folder / BATCH_FOLDER / "test_batch").unlink()
    with pytest.raises(KdcliError, match=r"no CIFAR-10 at .*cifar-10-batches-py \(it lacks test_batch\): drop the --no-download flag"):
        load_cifar10(folder, download=False)


def test_ctrl_c_during_a_download_stops_as_ctrl_c_and_leaves_no_folder(tmp_path, monkeypatch):
    """Ctrl-C while CIFAR-10 downloads is the user stopping kdcli: it must stay a KeyboardInterrupt (exit status 130,
    no 'could not download' error to debug), and the half-made folder must go all the same."""
    import torchvision

    def interrupted(root, download):
        Path(root).mkdir(parents=True, exist_ok=True)
        (Path(root) / "cifar-10-python.tar.gz").write_bytes(b"part")
        raise KeyboardInterrupt

    monkeypatch.setattr(torchvision.datasets, "CIFAR10", interrupted)
    with pytest.raises(KeyboardInterrupt):
        load_cifar10(tmp_path / "new" / "data")
    assert list(tmp_path.iterdir()) == []


# ---------------------------------------------------------------- found by mutation testing (2026-11-27, night)


def test_the_fingerprint_of_given_images_never_changes():
    """Caches and checkpoints on disk record fingerprints, and dump-logits, verify and evaluate compare against them:
    a kdcli that hashed the same images otherwise (another order, label width or layout) would call every older
    cache and run other data. sha256 of the pixels in C order, then of the labels as little-endian int64."""
    images = (torch.arange(2 * 3 * 32 * 32) % 251).to(torch.uint8).view(2, 3, 32, 32)
    pinned = "54a0b40310db573e14983b9fe4f0ce2c4f4718c3846bf47433f25ce5c4418d02"
    assert fingerprint(images, torch.tensor([3, 7])) == pinned
    assert fingerprint(images.contiguous(memory_format=torch.channels_last), torch.tensor([3, 7], dtype=torch.int32)) == pinned


def test_labels_stored_as_a_small_integer_array_load_as_int64(data_dir, tmp_path):
    """A re-export may store the labels as a uint8 array rather than the official list: they must load as the
    int64 class indices training needs (cross-entropy and one_hot refuse uint8), and hash as the same data."""
    folder = copy_folder(data_dir, tmp_path)
    for name in OFFICIAL_MD5:  # every file: one int64 batch among them would promote the others as they are joined
        rewrite(folder / BATCH_FOLDER / name, labels=lambda y: np.asarray(y, dtype=np.uint8))
    data, official_layout = load_cifar10(folder, download=False), load_cifar10(data_dir, download=False)
    assert data.train_labels.dtype == data.test_labels.dtype == torch.int64
    assert_same_data(data, official_layout)


# numpy 1's numpy.core written in by replacing text, which protocol 4's length-prefixed, framed names would not survive
@pytest.mark.parametrize("protocol, numpy_core", [*((p, "numpy._core") for p in range(pickle.HIGHEST_PROTOCOL + 1)), *((p, "numpy.core") for p in range(4))])
def test_batches_pickled_by_any_protocol_and_numpy_load_as_before(data_dir, tmp_path, protocol, numpy_core):
    """The official files are Python 2 pickles (protocol 2) naming numpy.core, not numpy 2's numpy._core, and a copy
    re-written with pickle.HIGHEST_PROTOCOL names numpy's _frombuffer: the unpickler that refuses any other object
    loads them all as the same data."""
    folder = copy_folder(data_dir, tmp_path)
    for name in OFFICIAL_MD5:
        path = folder / BATCH_FOLDER / name
        with open(path, "rb") as f:
            batch = pickle.load(f)
        path.write_bytes(pickle.dumps(batch, protocol=protocol).replace(b"numpy._core.", f"{numpy_core}.".encode()))
    assert_same_data(load_cifar10(folder, download=False), load_cifar10(data_dir, download=False))
