"""Test-wide setup: the CPU only, 8 forced host devices (so sharding tests run on a CPU), cheaper compilation,
the opt-in markers, and offline Hugging Face caches (``fake_hub``: tiny models under the real ids; ``empty_hub``).

Shared helpers (tiny models, fake hub and bucket, multi-host launcher...) live in ``tests/helpers/`` and are imported
by bare name (``from tiny_sd import ...``): this file puts that folder first on ``sys.path`` before any test module
is imported, in every xdist worker too, so a test file works wherever it sits under ``tests/`` and a subprocess
script finds them the same way (``PYTHONPATH`` with that folder, see ``target_compile.py``).

Markers: ``slow`` = the long runs (the end-to-end pipelines, the multi-host runs, and the checks that take 30 s or
more of a worker: stage runs killed and resumed, programs compiled for a TPU target...; docs/development.md lists
them), skipped unless ``--runslow``; CI runs them after the default suite. ``fullsize`` = checks on full-size
architectures (SD UNets, CLIP ViT-B/16, ResNet-50...), skipped unless ``--runfullsize``; too heavy for CI, run by
hand after model changes.
``matrix`` = every stage compiled for every slice size and the 16-device run, skipped unless ``--runmatrix``; not
in CI (tens of minutes), run by hand after changing meshes or steps.

Compiling, not running, dominates tests on tiny models: LLVM's cheap optimisation level halves XLA:CPU compile
times, and a per-session persistent compilation cache lets a test that builds the same program again (a
resumed run, a rebuilt sampler, a second adapter set, the other xdist worker) load it instead of recompiling.
One cache folder per session, so no stale entry outlives a code change.
"""

import os
import shutil
import sys
import tempfile

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "helpers"))

# Must happen before jax is imported anywhere in the test session.
_FLAGS = " --xla_force_host_platform_device_count=8 --xla_backend_optimization_level=0 --xla_llvm_disable_expensive_passes=true"
os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + _FLAGS).strip()
# CPU only, also where libtpu is installed (the test extra brings it): JAX would otherwise start the TPU plugin in
# every test process and print its failed search for a TPU. Tests that compile for a TPU or GPU target do so in
# their own subprocess (tests/helpers/target_compile.py).
os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
# One cache folder per session, shared by its xdist workers: the controller imports this file first and sets the
# variable, the workers inherit it, so a tiny program one worker compiled is loaded by the other.
_OWNS_CACHE = "BOBJAX_TEST_XLA_CACHE" not in os.environ
if _OWNS_CACHE:
    os.environ["BOBJAX_TEST_XLA_CACHE"] = tempfile.mkdtemp(prefix="bobjax-test-xla-cache-")
_COMPILATION_CACHE = os.environ["BOBJAX_TEST_XLA_CACHE"]
os.environ["JAX_COMPILATION_CACHE_DIR"] = _COMPILATION_CACHE
os.environ["JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS"] = "0.5"

import pytest  # noqa: E402


_OPT_IN = {  # marker -> (command-line flag, why it is off by default)
    "slow": ("--runslow", "long end-to-end run; CI runs it after the default suite (--runslow -m slow)"),
    "fullsize": ("--runfullsize", "full-size architecture check; run with --runfullsize"),
    "matrix": ("--runmatrix", "every stage compiled for every slice size, and a 16-device run: tens of minutes, more "
                              "than CI's time holds; run with --runmatrix after changing meshes or steps"),
}


def pytest_addoption(parser):
    parser.addoption("--runslow", action="store_true", help="also run the long end-to-end runs (marker: slow)")
    parser.addoption("--runfullsize", action="store_true",
                     help="also run the checks on full-size architectures (marker: fullsize)")
    parser.addoption("--runmatrix", action="store_true",
                     help="also compile every stage for every slice size and run on 16 devices (marker: matrix)")


def pytest_collection_modifyitems(config, items):
    for marker, (flag, reason) in _OPT_IN.items():
        if config.getoption(flag):
            continue
        skip = pytest.mark.skip(reason=reason)
        for item in items:
            if marker in item.keywords:
                item.add_marker(skip)


@pytest.fixture
def one_device(monkeypatch):
    """Stages build their mesh over the first device only (faster on a CPU than 8 forced host devices), and the
    run's up-front mesh check sees the same device."""
    import jax

    from bobjax import meshes

    monkeypatch.setattr(meshes, "stage_devices", lambda stage, devices=None: jax.devices()[:1])


@pytest.fixture
def fake_accelerator(monkeypatch):
    """``fake_accelerator(gib)``: the stages' fit check (``bobjax.fit.device_to_check``) sees a device with
    ``gib`` GiB for JAX, as on a GPU or TPU, so they compile their steps ahead and check them as there."""
    import types

    from bobjax import fit

    def with_memory(gib: float) -> None:
        limit = int(gib * 2**30)
        device = types.SimpleNamespace(device_kind="TPU v5 lite", memory_stats=lambda: {"bytes_limit": limit})
        monkeypatch.setattr(fit, "device_to_check", lambda: device)

    return with_memory


def pytest_sessionfinish(session, exitstatus):
    if _OWNS_CACHE:  # the controller, after its workers are done
        shutil.rmtree(_COMPILATION_CACHE, ignore_errors=True)


@pytest.fixture(scope="session")
def _session_hub(tmp_path_factory):
    from fake_hub import FakeHub

    return FakeHub(str(tmp_path_factory.mktemp("hf_home")))


@pytest.fixture
def fake_hub(_session_hub, monkeypatch):
    """The session's offline Hugging Face cache (tests/helpers/fake_hub.py); ``fake_hub.add(repo_id)`` builds a repo
    once."""
    return _session_hub.use(monkeypatch)


@pytest.fixture
def empty_hub(tmp_path, monkeypatch):
    """An offline Hugging Face cache that holds nothing."""
    from fake_hub import FakeHub

    return FakeHub(str(tmp_path / "hf_home")).use(monkeypatch)
