"""The real CLIP BPE tokenizer files, rebuilt offline from the vocabulary bobjax ships.

Tests and demos need a genuine ``CLIPTokenizer`` (real token ids, 49408 entries) on machines without a model
hub. OpenAI's BPE merge list ships in ``bobjax/assets/bpe_simple_vocab_16e6.txt.gz``; the Hugging Face
``vocab.json`` / ``merges.txt`` pair is a deterministic function of it (the construction of OpenAI CLIP's
``SimpleTokenizer``), so we rebuild the pair instead of downloading it.
"""

from __future__ import annotations

import gzip
import json
import os
import tempfile
from importlib import resources

BOS_TOKEN = "<|startoftext|>"
EOS_TOKEN = "<|endoftext|>"
VOCAB_SIZE = 49408
# CLIP keeps the first 49152 - 256 - 2 merges of the 16e6 list: 256 byte tokens (x2 with '</w>') + the merges
# + 2 special tokens = 49408 ids.
_NUM_MERGES = 49152 - 256 - 2


def bytes_to_unicode() -> dict[int, str]:
    """GPT-2/CLIP's reversible byte -> printable-character map, so BPE never sees whitespace or control bytes."""
    printable = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1))
    printable += list(range(ord("®"), ord("ÿ") + 1))
    mapping = {b: chr(b) for b in printable}
    extra = 0
    for b in range(256):
        if b not in mapping:
            mapping[b] = chr(256 + extra)
            extra += 1
    return mapping  # insertion order (printable bytes first) fixes the first 256 token ids


def read_clip_merges(bpe_file: str | os.PathLike | None = None) -> list[tuple[str, str]]:
    """The merge pairs CLIP uses, in priority order, from the gzipped 16e6 BPE list (bobjax's copy by default)."""
    if bpe_file is None:
        bpe_file = resources.files("bobjax") / "assets" / "bpe_simple_vocab_16e6.txt.gz"
    with gzip.open(bpe_file, "rt", encoding="utf-8") as f:
        lines = f.read().split("\n")
    merges = [tuple(line.split()) for line in lines[1 : _NUM_MERGES + 1]]
    bad = [m for m in merges if len(m) != 2]
    if len(merges) != _NUM_MERGES or bad:
        raise ValueError(
            f"{bpe_file} is not a CLIP BPE merge list: expected {_NUM_MERGES} 'a b' lines after the header, "
            f"got {len(merges)} with {len(bad)} malformed"
        )
    return merges


def clip_vocab(merges: list[tuple[str, str]]) -> dict[str, int]:
    """Token -> id: byte tokens, byte tokens + '</w>', merged pairs, then the two special tokens."""
    byte_tokens = list(bytes_to_unicode().values())
    tokens = byte_tokens + [t + "</w>" for t in byte_tokens] + ["".join(m) for m in merges]
    tokens += [BOS_TOKEN, EOS_TOKEN]
    vocab = {t: i for i, t in enumerate(tokens)}
    if len(vocab) != VOCAB_SIZE:
        raise ValueError(f"rebuilt CLIP vocabulary has {len(vocab)} distinct tokens, expected {VOCAB_SIZE}")
    return vocab


def write_clip_tokenizer_files(out_dir: str | os.PathLike) -> str:
    """Writes ``vocab.json`` and ``merges.txt`` for ``transformers.CLIPTokenizer`` into ``out_dir``; returns it."""
    out_dir = os.fspath(out_dir)
    os.makedirs(out_dir, exist_ok=True)
    merges = read_clip_merges()
    with open(os.path.join(out_dir, "vocab.json"), "w", encoding="utf-8") as f:
        json.dump(clip_vocab(merges), f, ensure_ascii=False)
    with open(os.path.join(out_dir, "merges.txt"), "w", encoding="utf-8") as f:
        f.write("#version: 0.2\n")
        f.writelines(f"{a} {b}\n" for a, b in merges)
    return out_dir


def load_clip_tokenizer(folder: str):
    """The tokenizer of a transformers CLIP folder, or CLIP's own vocabulary (rebuilt here) without one."""
    from transformers import CLIPTokenizer

    if folder and os.path.isfile(os.path.join(folder, "vocab.json")):
        return CLIPTokenizer.from_pretrained(folder)
    return CLIPTokenizer.from_pretrained(write_clip_tokenizer_files(tempfile.mkdtemp()))
