"""The real VLM code path on a tiny random Qwen2.5-VL: it generates, batching changes no answer, the stage banks it.

The reference is plain transformers: the same checkpoint, one conversation at a time, ``model.generate`` greedy.
Greedy decoding in fp32 on the same weights must give token-identical answers (tolerance: none), whatever
the left padding a batch of mixed image sizes needs.
"""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
from demo_run import ROOT, cli, demo_config
from PIL import Image
from tiny_vlm import build_tiny_vlm

from bobjax import run_folder
from bobjax.caption import prompts, read_caption_bank, stage
from bobjax.caption.vlm import VLMCaptioner, load_processor
from bobjax.data import make_splits
from bobjax.errors import ConfigError

MAX_NEW_TOKENS = 6


@pytest.fixture(scope="module")
def tiny_vlm(tmp_path_factory):
    return build_tiny_vlm(str(tmp_path_factory.mktemp("tiny_qwen2_5_vl")))


def tiny_overrides(model):
    return {"data.toyworld.num_classes": 2, "data.shots": 2, "caption.method": "vlm", "caption.model": model,
            "caption.batch_size": 3, "caption.max_new_tokens": MAX_NEW_TOKENS}


def tiny_config(model):
    return demo_config(**tiny_overrides(model))


def images_of_mixed_sizes(model):
    splits = make_splits(tiny_config(model).data, 0)
    images = [splits.train[i]["image"] for i in range(len(splits.train))]
    wide = np.asarray(Image.fromarray(images[0]).resize((112, 56)))  # Twice the image tokens: padding in a batch.
    return images + [wide]


def reference_answers(model_dir, images, questions):
    """transformers alone: one conversation per generate call, greedy, new tokens decoded."""
    from transformers import AutoModelForImageTextToText

    processor = load_processor(model_dir)
    model = AutoModelForImageTextToText.from_pretrained(model_dir, dtype=torch.float32).eval()
    answers, lengths = [], []
    for image, question in zip(images, questions):
        text = processor.apply_chat_template(
            [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": question}]}],
            add_generation_prompt=True, tokenize=False)
        inputs = processor(text=[text], images=[Image.fromarray(image)], return_tensors="pt")
        with torch.no_grad():
            out = model.generate(**inputs, max_new_tokens=MAX_NEW_TOKENS, do_sample=False)
        new = out[0, inputs["input_ids"].shape[1]:]
        lengths.append(len(new))
        answers.append(processor.decode(new, skip_special_tokens=True))
    return answers, lengths


def test_tiny_vlm_generates_and_a_padded_batch_matches_one_at_a_time(tiny_vlm):
    images = images_of_mixed_sizes(tiny_vlm)
    questions = [prompts.question("background" if i % 2 else "pose", "bird") for i in range(len(images))]
    captioner = VLMCaptioner(tiny_vlm, MAX_NEW_TOKENS)
    assert captioner.device.type == "cpu" and captioner.model.dtype == torch.float32
    batched = captioner(images, questions)
    expected, lengths = reference_answers(tiny_vlm, images, questions)
    assert max(lengths) > 0 and any(expected), "the model must actually generate tokens"
    assert batched == expected
    assert captioner(images[:1], questions[:1]) == expected[:1]


def test_prompt_is_the_chat_template_with_one_image(tiny_vlm):
    captioner = VLMCaptioner(tiny_vlm, MAX_NEW_TOKENS)
    text = captioner.prompt_text(prompts.question("pose", "bird"))
    assert text == ("<|im_start|>user\n<|vision_start|><|image_pad|><|vision_end|>What is the pose of the bird in "
                    "this image? Answer in as few words as possible.<|im_end|>\n<|im_start|>assistant\n")


def test_stage_with_the_tiny_vlm_banks_one_record_per_image(tiny_vlm, tmp_path):
    config = tiny_config(tiny_vlm)
    stage.run(config, str(tmp_path))
    splits = make_splits(config.data, config.seed)
    captions = read_caption_bank(str(tmp_path))
    assert len(captions) == len(splits.train) == 4
    assert captions.image_ids == splits.train.image_ids()
    assert captions.labels.tolist() == splits.train.labels().tolist()
    stats = json.loads((tmp_path / "captions" / "stats.json").read_text())
    assert stats["images"] == 4 and stats["answers"] == 8 and stats["model"] == tiny_vlm

    # The first answers in the cache are the model's answers to the paper's questions about those images.
    with open(os.path.join(run_folder.partial_dir(str(tmp_path), "caption"), "responses.jsonl")) as f:
        cached = {r["image_id"]: r for r in map(json.loads, f)}
    images = [splits.train[i]["image"] for i in range(len(splits.train))]
    expected, _ = reference_answers(tiny_vlm, images, [prompts.question("background", "bird")] * len(images))
    assert [cached[i]["raw"]["background"][0] for i in captions.image_ids] == expected


def test_unloadable_model_is_named():
    with pytest.raises(ConfigError, match=r"config.caption.model='/nonexistent/qwen' cannot be loaded"):
        VLMCaptioner("/nonexistent/qwen", 8)
    with pytest.raises(ConfigError, match="max_new_tokens must be >= 1"):
        VLMCaptioner("/nonexistent/qwen", 0)


def test_missing_torch_names_the_install_and_the_tpu_launcher_switch(monkeypatch):
    """A '.[tpu]' install has no torch: captioning there says what to install instead of an ImportError."""
    monkeypatch.setitem(sys.modules, "torch", None)  # `import torch` now raises ImportError.
    with pytest.raises(ConfigError, match=r"not installed .*'.\[torch\]'.*tpu_vm.sh TPU ZONE --caption-here"):
        VLMCaptioner("/nonexistent/qwen", 8)


FRESH_RUN = """
import json, sys
sys.path.insert(0, {tests!r})
from demo_run import demo_config
from jax._src import xla_bridge
from bobjax import main
main.run(demo_config(**{overrides!r}), {workdir!r})
print(json.dumps({{"jax_backend_started": xla_bridge.backends_are_initialized(),
                  "torch_imported": "torch" in sys.modules}}))
"""


def test_the_vlm_answers_in_a_child_process_before_jax_starts(tiny_vlm, tmp_path):
    """On a GPU a JAX backend takes 75 % of the memory as it starts: the run's process must not start one before
    the captions are done, and the VLM (torch) must give its memory back by ending, in a process of its own."""
    env = dict(os.environ, XLA_FLAGS="", PYTHONPATH=ROOT)
    overrides = {**tiny_overrides(tiny_vlm), "stages": "caption"}
    script = FRESH_RUN.format(tests=os.path.join(ROOT, "tests", "helpers"), overrides=overrides, workdir=str(tmp_path))
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    assert json.loads(result.stdout.splitlines()[-1]) == {"jax_backend_started": False, "torch_imported": False}
    captions = read_caption_bank(str(tmp_path))
    assert len(captions) == 4 and (tmp_path / "captions" / "COMPLETE").exists()


def test_a_user_error_in_the_vlm_process_reaches_the_user_as_one_line(tmp_path):
    # A folder that exists passes main's check before the first stage; only the VLM's process finds it is no model.
    model = tmp_path / "not_a_model"
    model.mkdir()
    result = cli("--config=configs/demo.py", f"--workdir={tmp_path / 'run'}", "--config.stages=caption",
                 "--config.compare.methods=", "--config.caption.method=vlm", f"--config.caption.model={model}",
                 timeout=600)
    assert result.returncode == 1, result.stderr[-3000:]
    assert "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines()[-1].startswith(
        f"bobjax: error: config.caption.model={str(model)!r} cannot be loaded as a transformers")
