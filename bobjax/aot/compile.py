"""Compiling one stage's programs for a target: the work of ``python -m bobjax.aot``, importable without its flags
(``__main__`` defines ``--config``, as ``bobjax.main`` does, so one process can import only one of them)."""

from __future__ import annotations

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
    by one."""
    import jax

    from bobjax.aot import compiled_figures, kernels, stage_programs
    from bobjax.models import attention_choice

    target, mesh = target_and_mesh(target_name, config, stage)
    results = []
    programs = getattr(stage_programs, stage)(config, mesh)
    counted = {p.name: p for p in getattr(stage_programs, stage)(_with_xla_attention(config), mesh)} \
        if stage in _SD_STAGES and config.model.attention != "xla" else {p.name: p for p in programs}
    for program in programs:
        if only is not None and program.name not in only:
            continue
        log(f"[aot] {target_name} {stage} {program.name}: compiling ({program.work})", flush=True)
        start = time.perf_counter()
        with jax.set_mesh(mesh), attention_choice.recorded_choices() as calls:
            lowered = [program.lower()]
            compiled = lowered[0].compile()
            body, extra = None, 0
            if program.loop is not None:
                lower_body, extra = program.loop
                log(f"[aot] {target_name} {stage} {program.name}: compiling its loop body", flush=True)
                lowered.append(lower_body())
                body = lowered[1].compile()
        seconds = time.perf_counter() - start
        twin = counted[program.name]
        if twin is not program:  # Lowered again with xla attention, outside the recording of the kernels used.
            with jax.set_mesh(mesh):
                lowered = [twin.lower()] + ([twin.loop[0]()] if twin.loop is not None else [])
        flops = (compiled_figures.arithmetic_flops(lowered[0])
                 + extra * sum(map(compiled_figures.arithmetic_flops, lowered[1:])))
        configured = config.model.attention if stage in _SD_STAGES else "auto"
        attention = {"summary": kernels.summary(calls, configured),
                     "calls": [{"call": call, "kernel": kernel, "traced": n} for (call, kernel), n in calls.items()]}
        results.append(compiled_figures.figures(program, compiled, seconds, body, extra, attention, flops / mesh.size))
        log(f"[aot] {target_name} {stage} {program.name}: {results[-1].total / compiled_figures.GiB:.2f} GiB per "
            f"device, compiled in {seconds:.0f} s", flush=True)
    return target, results
