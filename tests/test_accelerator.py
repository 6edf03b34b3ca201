"""A run started for a GPU or TPU that JAX cannot use stops before any stage with one line giving JAX's reason; a
real config on the CPU, with no expectation, warns once.

The missing accelerator is this machine's own (no GPU, no TPU: JAX's TPU plugin, installed, fails to start), or
``JAX_PLATFORMS=cpu`` (the test session's), or a CUDA backend failure put where JAX records it.
"""

import logging

import jax
import pytest
from demo_run import cli, config_file, demo_config
from jax._src import xla_bridge

from bobjax import accelerator
from bobjax.errors import ConfigError


def test_gpu_expected_under_jax_platforms_cpu_stops(monkeypatch):
    monkeypatch.setenv("BOBJAX_ACCELERATOR", "gpu")
    with pytest.raises(accelerator.NoAcceleratorError) as error:
        accelerator.check(demo_config())
    assert str(error.value) == "BOBJAX_ACCELERATOR=gpu, but JAX runs on cpu: JAX_PLATFORMS=cpu"


def test_a_failed_cuda_backend_is_the_reason(monkeypatch):
    """Where the CUDA plugin is installed but cannot start (here: the driver is too old), JAX records its error in
    ``xla_bridge._backend_errors`` and runs on the CPU. This process's backend has started, so the check reads them
    here (not in a child process)."""
    jax.devices()
    failure = "FAILED_PRECONDITION: No visible GPU devices: CUDA driver version 12020 is older than 13000"
    monkeypatch.setattr(xla_bridge, "_backend_errors", {"cuda": failure})
    monkeypatch.setenv("BOBJAX_ACCELERATOR", "gpu")
    jax.config.update("jax_platforms", "")
    try:
        with pytest.raises(accelerator.NoAcceleratorError, match="JAX runs on cpu: the cuda backend failed to start: "
                                                                 + failure):
            accelerator.check(config_file("cub.py"))
    finally:
        jax.config.update("jax_platforms", "cpu")


def test_the_command_stops_before_any_stage_with_jax_reason(tmp_path):
    """No TPU here, with JAX free to look for one: its TPU plugin fails, and the run says so in one line."""
    result = cli("--config=configs/demo.py", f"--workdir={tmp_path}", env={"BOBJAX_ACCELERATOR": "tpu",
                                                                        "JAX_PLATFORMS": ""}, timeout=300)
    assert result.returncode == 1, result.stderr[-3000:]
    (line,) = [line for line in result.stderr.splitlines() if line.startswith("bobjax: error:")]
    assert line.startswith("bobjax: error: BOBJAX_ACCELERATOR=tpu, but JAX runs on cpu: the tpu backend failed to "
                           "start: "), line
    assert not any(tmp_path.iterdir()), "a stage or the workdir's records were written before the check"


def test_a_real_config_on_the_cpu_warns_once(monkeypatch, caplog):
    monkeypatch.delenv("BOBJAX_ACCELERATOR", raising=False)
    with caplog.at_level(logging.WARNING):
        accelerator.check(demo_config())
        assert not caplog.records, "the toy world runs on a CPU by design"
        accelerator.check(config_file("cub.py"))
    (record,) = caplog.records
    assert record.getMessage().startswith("bobjax runs on the CPU, where a real config's stages take days: "
                                          "JAX_PLATFORMS=cpu")
    assert "\n" not in record.getMessage()


@pytest.mark.parametrize("value", ["cpu", "any"])
def test_an_expected_cpu_is_silent(monkeypatch, caplog, value):
    monkeypatch.setenv("BOBJAX_ACCELERATOR", value)
    with caplog.at_level(logging.WARNING):
        accelerator.check(config_file("cub.py") if value == "cpu" else demo_config())
    assert not caplog.records


def test_an_unknown_expectation_is_named(monkeypatch):
    monkeypatch.setenv("BOBJAX_ACCELERATOR", "h100")
    with pytest.raises(ConfigError, match="BOBJAX_ACCELERATOR='h100': expected one of any, gpu, tpu, cpu"):
        accelerator.check(demo_config())
