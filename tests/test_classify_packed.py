"""Packed grid points (bobjax/classify/packed.py): two points of a learning rate x weight decay x lambda grid trained in
one program end as the same points trained one by one (the classify stage), also when the pack is killed between two
points' checkpoints and resumed, packed or one point alone.

Tolerances: the packed update maps the lone one over the points, so it computes the same sums, but XLA orders a batched
convolution's sums differently, and AdamW divides by the root of the squared gradients, which magnifies that rounding
where a gradient is near zero: such an element moves by up to Adam's bound (the learning rate a step) in either run.
So per leaf (parameters, BatchNorm statistics, AdamW moments) at most 5 % of the elements (or 2) may differ by more than
1e-3 of the leaf's largest entry, and none by more than twice Adam's bound over the run (measured 2026-12-07: at most
144 of 4,608, 3 %, in a first moment, and 7e-4 in a weight, against 2 x 6 x 3e-3). A point trained with another point's
values differs by order one in most elements. The top-1 on validation and test agree within one image."""

import jax
import numpy as np
import pytest

from bobjax import classify, fit, meshes, run_folder
from bobjax.classify import packed, programs
from bobjax.data import make_splits
from bobjax.training import loop
from classify_run import compilation_cache, saved_state, small_config
from synthetic_data import write_synthetic

# (learning rate, weight decay, lambda): the points differ in every field a pack stacks.
GRID = [(1e-3, 5e-4, 0.8), (3e-3, 1e-2, 0.5)]


class _Killed(Exception):
    pass


def _points(root) -> list:
    """The grid's runs in ``root/p<k>``, on lambda batches of a synthetic set they share (``root/shared``), as a sweep's
    points share one (bobjax.share); 2 epochs of 3 steps."""
    configs = [small_config(**{"classify.mixing": "lambda", "classify.steps_per_epoch": 3, "classify.learning_rate": lr,
                               "classify.weight_decay": wd, "classify.real_weight": lam}) for lr, wd, lam in GRID]
    class_names = make_splits(configs[0].data, configs[0].seed).class_names
    rng = np.random.default_rng(0)
    labels = np.repeat(np.arange(len(class_names)), 4)
    write_synthetic(str(root / "shared"), class_names, rng.integers(0, 256, (len(labels), 40, 48, 3), np.uint8), labels)
    points = []
    for k, config in enumerate(configs):
        workdir = root / f"p{k}"
        workdir.mkdir(parents=True)
        run_folder.link_path(workdir, "generate").write_text("../shared\n")
        points.append((config, str(workdir)))
    return points


def _assert_same_run(config, got: dict, want: dict, got_dir: str, want_dir: str) -> None:
    """Metrics within one image, and the last checkpoint's state within the tolerances above."""
    splits = make_splits(config.data, config.seed)
    varying = ("test", "validation_history", "validation_top1", "best_epoch")
    assert {k: v for k, v in got.items() if k not in varying} == {k: v for k, v in want.items() if k not in varying}
    one_image = 100 / len(splits.validation)
    for a, b in zip(got["validation_history"], want["validation_history"], strict=True):
        assert abs(a - b) <= one_image + 1e-9, (got["validation_history"], want["validation_history"])
    assert abs(got["test"]["top1"] - want["test"]["top1"]) <= 100 / len(splits.test) + 1e-9
    got_state, want_state = saved_state(got_dir), saved_state(want_dir)
    assert int(got_state["step"]) == int(want_state["step"])
    adam_bound = 2 * int(want_state["step"]) * config.classify.learning_rate
    for (path, a), (_, b) in zip(jax.tree_util.tree_leaves_with_path(got_state),
                                 jax.tree_util.tree_leaves_with_path(want_state), strict=True):
        off = np.abs(a - b) > 1e-3 * max(float(np.abs(b).max()), 1e-30)
        name = jax.tree_util.keystr(path)
        assert off.sum() <= max(2, off.size // 20), f"{name}: {off.sum()} of {off.size} elements differ"
        assert float(np.abs(a - b).max()) <= adam_bound, name


@pytest.fixture(scope="module")
def xla_cache(tmp_path_factory):
    """One compilation cache for the module: the pack and the lone runs compile once for every test."""
    with compilation_cache(str(tmp_path_factory.mktemp("xla_cache"))):
        yield


@pytest.fixture(scope="module")
def lone(tmp_path_factory, xla_cache):
    """The grid's points trained one by one by the classify stage (on one device, as ``one_device``):
    ``[(metrics, workdir)]``."""
    root = tmp_path_factory.mktemp("lone")
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(meshes, "stage_devices", lambda stage, devices=None: jax.devices()[:1])
        return [(classify.run(config, workdir), workdir) for config, workdir in _points(root)]


def test_runs_share_a_pack_key_if_they_differ_only_in_the_stacked_fields_and_read_one_synthetic_set(tmp_path):
    (first, first_dir), (second, second_dir) = _points(tmp_path)
    assert [getattr(first.classify, f) != getattr(second.classify, f) for f in programs.PACKED_FIELDS] == [True] * 3
    assert packed.pack_key(first, first_dir) == packed.pack_key(second, second_dir)
    other = small_config(**{**{f"classify.{f}": getattr(second.classify, f) for f in programs.PACKED_FIELDS},
                            "classify.mixing": "lambda", "classify.steps_per_epoch": 3, "classify.mix_prob": 0.5})
    assert packed.pack_key(other, second_dir) != packed.pack_key(second, second_dir)
    own = tmp_path / "own"  # A run with a synthetic set of its own (made before sharing) reads other images.
    own.mkdir()
    assert packed.pack_key(second, str(own)) != packed.pack_key(second, second_dir)
    real_only = [small_config(**{"classify.learning_rate": lr}) for lr in (1e-3, 3e-3)]  # No synthetic set to read.
    assert packed.pack_key(real_only[0], first_dir) == packed.pack_key(real_only[1], str(own))


@pytest.mark.slow
def test_a_packed_grid_ends_as_its_points_trained_one_by_one(tmp_path, lone, one_device):
    points = _points(tmp_path)
    finished = packed.run(points)
    assert list(finished) == [w for _, w in points]
    for (config, workdir), (want, want_dir) in zip(points, lone, strict=True):
        _assert_same_run(config, finished[workdir], want, workdir, want_dir)
        assert (run_folder.stage_dir(workdir, "classify") / "metrics.json").exists()
        assert list((run_folder.stage_dir(workdir, "classify") / "tensorboard").iterdir())
    # Each point trained with its own values: their weights differ.
    first, second = (saved_state(w)["params"] for _, w in points[:2])
    assert max(float(np.max(np.abs(a - b))) for a, b in zip(jax.tree.leaves(first), jax.tree.leaves(second))) > 1e-3


@pytest.mark.slow
@pytest.mark.parametrize("resume", ["packed", "alone"])
def test_a_killed_pack_resumes_to_the_points_trained_one_by_one(tmp_path, lone, monkeypatch, one_device, resume):
    """Killed after the first point's second checkpoint (the other stands at its first): the rerun trains the other
    from epoch 1 (a pack of its own) and only tests the first; or each point is rerun alone by the classify stage."""
    points = _points(tmp_path)
    saves, save = [], loop.Checkpoints.save

    def save_then_die(self, *args, **kwargs):
        save(self, *args, **kwargs)
        saves.append(args[0])
        if len(saves) == len(GRID) + 1:
            raise _Killed

    with monkeypatch.context() as patch:
        patch.setattr(loop.Checkpoints, "save", save_then_die)
        with pytest.raises(_Killed):
            packed.run(points)
    assert [int(saved_state(w)["step"]) for _, w in points] == [6, 3]
    saves.clear()
    monkeypatch.setattr(loop.Checkpoints, "save", lambda self, *a, **k: (saves.append(a[0]), save(self, *a, **k)))
    if resume == "packed":
        finished = packed.run(points)
    else:
        finished = {workdir: classify.run(config, workdir) for config, workdir in points}
    assert saves == [2], "only the point killed at its first epoch trains, its second epoch"
    for (config, workdir), (want, want_dir) in zip(points, lone, strict=True):
        _assert_same_run(config, finished[workdir], want, workdir, want_dir)


def test_a_pack_that_cannot_fit_splits_in_halves_and_leaves_what_fits_no_pair_to_run_alone(tmp_path, monkeypatch,
                                                                                             one_device):
    """The device check (bobjax.fit) refuses packs of more than ``fits`` points: five points train as 2 + 2 + 1 after
    the five were refused; when no pair fits, nothing trains packed and every point is left to its lone run (which
    stops with the fit check's own message if one point cannot fit either)."""
    config, workdir = _points(tmp_path)[0]
    points = [(config, workdir)] * 5  # Five points, as far as the splitting is concerned.
    for fits, want_sizes, want_finished in ((2, [5, 2, 2, 1], 5), (1, [5, 2], 0)):
        sizes = []

        def train(built, pack, compiled, fits=fits, sizes=sizes):
            sizes.append(len(pack))
            if len(pack) > fits:
                raise fit.DoesNotFit(f"{len(pack)} points need more than the device has")
            return {f"{id(one)}": {} for one in pack}

        monkeypatch.setattr(packed, "_train", train)
        assert len(packed.run(points)) == want_finished and sizes == want_sizes
