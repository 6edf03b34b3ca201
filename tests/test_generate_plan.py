"""Prompt plans: BOB draws contexts uniformly over the whole bank; the ablations keep their promises."""

import collections
import dataclasses

import numpy as np
import pytest

from bobjax import config_lib
from bobjax.errors import ConfigError
from bobjax.generate import plan as plans
from bobjax.generate.listed_contexts import read_contexts_file


@dataclasses.dataclass
class Bank:
    labels: np.ndarray
    backgrounds: list
    poses: list


def unique_bank(num_classes=3, per_class=10):
    """Every entry has its own (background, pose), so a context identifies the bank index it came from."""
    n = num_classes * per_class
    return Bank(np.arange(n) % num_classes, [f"bg{i}" for i in range(n)], [f"pose{i}" for i in range(n)])


CLASSES = ["alpha", "beta", "gamma"]


def make(plan, counts=(2000, 2000, 2000), bank=None, prompt=config_lib.BOB_PROMPT, **kw):
    return plans.make_plan(plan, class_names=CLASSES, descriptor="bird", counts=counts, prompt=prompt, seed=0,
                           bank=bank if bank is not None else unique_bank(), **kw)


def test_bob_is_uniform_over_the_whole_bank_for_every_class():
    bank = unique_bank()
    images = make("bob", bank=bank)
    for label in range(3):
        counts = collections.Counter(int(im.background[2:]) for im in images if im.label == label)
        observed = np.array([counts.get(j, 0) for j in range(30)])
        expected = 2000 / 30
        chi2 = ((observed - expected) ** 2 / expected).sum()
        assert chi2 < 58.3, f"class {label}: chi-square {chi2:.1f} over 29 dof exceeds the 99.9% quantile"
        # Contexts of every class come from images of every class (marginalization).
        assert {j % 3 for j in counts} == {0, 1, 2}
    assert all(im.background[2:] == im.pose[4:] for im in images), "background and pose stay paired"


def test_within_class_never_crosses_classes():
    bank = unique_bank()
    for im in make("within_class", counts=(300, 300, 300), bank=bank):
        assert int(im.background[2:]) % 3 == im.label


def test_independent_breaks_the_pairing():
    images = make("independent", counts=(3000, 0, 0))
    paired = sum(im.background[2:] == im.pose[4:] for im in images)
    assert paired < 0.1 * len(images)


def test_prompt_text_and_class_only():
    im = make("bob", counts=(1, 0, 0))[0]
    assert im.prompt == f"a bird photo of a alpha in the {im.background} background with the {im.pose} pose"
    dd = make("class_only", counts=(0, 2, 0), prompt=config_lib.CLASS_PROMPT)
    assert [d.prompt for d in dd] == ["a bird photo of a beta"] * 2 and dd[0].background == ""
    assert dd[0].seed != dd[1].seed


def test_image_plan_does_not_depend_on_other_counts():
    small = make("bob", counts=(5, 5, 5))
    large = make("bob", counts=(50, 7, 5))
    pick = lambda images: {(i.label, i.index): i for i in images}
    assert all(pick(large)[key] == value for key, value in pick(small).items())
    assert len({i.image_id for i in large}) == len(large)


def test_shared_sequence_repeats_contexts_and_noise_across_classes():
    images = make("bob", counts=(4, 4, 4), shared_sequence=True)
    by_class = [[(i.background, i.seed) for i in images if i.label == c] for c in range(3)]
    assert by_class[0] == by_class[1] == by_class[2]
    assert by_class[0] != [(i.background, i.seed) for i in make("bob", counts=(4, 4, 4)) if i.label == 1]


def test_long_tail_counts():
    assert plans.images_per_class([10, 20, 40], 100, long_tail_total=200, long_tail_m=6) == [140, 80, 0]
    assert plans.images_per_class([10, 20], 100, 0, 0) == [100, 100]


def test_bad_plans_are_named():
    with pytest.raises(ConfigError, match="'bobo'"):
        make("bobo")
    with pytest.raises(ConfigError, match="caption bank"):
        make("bob", bank=Bank(np.zeros(0, int), [], []))
    with pytest.raises(ConfigError, match="background"):
        make("bob", prompt=config_lib.CLASS_PROMPT)
    with pytest.raises(ConfigError, match="'class'"):
        make("class_only", prompt="a photo of a {class}")
    with pytest.raises(ConfigError, match="'gamma'"):
        make("within_class", bank=Bank(np.array([0, 1]), ["a", "b"], ["c", "d"]))


def test_listed_draws_every_listed_context_and_no_other(tmp_path):
    path = tmp_path / "contexts.tsv"
    path.write_text("# invented\nsky\tflying\n\nreef\tswimming\nmoon\tsitting\n")
    listed = read_contexts_file(str(path))
    assert listed == [("sky", "flying"), ("reef", "swimming"), ("moon", "sitting")]
    images = make("listed", counts=(300, 300, 300), bank=Bank(np.zeros(0, int), [], []), listed=listed)
    for label in range(3):
        drawn = collections.Counter((im.background, im.pose) for im in images if im.label == label)
        assert set(drawn) == set(listed) and min(drawn.values()) > 60
    assert images[0].prompt == f"a bird photo of a alpha in the {images[0].background} background with the " \
                               f"{images[0].pose} pose"


def test_shipped_toyworld_contexts_cover_the_world():
    from bobjax import toyworld

    listed = read_contexts_file("bobjax:toyworld_contexts.tsv")
    assert set(listed) == {(b, p) for b in toyworld.BACKGROUNDS for p in toyworld.POSES}


def test_bad_contexts_files_are_named(tmp_path):
    with pytest.raises(ConfigError, match="contexts_file, which is empty"):
        read_contexts_file("")
    with pytest.raises(ConfigError, match="no such file"):
        read_contexts_file(str(tmp_path / "missing.tsv"))
    bad = tmp_path / "bad.tsv"
    bad.write_text("sky\tflying\nreef swimming\n")
    with pytest.raises(ConfigError, match=r"bad.tsv', line 2: expected 'background<TAB>pose'"):
        read_contexts_file(str(bad))
    with pytest.raises(ConfigError, match="lists none"):
        make("listed", listed=[])


def test_fixed_noise_plan_changes_only_the_class_name():
    planned = make("bob", counts=(3, 5, 0))
    grid = plans.fixed_noise_plan(planned, CLASSES, "bird", config_lib.BOB_PROMPT, rows=2)
    assert [(p.label, p.class_name) for p in grid] == [(0, "alpha"), (0, "alpha"), (1, "beta"), (1, "beta"),
                                                       (2, "gamma"), (2, "gamma")]
    for label in range(3):
        column = grid[2 * label:2 * label + 2]
        assert [(p.seed, p.background, p.pose) for p in column] == [(t.seed, t.background, t.pose) for t in planned[:2]]
        assert [p.prompt for p in column] == [t.prompt.replace("alpha", CLASSES[label]) for t in planned[:2]]
