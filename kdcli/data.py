"""CIFAR-10 on disk -> uint8 tensors on the device.

    data = load_cifar10("data", device="cuda", subset=5000, val_size=500)
    data.train_images  # [4500, 3, 32, 32] uint8, resident on the device
    data.val_images    # [500, 3, 32, 32]: the last 500 training images, held out
    data.fingerprint   # sha256 of the 5,000 training images and labels before the split

Reads the official `cifar-10-batches-py` pickles directly (not through
torchvision's dataset class, which refuses files whose md5 differs), so that a
re-encoded copy such as the JPEG proxy still loads, with a warning.
"""

import hashlib
import pickle
import shutil
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from kdcli import DATA_DIR, KdcliError

BATCH_FOLDER = "cifar-10-batches-py"
TRAIN_FILES = [f"data_batch_{i}" for i in range(1, 6)]
TEST_FILE = "test_batch"
# md5 of the official release (the same table torchvision checks against).
OFFICIAL_MD5 = {
    "data_batch_1": "c99cafc152244af753f735de768cd75f",
    "data_batch_2": "d4bba439e000b95fd0a9bffe97cbabec",
    "data_batch_3": "54ebc095f3ab1f0389bbae665268c751",
    "data_batch_4": "634d18415352ddfa80567beed471001a",
    "data_batch_5": "482c414d41f54cd18b22e5b47cb7c3cb",
    "test_batch": "40351d587109b95175f43aff81a1287e",
}
CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")


class NotOfficialDataWarning(UserWarning):
    """The files are readable but are not byte-identical to the official release."""


@dataclass
class Cifar10:
    train_images: torch.Tensor  # [N, 3, 32, 32] uint8
    train_labels: torch.Tensor  # [N] int64
    test_images: torch.Tensor  # [M, 3, 32, 32] uint8
    test_labels: torch.Tensor  # [M] int64
    val_images: torch.Tensor  # [V, 3, 32, 32] uint8: the last V training images, held out (V = 0 by default)
    val_labels: torch.Tensor  # [V] int64
    fingerprint: str  # sha256 over the training images and labels before the split: the images a cache labels
    official: bool  # every file matched the official md5

    @property
    def num_before_split(self) -> int:
        return len(self.train_labels) + len(self.val_labels)

    @property
    def num_classes(self) -> int:
        return len(CLASSES)

    def fingerprint_of_first(self, n: int) -> str | None:
        """The fingerprint of the first n training images, what a run on --subset n trained on; None where the
        training split holds fewer, unless n is every image before the split (held-out ones included): then the
        fingerprint made as they loaded, not hashed again (0.14 s for 50,000)."""
        if n == self.num_before_split:
            return self.fingerprint
        return fingerprint(self.train_images[:n], self.train_labels[:n]) if n <= len(self.train_labels) else None


def load_cifar10(data_dir=DATA_DIR, device="cpu", subset=None, download=True, val_size=0) -> Cifar10:
    """Load CIFAR-10 from `data_dir` (downloading it if missing and allowed); the first `subset` training
    images, of which the last `val_size` are held out as a validation set."""
    folder = Path(data_dir) / BATCH_FOLDER
    _download_if_missing(data_dir, folder, download)
    train_images, train_labels = _read_batches([folder / name for name in TRAIN_FILES])
    test_images, test_labels = _read_batches([folder / TEST_FILE])
    if subset is not None:
        if not 1 <= subset <= len(train_labels):
            raise KdcliError(f"--subset must be between 1 and {len(train_labels)}, got {subset}")
        train_images, train_labels = train_images[:subset], train_labels[:subset]
    if not 0 <= val_size < len(train_labels):
        raise KdcliError(f"--val-size must be between 0 and {len(train_labels) - 1} (the training images less one), got {val_size}")
    mismatched = [name for name in OFFICIAL_MD5 if _md5(folder / name) != OFFICIAL_MD5[name]]
    if mismatched:  # after the errors of --subset and --val-size: a warning just before an error is noise
        warnings.warn(
            f"{folder}: {', '.join(mismatched)} differ from the official files: not the official "
            "CIFAR-10 release, so accuracy is not comparable to published numbers",
            NotOfficialDataWarning,
            stacklevel=2,
        )
    keep = len(train_labels) - val_size
    return Cifar10(
        train_images=train_images[:keep].to(device),
        train_labels=train_labels[:keep].to(device),
        test_images=test_images.to(device),
        test_labels=test_labels.to(device),
        val_images=train_images[keep:].to(device),
        val_labels=train_labels[keep:].to(device),
        fingerprint=fingerprint(train_images, train_labels),
        official=not mismatched,
    )


def recorded_data_dir(recorded: dict, source: str) -> str:
    """The --data-dir `source` (a run, a cache) recorded, for a command not given one; the default where it recorded
    none. A recorded folder missing here, the default `data` included, is refused: a download there, or the default
    instead, would be other images than that stage's (a relative path is relative to where that stage ran)."""
    data_dir = recorded.get("data_dir")
    if not data_dir:
        return DATA_DIR
    if not Path(data_dir).is_dir():
        raise KdcliError(f"--data-dir {data_dir}, as {source} recorded, is not a folder here: pass --data-dir, the folder holding its images")
    return data_dir


def fingerprint(images: torch.Tensor, labels: torch.Tensor) -> str:
    """sha256 over the uint8 pixels and int64 labels: 0.14 s for all 50,000 images (2-core CPU), so not cached."""
    digest = hashlib.sha256()
    digest.update(images.cpu().contiguous().numpy().tobytes())
    digest.update(labels.cpu().to(torch.int64).numpy().tobytes())
    return digest.hexdigest()


class _RefusedObject(pickle.UnpicklingError):
    """A batch file's pickle asks for an object no CIFAR-10 batch holds."""


class _BatchUnpickler(pickle.Unpickler):
    """A CIFAR-10 batch: dicts, lists, numbers, strings and numpy arrays, nothing else. A plain pickle.load calls
    whatever a file names (the classic __reduce__ attack): a data folder copied from elsewhere could run code, as
    a checkpoint cannot (loaded weights_only)."""

    # What the official files (Python 2, numpy.core) and re-written ones (numpy 2 names numpy._core; protocol 5
    # pickles an array as _frombuffer) ask for.
    ALLOWED = {("numpy", "ndarray"), ("numpy", "dtype"), ("_codecs", "encode"),
               *((f"numpy.{core}.multiarray", name) for core in ("core", "_core") for name in ("_reconstruct", "scalar")),
               *((f"numpy.{core}.numeric", "_frombuffer") for core in ("core", "_core"))}  # fmt: skip

    def find_class(self, module, name):
        if (module, name) not in self.ALLOWED:
            raise _RefusedObject(f"{module}.{name}")
        return super().find_class(module, name)


def _read_batches(paths):
    images, labels = [], []
    for path in paths:
        try:
            with open(path, "rb") as f:
                batch = _BatchUnpickler(f, encoding="bytes").load()
            # The official pickles have bytes keys; re-written ones may have str keys.
            batch = {k.decode() if isinstance(k, bytes) else k: v for k, v in batch.items()}
            pixels, batch_labels = np.asarray(batch["data"]), np.asarray(batch["labels"])
        except OSError as e:  # not the file's fault (a permission, a disk error): deleting it would not help
            raise KdcliError(f"cannot read {path}: {e.strerror or e}") from None
        except _RefusedObject as e:
            raise KdcliError(f"{path} is not a CIFAR-10 batch: its pickle asks for {e}, which could run code (refused): use a copy from a source you trust") from None
        except Exception as e:  # truncated, corrupt, or not a CIFAR batch at all
            raise KdcliError(
                f"cannot read {path} ({type(e).__name__}: {e}): the file is corrupt or truncated; "
                "delete it and run again to re-download"
            ) from None
        _check_batch(path, pixels, batch_labels)
        images.append(torch.from_numpy(pixels.reshape(-1, 3, 32, 32).copy()))
        labels.append(torch.from_numpy(batch_labels.astype(np.int64)))
    return torch.cat(images), torch.cat(labels)


def _check_batch(path, pixels: np.ndarray, labels: np.ndarray):
    """The official layout, or one clear error: a re-encoded file in another layout (HWC images, floats
    in [0, 1], 1-based labels) would otherwise load as scrambled images or wrong classes, silently."""
    if pixels.dtype != np.uint8 or pixels.ndim != 2 or pixels.shape[1] != 3 * 32 * 32:
        raise KdcliError(
            f"{path}: 'data' is {pixels.dtype} {list(pixels.shape)}; a CIFAR-10 batch holds uint8 [N, 3072] "
            "(each row the red, green, then blue 32x32 plane)"
        )
    if len(pixels) == 0:
        raise KdcliError(f"{path} holds no images; the file is corrupt")
    if labels.ndim != 1 or len(labels) != len(pixels):
        raise KdcliError(f"{path}: {len(pixels)} images but labels of shape {list(labels.shape)}; the file is corrupt")
    if not np.issubdtype(labels.dtype, np.integer) or labels.min() < 0 or labels.max() >= len(CLASSES):
        found = f"{labels.min()} to {labels.max()}" if np.issubdtype(labels.dtype, np.number) else "none of them"
        raise KdcliError(f"{path}: labels must be integers 0..{len(CLASSES) - 1}, found {labels.dtype} from {found}")


def _md5(path: Path) -> str:
    return hashlib.md5(path.read_bytes()).hexdigest()


def _download_if_missing(data_dir, folder: Path, download: bool):
    """Download CIFAR-10 where a file of it is missing from `folder`, or say in one line why that cannot be done."""
    missing = [name for name in OFFICIAL_MD5 if not (folder / name).is_file()]
    if not missing:
        return
    if (Path(data_dir) / TEST_FILE).is_file():  # --data-dir data/cifar-10-batches-py: a download would go inside it
        raise KdcliError(f"{data_dir} is the {BATCH_FOLDER} folder itself: pass --data-dir {Path(data_dir).parent}, the folder holding it")
    if not download:
        lacks = f" (it lacks {', '.join(missing)})" if folder.is_dir() and len(missing) < len(OFFICIAL_MD5) else ""
        raise KdcliError(
            f"no CIFAR-10 at {folder}{lacks}: drop the --no-download flag to fetch it, "
            f"or point --data-dir at a folder holding {BATCH_FOLDER}/"
        )
    _check_download_overwrites_no_copy(folder, missing)
    _download(Path(data_dir))


def _check_download_overwrites_no_copy(folder: Path, missing: list):
    """A download unpacks every official file into the folder: where the files it has are another copy's (a re-encoded
    one lacking a batch), it would replace them, so it is refused. Official files (a cut download) are replaced by the same."""
    other = [name for name in OFFICIAL_MD5 if name not in missing and _md5(folder / name) != OFFICIAL_MD5[name]]
    if other:
        raise KdcliError(
            f"{folder} lacks {', '.join(missing)}, and a download would replace its {', '.join(other)}, which are not the "
            f"official files: complete that copy, or point --data-dir at another folder to download CIFAR-10 there"
        )


def _download(root: Path):
    import torchvision  # imported here: only a download needs it

    made = next((p for p in [root, *root.parents][::-1] if not p.exists()), None)  # the outermost folder it creates
    try:
        torchvision.datasets.CIFAR10(root=str(root), download=True)  # verifies the archive's md5
    except BaseException as e:
        if made is not None:  # a mistyped --data-dir must not stay behind, nor a cut download in it
            shutil.rmtree(made, ignore_errors=True)
        if isinstance(e, Exception):
            # Offline machines are common (compute nodes), and a mistyped --data-dir lands here too: say where a copy goes
            raise KdcliError(
                f"could not download CIFAR-10 into {root} ({e}): point --data-dir at a folder holding {BATCH_FOLDER}/ "
                "if you have a copy, or run again where the download works"
            ) from None
        raise
