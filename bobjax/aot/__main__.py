"""Compiles every JAX stage's step of a config for a target it does not need to have, and prints what each needs.

    python -m bobjax.aot --config=configs/cub.py --target=v5e:2x4
    JAX_PLATFORMS=cpu python -m bobjax.aot --config=configs/cub.py --target=h100 --stages=finetune,generate
    python -m bobjax.aot --config=configs/cub.py --target=cpu     # this machine's devices, to compare with a run

Targets are ``bobjax.targets`` names (Cloud TPU slices, NVIDIA cards and nodes) or ``cpu``. The models are built on
abstract values from the checkpoint's config files only (a few KB fetched; ``config.model.sd`` may be a local folder
holding them), over each stage's mesh of the target's devices (``bobjax.meshes``), traced under that mesh so that
kernels are chosen for the target, and compiled: minutes each at real size on a CPU (a TPU target's LoRA step or
sampler call: 15-60 minutes on 2 cores), so run one stage per process and join the rows (``--rows_from``). For an
NVIDIA target it sets the XLA flags that compiling without a GPU needs (``bobjax.targets.compile_flags``). Prints a
line for each program that does not fit its device, naming the setting to change, then the table and generation's
bound per image; ``--json`` writes the rows. A setting that cannot work on the target (a ``config.mesh`` that cannot
hold a stage's batch, an unknown target) is one line, before anything compiles.
"""

from __future__ import annotations

import json
import os
import sys
import time

from absl import app, flags
from ml_collections import config_flags

_CONFIG = config_flags.DEFINE_config_file("config", None, "A bobjax config file (configs/*.py[:args]).")
_TARGET = flags.DEFINE_string("target", "cpu", "bobjax.targets name (v5e:2x4, h100, 8xh100, ...) or cpu.")
_STAGES = flags.DEFINE_list("stages", "finetune,generate,classify,quality", "Stages to compile.")
_JSON = flags.DEFINE_string("json", "", "Write the rows here as JSON.")
_ROWS_FROM = flags.DEFINE_list("rows_from", [], "--json files of earlier runs for the same target whose rows join "
                                "this table (one stage per process keeps a real-size run's memory down).")
_PROGRAMS = flags.DEFINE_list("programs", [], "Compile only these programs of the stages (names as the table prints "
                               "them, e.g. 'packed train step,packed eval step'); join the others' rows from an "
                               "earlier run with --rows_from. Empty: every program.")
_CACHE = flags.DEFINE_string("cache_dir", os.path.expanduser("~/.cache/bobjax/aot"),
                             "JAX's persistent compilation cache for --target=cpu ('' for none); a TPU or NVIDIA "
                             "target's programs, compiled without the device, cannot be loaded back from it.")


def main(argv) -> None:
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments {argv[1:]}")
    from bobjax.errors import UserError

    try:
        _compile_and_report()
    except UserError as e:  # A setting (target, mesh, batch) that cannot work: one line, no traceback.
        print(f"bobjax.aot: error: {e}", file=sys.stderr)
        sys.exit(1)


def _compile_and_report() -> None:
    from bobjax import targets

    needed = targets.compile_flags(_TARGET.value)
    if needed and needed not in os.environ.get("XLA_FLAGS", ""):
        os.environ["XLA_FLAGS"] = f"{os.environ.get('XLA_FLAGS', '')} {needed}".strip()
    import jax

    from bobjax import fit, meshes
    from bobjax.aot import cell, compiled_figures, host_input, stage_programs
    from bobjax.aot.compile import compile_stage

    if _CACHE.value and _TARGET.value == "cpu":  # A program compiled without its device cannot be loaded back.
        jax.config.update("jax_compilation_cache_dir", _CACHE.value)
        jax.config.update("jax_persistent_cache_min_compile_time_secs", 1.0)
    config = _CONFIG.value
    unknown = [s for s in _STAGES.value if s not in stage_programs.STAGES]
    if unknown:
        raise app.UsageError(f"--stages: unknown {unknown}; expected some of {stage_programs.STAGES}")
    known = [name for stage in _STAGES.value for name in stage_programs.PROGRAMS[stage]]
    unknown = [name for name in _PROGRAMS.value if name not in known]
    if unknown:
        raise app.UsageError(f"--programs: unknown {unknown} for --stages={','.join(_STAGES.value)}; expected some of "
                             f"{known}")
    rows, problems = [], []
    for path in _ROWS_FROM.value:
        with open(path) as f:
            earlier = json.load(f)
        if earlier["target"] != _TARGET.value:
            raise app.UsageError(f"--rows_from {path} is for target {earlier['target']}, not {_TARGET.value}")
        rows += earlier["rows"]
        problems += earlier["does_not_fit"]
    devices = targets.get(_TARGET.value).devices if _TARGET.value != "cpu" else jax.devices()
    meshes.check([(config, stage) for stage in _STAGES.value], devices)  # Every stage's mesh before any compile.
    for stage in _STAGES.value:
        target, figures = compile_stage(stage, config, _TARGET.value, only=_PROGRAMS.value or None)
        for f in figures:
            verdict, line = compiled_figures.fit_verdict(f, target, fit.SETTINGS[stage])
            if verdict == "does not fit":
                problems.append(line)
                print(f"DOES NOT FIT: {line}", flush=True)
            elif line:
                print(f"TIGHT: {line}", flush=True)
            rows.append(compiled_figures.row(f, target))
        _write_json(rows, problems, None)  # After each stage: a long run killed later keeps what it compiled.
    title = f"bobjax.aot {_TARGET.value} ({len(devices)} devices): {' '.join(sys.argv[1:])}"
    for problem in problems:
        print(f"DOES NOT FIT: {problem}")
    print(compiled_figures.table(rows, title))
    host_devices = len(meshes.stage_devices("generate", devices))
    hosts = len({d.process_index for d in devices})
    for r in rows:
        if (r["stage"], r["program"]) == ("generate", "sampler call") and r["bound_s"] is not None:
            per_call = meshes.generation_batch(config, host_devices)
            print(f"generate: {per_call} images per sampler call per host ({config.generate.batch_size_per_device} "
                  f"per device x {host_devices}), {hosts} host(s) at once: roofline bound "
                  f"{r['bound_s'] / per_call:.4f} s per image per host, {r['bound_s'] / per_call / hosts:.4f} s per "
                  f"image on {_TARGET.value}")
    host = host_input.figures(config, rows, hosts) if "classify" in _STAGES.value else None
    if host is not None:
        print(host_input.line(config, host, hosts))
    bound = cell.cell_bound(config, rows, (host_devices, hosts))
    if bound is not None:
        stages_h = ", ".join(f"{stage} {s / 3600:.1f} h" for stage, s in bound["by_stage"].items())
        missing = f"; not compiled, so not counted: {', '.join(bound['missing'])}" if bound["missing"] else ""
        packs = f", the sweep's points in {bound['packs']} packs" if bound["packs"] else ""
        print(f"comparison ({bound['runs']} runs{packs}): roofline bound {bound['seconds'] / 3600:.1f} h on "
              f"{_TARGET.value} ({stages_h}; caption not included){missing}")
    _write_json(rows, problems, bound, host)


def _write_json(rows: list, problems: list, bound, host_input=None) -> None:
    if _JSON.value:
        with open(_JSON.value, "w") as f:
            json.dump({"target": _TARGET.value, "argv": sys.argv[1:], "date": time.strftime("%Y-%m-%d"),
                       "rows": rows, "does_not_fit": problems, "comparison_bound": bound,
                   "classify_host_input": host_input}, f, indent=1)


if __name__ == "__main__":
    app.run(main)
