"""bobjax.fit: one meaning of "fits" for the stages' check on their device and for ``python -m bobjax.aot``'s verdict
on a target."""

import json
import types

import pytest

GIB = 2**30


def _compiled(arguments, outputs, aliased, temporaries, code=0):
    memory = types.SimpleNamespace(argument_size_in_bytes=arguments * GIB, output_size_in_bytes=outputs * GIB,
                                   alias_size_in_bytes=aliased * GIB, temp_size_in_bytes=temporaries * GIB,
                                   generated_code_size_in_bytes=code * GIB)
    return types.SimpleNamespace(memory_analysis=lambda: memory)


def _device(limit_gib):
    return types.SimpleNamespace(device_kind="TPU v5 lite", memory_stats=lambda: {"bytes_limit": limit_gib * GIB})


def test_fits_tight_and_does_not_fit_are_read_against_what_jax_may_use():
    from bobjax import fit

    assert fit.verdict(89, 100) == "fits"
    assert fit.verdict(91, 100) == "tight"  # Less than 10 % left.
    assert fit.verdict(100, 100) == "tight"
    assert fit.verdict(101, 100) == "does not fit"
    assert fit.describe(50, 100, "x", "here", "config.a") is None


def test_a_stage_stops_before_its_first_step_when_its_step_cannot_fit_the_device(caplog):
    """What the stages call on an accelerator after compiling their step."""
    from bobjax import fit
    from bobjax.errors import ConfigError

    compiled = _compiled(6, 1, 1, 9)  # 15 GiB.
    fit.check_device(compiled, "the fine-tuning step", "config.finetune.batch_size", _device(20))  # 75 % of 20
    assert "less than" not in caplog.text
    fit.check_device(compiled, "the fine-tuning step", "config.finetune.batch_size", _device(16))  # 94 %: warns
    assert "less than 10% left; consider config.finetune.batch_size" in caplog.text
    with pytest.raises(ConfigError, match=r"needs 15.00 GiB .* 14.00 GiB .*change config.finetune.batch_size"):
        fit.check_device(compiled, "the fine-tuning step", "config.finetune.batch_size", _device(14))
    fit.check_device(compiled, "the fine-tuning step", "x", types.SimpleNamespace(memory_stats=lambda: None))


def test_a_size_bobjax_chose_itself_is_refused_when_tight():
    """A pack of grid points (classify.packed) is bobjax's choice, not the user's: tight is refused, so the pack is
    halved rather than run with less than 10 % left."""
    from bobjax import fit

    assert [fit.refused(said, headroom=False) for said in ("fits", "tight", "does not fit")] == [False, False, True]
    assert [fit.refused(said, headroom=True) for said in ("fits", "tight", "does not fit")] == [False, True, True]
    compiled = _compiled(6, 1, 1, 9)  # 15 GiB: tight on 16.
    fit.check_device(compiled, "a packed step", "x", _device(16))
    with pytest.raises(fit.DoesNotFit, match="less than 10% left"):
        fit.check_device(compiled, "a packed step", "x", _device(16), headroom=True)
    fit.check_device(compiled, "a packed step", "x", _device(20), headroom=True)  # 75 %: fits


def test_the_compile_tool_gives_a_target_the_verdict_a_stage_gives_its_device():
    from bobjax import fit, targets
    from bobjax.aot import compiled_figures

    target = targets.Target("tiny", targets.CHIPS["h100"], 1, ("gpu",))
    figures = compiled_figures.Figures("finetune", "LoRA step", "", arguments=20 * GIB, outputs=0, aliased=0,
                             temporaries=30 * GIB, code=0, flops=1.0, bytes_accessed=1.0, calls=1, compile_s=0.0,
                             attention={})
    usable = targets.CHIPS["h100"].hbm_bytes * 0.75  # XLA's GPU client preallocates 75 %.
    assert compiled_figures.usable_bytes(target) == pytest.approx(usable)
    # 50 GiB of 55.9 GiB usable:
    assert compiled_figures.fit_verdict(figures, target, "config.finetune.batch_size") == ("fits", None)
    figures.temporaries = 40 * GIB
    verdict, line = compiled_figures.fit_verdict(figures, target, "config.finetune.batch_size")
    assert verdict == "does not fit"
    assert "60.00 GiB" in line and "config.finetune.batch_size" in line and "\n" not in line
    device = types.SimpleNamespace(device_kind="NVIDIA H100", memory_stats=lambda: {"bytes_limit": usable})
    with pytest.raises(Exception, match="cannot fit"):
        fit.check_device(_compiled(20, 0, 0, 40), "LoRA step", "config.finetune.batch_size", device)
    # The row --json writes (and --rows_from reads back): H100's 80 GB, 75 % of it for JAX, 989.5 TFLOP/s bf16.
    figures.flops, figures.calls = 1979e12, 3
    row = json.loads(json.dumps(compiled_figures.row(figures, target)))
    assert row["total"] == 60 * GIB and row["temporaries"] == 40 * GIB
    assert row["device_bytes"] == 80e9 and row["jax_usable_bytes"] == pytest.approx(60e9)
    assert row["headroom"] == pytest.approx(1 - 60 * GIB / 80e9)
    assert row["bound_s"] == pytest.approx(2.0) and row["stage_bound_s"] == pytest.approx(6.0)  # compute-bound


def test_on_a_cpu_a_stage_runs_its_jitted_step(monkeypatch):
    from bobjax import fit

    monkeypatch.setattr(fit, "device_to_check", lambda: None)
    jitted = object()
    assert fit.program_to_run(jitted, lambda: pytest.fail("a CPU compiles nothing ahead"), "x", "classify") is jitted
