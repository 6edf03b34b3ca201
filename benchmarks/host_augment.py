"""Images/s per host core of the classifier's host input, and the cores a host needs to keep its chips fed.

    python benchmarks/host_augment.py [--repeats 5] [--images 100]

One process, one core, timed in its thread's CPU time (``time.thread_time``: what a worker process costs a core, less
disturbed by other work on the machine than the wall clock): the paper's augmentation (``bobjax.classify.augment``,
RandAugment on) of a 224 px image;
the same plus a synthetic image's share of decoding (a 512 px PNG decoded, resized and centre-cropped: the synthetic
half of a BOB batch; real images are decoded once and cached); torchvision's transforms on the same PIL images as the
reference. Medians over ``--repeats`` with the range. The cores a host needs: images/s its chips train at, by the
train steps' roofline bounds in docs/hardware.md ("What to expect"), over images/s per core (a bound: real steps
are 2-5x slower, and need fewer cores).

Exits non-zero, loudly, when the demo's host work per image (configs/demo.py: 64 px, no RandAugment or colour ops)
exceeds ``DEMO_BUDGET_MS``: the demo must not grow its input cost unnoticed.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys

from PIL import Image
from result import emit

from bobjax import config_lib
from bobjax.classify import augment, host_cost
from bobjax.data import image_ops

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# Train steps' bounds of 64 images (python -m bobjax.aot --stages=classify, 2026-12-07; docs/hardware.md, "What to
# expect"): seconds a step; a pack of sweep points reads one stream for all its points.
STEPS = {"v5e-8 host (224 vCPUs), CLIP ViT-B/16": 0.026, "v5e-8 host, CLIP, a pack of 8 sweep points": 0.165,
         "v5e-8 host, ResNet-50": 0.014, "v5e-8 host, ResNet-50, a pack of 9 sweep points": 0.095,
         "8 x H100 node, CLIP ViT-B/16": 0.0026, "8 x H100 node, CLIP, a pack of 16 sweep points": 0.036}
DEMO_BUDGET_MS = 1.0  # Measured 0.28-0.47 ms on the idle 2-core development machine, 0.54 at load 16 (2026-12-07).


def _per_image_ms(work, count: int, repeats: int) -> list[float]:
    return [host_cost.per_image_ms(work, count) for _ in range(repeats)]


def _torchvision(size: int):
    import torch
    from torchvision import transforms as T

    # One thread, as in a DataLoader worker: torch's default pool spent about 4.5 ms of other threads' CPU per image
    # here, which the calling thread's clock does not see.
    torch.set_num_threads(1)

    return T.Compose([
        T.RandomResizedCrop(size, scale=(0.25, 1.0), interpolation=T.InterpolationMode.BICUBIC),
        T.RandomHorizontalFlip(), T.RandAugment(),
        T.RandomApply([T.ColorJitter(0.4, 0.4, 0.2, 0.1)], p=0.8), T.RandomGrayscale(p=0.2),
        T.RandomApply([T.GaussianBlur(2 * (size // 20) + 1, (0.1, 2.0))], p=0.2), T.RandomSolarize(128, p=0.2)])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--images", type=int, default=100, help="images per repeat")
    args = parser.parse_args()

    paper = augment.spec_from_config(config_lib.base_config().classify)
    demo = augment.spec_from_config(config_lib.load_config_file(os.path.join(REPO, "configs", "demo.py")).classify)
    photos = [host_cost.photo(paper.image_size, seed) for seed in range(8)]
    small = [image_ops.resize_and_center_crop(p, demo.image_size) for p in photos]
    pngs = [host_cost.png(host_cost.photo(host_cost.SYNTHETIC_SIZE, seed)) for seed in range(8)]
    reference = _torchvision(paper.image_size)
    pil = [Image.fromarray(p) for p in photos]

    rows = {
        "paper augmentation, 224 px": lambda i: augment.augment_image(augment.row_rng(0, 0, i), photos[i % 8], paper),
        "512 px PNG decode + resize": lambda i: host_cost.decode(pngs[i % 8], paper.image_size),
        "torchvision, same ops, 224 px": lambda i: reference(pil[i % 8]),
        "demo augmentation, 64 px": lambda i: augment.augment_image(augment.row_rng(0, 0, i), small[i % 8], demo),
    }
    load = os.getloadavg()
    print(f"load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f} on {os.cpu_count()} CPUs; "
          f"{args.repeats} repeats of {args.images} images, one process")
    ms = {name: _per_image_ms(work, args.images, args.repeats) for name, work in rows.items()}
    median = {name: statistics.median(times) for name, times in ms.items()}
    print(f"{'CPU time per image':34s} {'median ms':>10s} {'range ms':>14s} {'images/s/core':>14s}")
    for name, times in ms.items():
        print(f"{name:34s} {median[name]:10.2f} {min(times):6.2f}-{max(times):<7.2f} {1e3 / median[name]:14.0f}")
    # A BOB batch is half synthetic (decoded each time) and half real (decoded once, cached).
    bob_ms = median["paper augmentation, 224 px"] + median["512 px PNG decode + resize"] / 2
    print(f"\nBOB row (augmentation + half a decode): {bob_ms:.2f} ms, {1e3 / bob_ms:.0f} images/s per core")
    for name, seconds in STEPS.items():
        rate = 64 / seconds
        print(f"{name}: {rate:,.0f} images/s at the step's bound -> {rate * bob_ms / 1e3:.1f} cores")
    emit("host augmentation 224px", 1e3 / median["paper augmentation, 224 px"],
         1e3 / median["torchvision, same ops, 224 px"], "images/s")
    demo_ms = median["demo augmentation, 64 px"]
    if demo_ms > DEMO_BUDGET_MS:
        sys.exit(f"FAIL: the demo's host augmentation takes {demo_ms:.2f} ms per image, over its budget of "
                 f"{DEMO_BUDGET_MS} ms (benchmarks/host_augment.py DEMO_BUDGET_MS); find what grew before raising it")


if __name__ == "__main__":
    main()
