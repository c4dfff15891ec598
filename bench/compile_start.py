"""What dump-logits' compiled labeller costs to start: graphs compiled and seconds, from cold caches.

    PYTHONPATH=. python3 bench/compile_start.py                           # CUDA: the dump's own sizes
    python bench/compile_start.py --device cpu --images 200 --test-images 60 --batch-size 64   # a CPU (Inductor's C++ backend)

A fresh process labels as a new dump does: the test set and the training set un-augmented, then two augmented
epochs, with kdcli's compiled labeller (compiled on any device here, which the dump does only on CUDA) and
Inductor's and Triton's caches in an empty temporary folder. The first three passes pay every compile; the
fourth is the steady state. Each batch shape, stride or kind of tensor the compiled graph has not seen compiles
it again, so `unique_graphs` is the number of compiles (1: every pass met the first batch's guards).
"""

import argparse
import atexit
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # kdcli from this checkout
cold = tempfile.mkdtemp(prefix="kdcli-compile-start-")
atexit.register(shutil.rmtree, cold, ignore_errors=True)
os.environ["TORCHINDUCTOR_CACHE_DIR"], os.environ["TRITON_CACHE_DIR"] = cold, f"{cold}/triton"  # before torch reads them

import torch  # noqa: E402
from torch._dynamo.utils import counters  # noqa: E402

from kdcli import augment  # noqa: E402
from kdcli.device import autocast_dtype  # noqa: E402
from kdcli.dump import teacher_logits, view_labeller  # noqa: E402
from kdcli.evaluate import model_from  # noqa: E402
from kdcli.models import create_model  # noqa: E402


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--model", default="resnet18")
    parser.add_argument("--images", type=int, default=50_000, help="training images (the last batch is smaller unless a multiple)")
    parser.add_argument("--test-images", type=int, default=10_000)
    parser.add_argument("--batch-size", type=int, default=1024)
    parser.add_argument("--amp", default="bf16", choices=["bf16", "fp16", "off"])
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    torch.manual_seed(0)
    model = model_from({"model_name": args.model, "model": create_model(args.model).state_dict()}, device, args.model)  # as the dump loads it
    label = view_labeller(model, autocast_dtype(args.amp, device), True, args.batch_size)
    train = torch.randint(0, 256, (args.images, 3, 32, 32), dtype=torch.uint8, device=device)  # speed does not depend on pixels
    test = torch.randint(0, 256, (args.test_images, 3, 32, 32), dtype=torch.uint8, device=device)

    def timed(images, aug):
        t = time.perf_counter()
        teacher_logits(label, images, aug, args.batch_size).cpu()  # .cpu() waits for the device
        return time.perf_counter() - t

    first = [timed(test, None), timed(train, None), timed(train, augment.params(0, 0, args.images))]
    steady = timed(train, augment.params(0, 1, args.images))
    print(f"{args.model} on {device.type}, batch {args.batch_size}, {args.images:,} + {args.test_images:,} images: "
          f"unique_graphs {counters['stats']['unique_graphs']}; test, clean and first augmented pass "
          f"{' + '.join(f'{s:.1f}' for s in first)} = {sum(first):.1f} s; the next epoch {steady:.2f} s")  # fmt: skip


if __name__ == "__main__":
    main()
