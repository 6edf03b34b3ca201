"""The two questions BOB asks a VLM about every real training image, and their stricter re-asks.

The object is only ever called "a {descriptor}" (bird, aircraft, ...), never by its class, so that the answers
describe context that any class can be put in: that is what lets generation pair a class with another class's
background and pose.
"""

from __future__ import annotations

from collections.abc import Sequence

ATTRIBUTES = ("background", "pose")

_QUESTIONS = {
    "background": "What is the background of this image of a {descriptor}? Answer in as few words as possible.",
    "pose": "What is the pose of the {descriptor} in this image? Answer in as few words as possible.",
}
_NO_CLASS = (" Do not name the species, breed, make, model or type of the {descriptor}, and do not use the words"
             " {words}.")
_NOT_EMPTY = " Answer with a short phrase; do not leave the answer empty."


def question(attribute: str, descriptor: str) -> str:
    """The paper's question about ``attribute`` (``background`` or ``pose``)."""
    return _QUESTIONS[attribute].format(descriptor=descriptor)


def reask(attribute: str, descriptor: str, forbidden: Sequence[str]) -> str:
    """The question once more: forbidding the class words an answer used, or, with none, asking for any answer."""
    if forbidden:
        words = ", ".join(f'"{w}"' for w in forbidden)
        return question(attribute, descriptor) + _NO_CLASS.format(descriptor=descriptor, words=words)
    return question(attribute, descriptor) + _NOT_EMPTY
