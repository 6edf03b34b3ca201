"""Post-processing of VLM answers: cleaning, class-name leaks (re-ask, then removal), empty answers, counts."""

import numpy as np

from bobjax.caption import answers, prompts
from bobjax.caption.answers import EMPTY_REASKED, LEAK_REASKED, LEAK_REMOVED


class Scripted:
    """A captioner whose n-th call returns the n-th list of the script; it records every call's prompts."""

    def __init__(self, *script):
        self.script = list(script)
        self.calls = []

    def __call__(self, images, prompts_):
        assert len(images) == len(prompts_)
        self.calls.append(list(prompts_))
        responses = self.script[len(self.calls) - 1]
        assert len(responses) == len(prompts_), "the script and the batch disagree"
        return responses


IMAGES = [np.zeros((4, 4, 3), np.uint8), np.ones((4, 4, 3), np.uint8)]
CLASS = answers.class_words("crimson forkedtail", "bird")


def test_clean_strips_whitespace_and_trailing_period():
    assert answers.clean("  Grass, sky, hangar.\n") == "Grass, sky, hangar"
    assert answers.clean("A bird soars\nwith wings  spread wide...") == "A bird soars with wings spread wide"
    assert answers.clean(" . ") == ""
    assert answers.clean("St. Louis airport") == "St. Louis airport"


def test_class_words_skip_descriptor_and_trivial_words():
    assert CLASS == ["crimson", "forkedtail"]
    assert answers.class_words("Greater Bird of Paradise", "bird") == ["greater", "paradise"]
    assert answers.class_words("Chuck will's Widow", "bird") == ["chuck", "will's", "widow"]
    assert answers.class_words("Boeing 737-200", "aircraft") == ["boeing", "737-200"]


def test_leaks_are_whole_words_any_case_singular_or_plural():
    assert answers.leaked("Two CRIMSON birds", CLASS) == ["crimson"]
    assert answers.leaked("forkedtails on a wire", CLASS) == ["forkedtail"]
    assert answers.leaked("crimsonish sky, forked tail", CLASS) == []
    assert answers.remove_words("Crimson forkedtails, perched on a branch", CLASS) == "perched on a branch"
    assert answers.remove_words("sky, crimson, grass.", CLASS) == "sky, grass"


def test_leak_is_reasked_once_with_stricter_prompt_then_removed():
    ask = Scripted(["A crimson forkedtail in green grass", "perched on a branch"], ["crimson grass"])
    got = answers.resolve(ask, IMAGES, ["background", "pose"], [CLASS, CLASS], "bird")
    assert ask.calls == [
        [prompts.question("background", "bird"), prompts.question("pose", "bird")],
        [prompts.reask("background", "bird", ["crimson", "forkedtail"])],
    ]
    assert '"crimson", "forkedtail"' in ask.calls[1][0] and "bird" in ask.calls[1][0]
    assert [a.text for a in got] == ["grass", "perched on a branch"]
    assert [a.events for a in got] == [[LEAK_REASKED, LEAK_REMOVED], []]
    assert got[0].raw == ["A crimson forkedtail in green grass", "crimson grass"]


def test_leak_fixed_by_the_reask_is_kept():
    ask = Scripted(["forkedtail.", "diving"], ["green grass."])
    got = answers.resolve(ask, IMAGES, ["background", "pose"], [CLASS, CLASS], "bird")
    assert ask.calls[1] == [prompts.reask("background", "bird", CLASS)], "every class word is forbidden"
    assert [a.text for a in got] == ["green grass", "diving"]
    assert [a.events for a in got] == [[LEAK_REASKED], []]


def test_empty_is_reasked_once_then_recorded_empty():
    ask = Scripted(["", " . "], ["", "perched"])
    got = answers.resolve(ask, IMAGES, ["background", "pose"], [CLASS, CLASS], "bird")
    assert ask.calls[1] == [prompts.reask("background", "bird", []), prompts.reask("pose", "bird", [])]
    assert "empty" in ask.calls[1][0]
    assert [a.text for a in got] == ["", "perched"]
    assert answers.count([a.text for a in got], [a.events for a in got]) == {
        "answers": 2, "empty": 1, EMPTY_REASKED: 2, LEAK_REASKED: 0, LEAK_REMOVED: 0}


def test_without_reask_leaks_are_removed_at_once():
    ask = Scripted(["crimson sky", ""])
    got = answers.resolve(ask, IMAGES, ["background", "pose"], [CLASS, CLASS], "bird", reask=False)
    assert len(ask.calls) == 1
    assert [a.text for a in got] == ["sky", ""]
    assert [a.events for a in got] == [[LEAK_REMOVED], []]
