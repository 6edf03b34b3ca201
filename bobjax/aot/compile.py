"""Compiling one stage's programs for a target: the work of ``python -m bobjax.aot``, importable without its flags
(``__main__`` defines ``--config``, as ``bobjax.main`` does, so one process can import only one of them)."""

from __future__ import annotations

import functools
import time


def target_and_mesh(name: str, config, stage: str):
    """(target or None for ``cpu``, the stage's mesh: ``bobjax.meshes.stage_mesh``, as the stage builds it; the
    quality encoder on one device, as the report and filter stages run it)."""
    import jax

    from bobjax import meshes, parallel

    if name == "cpu":
        target, devices = None, jax.devices()
    else:
        from bobjax import targets

        target = targets.get(name)
        devices = list(target.devices)
    if stage == "quality":
        return target, parallel.make_mesh({"data": 1, "fsdp": 1}, devices[:1])
    return target, meshes.stage_mesh(config, stage, devices)


# Stages whose attention kernels (Pallas, cuDNN) are custom calls that XLA's cost analysis cannot count: their FLOPs
# come from the same programs lowered with ``xla`` attention (traced, not compiled).
_SD_STAGES = ("finetune", "generate")


def _with_xla_attention(config):
    config = config.copy_and_resolve_references()
    config.model.attention = "xla"
    return config


def compile_stage(stage: str, config, target_name: str, log=print, only=None) -> tuple[object, list]:
    """(target, compiled_figures.Figures of each program of ``stage``, or of those named in ``only``), compiled one
    by one. The classifier of a sweep whose points pack (``classify.packed``) adds its packed programs at the largest
    pack's size, halved while the packed train step does not fit the target with headroom (``bobjax.fit.refused``),
    as the stage splits a pack on the device; none when not even two points fit (they train alone)."""
    from bobjax import fit
    from bobjax.aot import compiled_figures, stage_programs

    target, mesh = target_and_mesh(target_name, config, stage)
    programs = getattr(stage_programs, stage)(config, mesh)
    counted = {p.name: p for p in getattr(stage_programs, stage)(_with_xla_attention(config), mesh)} \
        if stage in _SD_STAGES and config.model.attention != "xla" else {p.name: p for p in programs}
    wanted = lambda program: only is None or program.name in only  # noqa: E731
    attention = config.model.attention if stage in _SD_STAGES else "auto"
    compile_one = functools.partial(_compile, mesh=mesh, attention=attention, target_name=target_name, log=log)
    results = [compile_one(program, counted[program.name]) for program in programs if wanted(program)]
    packed_wanted = only is None or {"packed train step", "packed eval step"} & set(only)
    points = stage_programs.pack_size(config) if stage == "classify" and packed_wanted else 0
    while points > 1:
        train_step, eval_step = stage_programs.classify_packed(config, mesh, points)
        train = compile_one(train_step, train_step)  # It sizes the pack, as on the device, even when not wanted.
        usable = compiled_figures.usable_bytes(target)
        if usable is None or not fit.refused(fit.verdict(train.total, usable), headroom=True):
            results += [train] if wanted(train_step) else []
            results += [compile_one(eval_step, eval_step)] if wanted(eval_step) else []
            break
        gib = compiled_figures.GiB
        log(f"[aot] {target_name} classify: a pack of {points} points does not fit with {fit.HEADROOM:.0%} left "
            f"({train.total / gib:.2f} GiB of {usable / gib:.2f} per device); the stage halves it", flush=True)
        points //= 2
    return target, results


def _compile(program, twin, *, mesh, attention: str, target_name: str, log):
    """``program`` compiled for the target of ``mesh``: its ``compiled_figures.Figures``, FLOPs counted on ``twin``
    (the same program, with ``xla`` attention where the stage's own kernels hide their FLOPs); ``attention``: the
    configured kernel the traced calls are summarised against."""
    import jax

    from bobjax.aot import compiled_figures, kernels, stage_programs
    from bobjax.models import attention_choice

    if program.name not in stage_programs.PROGRAMS[program.stage]:
        raise ValueError(f"{program.stage} program {program.name!r} is missing from stage_programs.PROGRAMS")
    log(f"[aot] {target_name} {program.stage} {program.name}: compiling ({program.work})", flush=True)
    start = time.perf_counter()
    with jax.set_mesh(mesh), attention_choice.recorded_choices() as calls:
        lowered = [program.lower()]
        compiled = lowered[0].compile()
        body, extra = None, 0
        if program.loop is not None:
            lower_body, extra = program.loop
            log(f"[aot] {target_name} {program.stage} {program.name}: compiling its loop body", flush=True)
            lowered.append(lower_body())
            body = lowered[1].compile()
    seconds = time.perf_counter() - start
    if twin is not program:  # Lowered again with xla attention, outside the recording of the kernels used.
        with jax.set_mesh(mesh):
            lowered = [twin.lower()] + ([twin.loop[0]()] if twin.loop is not None else [])
    flops = (compiled_figures.arithmetic_flops(lowered[0])
             + extra * sum(map(compiled_figures.arithmetic_flops, lowered[1:])))
    traced = {"summary": kernels.summary(calls, attention),
              "calls": [{"call": call, "kernel": kernel, "traced": n} for (call, kernel), n in calls.items()]}
    figures = compiled_figures.figures(program, compiled, seconds, body, extra, traced, flops / mesh.size)
    log(f"[aot] {target_name} {program.stage} {program.name}: {figures.total / compiled_figures.GiB:.2f} GiB per "
        f"device, compiled in {seconds:.0f} s", flush=True)
    return figures
