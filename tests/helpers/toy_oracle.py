"""One toy-world oracle per test process for each set of training arguments.

``fidelity.train_oracle`` is deterministic (its arguments fix the images, the init and the batches), and the
fidelity, report, quality and filter tests each train the same one, most of their time: ``trained_oracle`` trains
it once per process, and the ``shared_oracle`` fixture makes the stages' ``fidelity.train_oracle`` calls go through
it. The code under test still picks the arguments (a stage that passed others would get a fresh oracle).
"""

import functools
import inspect

import pytest

from bobjax.toyworld import fidelity

_train_oracle = fidelity.train_oracle


@functools.lru_cache(maxsize=None)
def _trained(spec, options: tuple):
    return _train_oracle(spec, **dict(options))


def trained_oracle(spec, **kwargs) -> fidelity.Oracle:
    """``fidelity.train_oracle(spec, **kwargs)``, trained once per process for the same arguments (defaults filled
    in, so an argument passed or left at its default is the same oracle)."""
    bound = inspect.signature(_train_oracle).bind(spec, **kwargs)
    bound.apply_defaults()
    options = dict(bound.arguments)
    return _trained(options.pop("spec"), tuple(sorted(options.items())))


@pytest.fixture
def shared_oracle(monkeypatch):
    monkeypatch.setattr(fidelity, "train_oracle", trained_oracle)
