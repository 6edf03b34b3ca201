"""Images/s of bobjax's captioner against a plain transformers loop, on the same images, model and settings.

Ours: both of BOB's questions about ``--batch_size`` images in one left-padded ``generate`` call, as the caption
stage runs it (re-asks aside). Reference: one conversation per ``model.generate`` call, image after image.
Both decode greedily up to ``--max_new_tokens`` and share the loaded model; the first batch of each is a
warm-up and not timed. Prints both rates, their ratio, and how many answers agree.

    python benchmarks/caption.py                                              # tiny random Qwen2.5-VL, CPU
    python benchmarks/caption.py --model=Qwen/Qwen2.5-VL-7B-Instruct --image_size=448 --images=64  # GPU
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from bobjax.caption import prompts  # noqa: E402
from result import emit  # noqa: E402
from bobjax.caption.vlm import VLMCaptioner  # noqa: E402
from bobjax import toyworld  # noqa: E402


def toy_images(count: int, size: int) -> list[np.ndarray]:
    split = toyworld.ToyWorldSplit(toyworld.ToyWorldSpec(image_size=size, train_per_class=count), "train")
    return [split[i]["image"] for i in range(count)]


def questions(descriptor: str) -> tuple[str, str]:
    return prompts.question("background", descriptor), prompts.question("pose", descriptor)


def ours(captioner: VLMCaptioner, images, batch_size: int, descriptor: str) -> list[str]:
    background, pose = questions(descriptor)
    out = []
    for start in range(0, len(images), batch_size):
        batch = images[start:start + batch_size]
        answers = captioner(batch * 2, [background] * len(batch) + [pose] * len(batch))
        out += [a for pair in zip(answers[:len(batch)], answers[len(batch):]) for a in pair]
    return out


def reference(captioner: VLMCaptioner, images, max_new_tokens: int, descriptor: str) -> list[str]:
    """transformers as its model card shows it: one conversation, one ``generate``, at a time."""
    import torch
    from PIL import Image

    processor, model = captioner.processor, captioner.model
    out = []
    for image in images:
        for question in questions(descriptor):
            conversation = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": question}]}]
            text = processor.apply_chat_template(conversation, add_generation_prompt=True, tokenize=False)
            inputs = processor(text=[text], images=[Image.fromarray(image)], return_tensors="pt").to(model.device)
            with torch.inference_mode():
                generated = model.generate(**inputs, max_new_tokens=max_new_tokens, do_sample=False)
            out.append(processor.decode(generated[0, inputs["input_ids"].shape[1]:], skip_special_tokens=True))
    return out


def timed(fn, *args) -> tuple[list[str], float]:
    start = time.perf_counter()
    result = fn(*args)
    return result, time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="", help="hub id or folder; default: a tiny random Qwen2.5-VL")
    parser.add_argument("--images", type=int, default=24)
    parser.add_argument("--image_size", type=int, default=64)
    parser.add_argument("--batch_size", type=int, default=8)
    parser.add_argument("--max_new_tokens", type=int, default=16)
    parser.add_argument("--descriptor", default="bird")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        model = args.model
        if not model:
            sys.path.insert(0, os.path.join(ROOT, "tests", "helpers"))
            from tiny_vlm import build_tiny_vlm

            model = build_tiny_vlm(tmp)
        captioner = VLMCaptioner(model, args.max_new_tokens)
        images = toy_images(args.images + args.batch_size, args.image_size)
        warmup, images = images[:args.batch_size], images[args.batch_size:]
        ours(captioner, warmup, args.batch_size, args.descriptor)
        reference(captioner, warmup[:1], args.max_new_tokens, args.descriptor)

        our_answers, our_s = timed(ours, captioner, images, args.batch_size, args.descriptor)
        ref_answers, ref_s = timed(reference, captioner, images, args.max_new_tokens, args.descriptor)

    agree = sum(a == b for a, b in zip(our_answers, ref_answers))
    print(f"model: {args.model or 'tiny random Qwen2.5-VL'} on {captioner.device} ({captioner.model.dtype}); "
          f"{len(images)} images of {args.image_size}px, 2 questions each, batch {args.batch_size}, "
          f"max_new_tokens {args.max_new_tokens}")
    print(f"bobjax captioner:   {len(images) / our_s:8.2f} images/s")
    print(f"transformers loop:  {len(images) / ref_s:8.2f} images/s")
    print(f"ratio (ours / reference): {ref_s / our_s:.2f}x;  identical answers: {agree}/{len(our_answers)}")
    emit(f"captions, batch {args.batch_size}", len(images) / our_s, len(images) / ref_s, "images/s")


if __name__ == "__main__":
    main()
