"""The CLIP tokenizer files rebuilt from bobjax's BPE asset give the real CLIP tokenizer."""

import importlib.util
import json
import os

import pytest
from transformers import CLIPTokenizer

from bobjax.models.clip_tokenizer import write_clip_tokenizer_files

SENTENCES = [
    "a photo of a cat",
    "A Painting of a Laysan Albatross, perched on a rock at dusk!",
    "naïve café — 123 birds' nests",
]


@pytest.fixture(scope="module")
def tokenizer_dir(tmp_path_factory):
    return write_clip_tokenizer_files(tmp_path_factory.mktemp("clip_tokenizer"))


@pytest.fixture(scope="module")
def tokenizer(tokenizer_dir):
    return CLIPTokenizer.from_pretrained(tokenizer_dir)


def test_vocabulary_invariants(tokenizer_dir, tokenizer):
    with open(os.path.join(tokenizer_dir, "vocab.json"), encoding="utf-8") as f:
        vocab = json.load(f)
    assert len(vocab) == len(tokenizer) == 49408
    assert sorted(vocab.values()) == list(range(49408))
    assert tokenizer.bos_token_id == vocab["<|startoftext|>"] == 49406
    assert tokenizer.eos_token_id == vocab["<|endoftext|>"] == 49407
    assert vocab["!"] == 0 and vocab["a</w>"] == 320  # byte tokens first, then byte tokens + '</w>'
    with open(os.path.join(tokenizer_dir, "merges.txt"), encoding="utf-8") as f:
        lines = f.read().splitlines()
    assert lines[0].startswith("#version") and len(lines) == 1 + 49152 - 256 - 2


def test_known_clip_ids(tokenizer):
    """Ids published for OpenAI CLIP (e.g. transformers' CLIP docs and tests use this prompt)."""
    assert tokenizer("a photo of a cat").input_ids == [49406, 320, 1125, 539, 320, 2368, 49407]
    assert tokenizer("a photo of a dog").input_ids == [49406, 320, 1125, 539, 320, 1929, 49407]


def test_round_trip(tokenizer):
    for sentence in SENTENCES:
        ids = tokenizer(sentence).input_ids
        assert ids[0] == 49406 and ids[-1] == 49407
        decoded = tokenizer.decode(ids, skip_special_tokens=True)
        # CLIP lower-cases, collapses whitespace and decodes words with a space after each '</w>'.
        assert decoded.replace(" ", "") == sentence.lower().replace(" ", "")


def test_matches_open_clip_simple_tokenizer(tokenizer):
    """Cross-check with open_clip's own BPE implementation when it is installed.

    open_clip's package __init__ imports torchvision, so its tokenizer module is loaded by file path.
    """
    spec = importlib.util.find_spec("open_clip")
    if spec is None:
        pytest.skip("open_clip_torch not installed; the published-ids test above still checks real CLIP ids")
    path = os.path.join(os.path.dirname(spec.origin), "tokenizer.py")
    module_spec = importlib.util.spec_from_file_location("open_clip_tokenizer", path)
    module = importlib.util.module_from_spec(module_spec)
    module_spec.loader.exec_module(module)
    reference = module.SimpleTokenizer()
    for sentence in SENTENCES:
        assert tokenizer(sentence, add_special_tokens=False).input_ids == reference.encode(sentence)
