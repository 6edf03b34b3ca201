"""Raw VLM responses -> caption bank entries: cleaned, class-agnostic, and counted.

A caption that names the class ("a crimson forkedtail perched") would teach the fine-tuned model to tie that
context to that class again, which is the spurious link BOB removes. So an answer that uses a word of its
image's class name is asked once more with a stricter instruction, and if it still does, those words are cut
out. An empty answer is asked once more too, then kept empty. Every case is counted for ``stats.json``.
"""

from __future__ import annotations

import collections
import dataclasses
import re
from collections.abc import Callable, Iterable, Sequence

import numpy as np

from bobjax.caption import prompts

# Words of a class name that say nothing about the class ("Chuck will's widow", "Boeing 737-200").
TRIVIAL_WORDS = frozenset({"a", "an", "the", "of", "and", "or", "in", "on", "at", "to", "for", "with", "by", "from"})

# Events recorded per answer; ``stats.json`` counts them.
LEAK_REASKED, LEAK_REMOVED, EMPTY_REASKED = "leak_reasked", "leak_removed", "empty_reasked"
EVENTS = (LEAK_REASKED, LEAK_REMOVED, EMPTY_REASKED)

_WORD = re.compile(r"[^\W_]+(?:['-][^\W_]+)*")

# ``ask(images, prompts) -> responses``: one response per (image, prompt) pair, in order.
AskFn = Callable[[Sequence[np.ndarray], Sequence[str]], list[str]]


@dataclasses.dataclass
class Answer:
    text: str
    raw: list[str]  # Every response the VLM gave, in order: the first, then the re-ask's.
    events: list[str]


def clean(response: str) -> str:
    """Whitespace collapsed to single spaces (a TSV row is one line), trailing periods stripped."""
    return " ".join(response.split()).rstrip(".").strip()


def words(text: str) -> list[str]:
    return _WORD.findall(text.lower())


def class_words(class_name: str, descriptor: str) -> list[str]:
    """The words of ``class_name`` that would identify the class, in order (not the descriptor, not "of")."""
    skip = TRIVIAL_WORDS | set(words(descriptor))
    return list(dict.fromkeys(w for w in words(class_name) if w not in skip))


def _forms(word: str) -> tuple[str, ...]:
    return word, word + "s", word + "es"


def leaked(text: str, forbidden: Iterable[str]) -> list[str]:
    """The forbidden words that ``text`` uses, case-insensitively, singular or plural."""
    used = set(words(text))
    return [w for w in forbidden if used.intersection(_forms(w))]


def remove_words(text: str, forbidden: Iterable[str]) -> str:
    """``text`` without the forbidden words (and their plurals), its spacing and punctuation tidied."""
    forms = sorted({f for w in forbidden for f in _forms(w)}, key=len, reverse=True)
    if not forms:
        return text
    pattern = r"(?<![\w'-])(?:" + "|".join(map(re.escape, forms)) + r")(?![\w'-])"
    text = re.sub(pattern, " ", text, flags=re.IGNORECASE)
    text = re.sub(r"\s+([,;:])", r"\1", " ".join(text.split()))
    text = re.sub(r"([,;:])(?:\s*[,;:])+", r"\1", text)
    return clean(text.strip(" ,;:"))


def resolve(ask: AskFn, images: Sequence[np.ndarray], attributes: Sequence[str], forbidden: Sequence[Sequence[str]],
            descriptor: str, reask: bool = True) -> list[Answer]:
    """Answers to ``question(attributes[i])`` about ``images[i]``, with re-asks batched into one more call.

    ``forbidden[i]`` are the class words of image ``i``. Without ``reask``, leaks are cut out at once.
    """
    responses = ask(images, [prompts.question(a, descriptor) for a in attributes])
    answers = [Answer(clean(r), [r], []) for r in responses]
    if reask:
        # (index, words to forbid): every class word after a leak, none after an empty answer.
        again = [(i, forbidden[i] if leaked(a.text, forbidden[i]) else []) for i, a in enumerate(answers)]
        again = [(i, words_i) for i, words_i in again if words_i or not answers[i].text]
        if again:
            second = ask([images[i] for i, _ in again],
                         [prompts.reask(attributes[i], descriptor, words_i) for i, words_i in again])
            for (i, words_i), response in zip(again, second):
                answers[i].events.append(LEAK_REASKED if words_i else EMPTY_REASKED)
                answers[i].raw.append(response)
                answers[i].text = clean(response)
    for answer, words_i in zip(answers, forbidden):
        if leaked(answer.text, words_i):
            answer.events.append(LEAK_REMOVED)
            answer.text = remove_words(answer.text, words_i)
    return answers


def count(texts: Iterable[str], events: Iterable[Iterable[str]]) -> dict[str, int]:
    """``stats.json``'s counts: answers, empty answers, and each re-ask / removal event."""
    texts = list(texts)
    counter = collections.Counter(e for per_answer in events for e in per_answer)
    return {"answers": len(texts), "empty": sum(not t for t in texts), **{e: counter[e] for e in EVENTS}}
