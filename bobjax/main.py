"""The bobjax command line: ``python -m bobjax.main --config=configs/cub.py --workdir=DIR``.

Prints and records the resolved config, fetches the pretrained weights of every stage it will run (so missing
weights stop it before any work; ``WORKDIR/weights.json`` records them, see :mod:`bobjax.pretrained`), then runs the
stages that ``config.stages`` names, in pipeline order (for a comparison, ``config.compare``, once per method and
seed; see :mod:`bobjax.compare`; a sweep's points that differ only in the classifier's learning rate, weight decay and
lambda train their classifiers packed, ``bobjax.classify.packed``).
A stage whose artifact is complete (for the same config) is skipped, so a killed run is finished by rerunning
the same command. Override any field: ``--config.finetune.lora_rank=8``; the config is locked, so a misspelt
key fails and names itself.
"""

from __future__ import annotations

import sys
import time

from absl import app, flags, logging
from etils import epath
from ml_collections import config_flags

from bobjax import (accelerator, artifacts, caption, classify, compare, config_lib, finetune, generate, identity,
                    meshes, parallel, pretrained, report, run_folder, share)
from bobjax import filter as filter_stage  # Not as "filter": that would shadow the builtin in this module.
from bobjax.classify import packed as classify_packed
from bobjax.data import fewshot
from bobjax.errors import ConfigError, UserError

_CONFIG = config_flags.DEFINE_config_file("config", None, "Config file (configs/*.py[:args]).", lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Folder for every artifact of the run: local or gs://BUCKET/PATH.")
_REDO = flags.DEFINE_list("redo", [], "Stages to remake even if complete (their folders are deleted first).")
flags.mark_flags_as_required(["config", "workdir"])


# How long a host waits at a stage boundary for the others: host 0 may still be finishing the stage's small
# artifacts (a CUB-size synthetic set's grids and PNG export take minutes). A host that died ends the wait at once
# (the coordination service reports it); this bounds a host that hangs.
STAGE_BARRIER_TIMEOUT_S = 3 * 3600

# Each stage's run(config, workdir), in pipeline order.
STAGE_RUNS = {"caption": caption.run, "finetune": finetune.run, "generate": generate.run, "filter": filter_stage.run,
              "classify": classify.run, "report": report.run}


def record_splits(config, workdir: str) -> None:
    """Writes ``splits.json`` (the image ids of the run); a different existing split is an error. The dataset's name
    may differ: an image folder's is its folder's, which a run that moved to a copy of the data may name otherwise."""
    splits = fewshot.make_splits(config.data, config.seed)
    manifest = splits.manifest()
    path = epath.Path(workdir) / "splits.json"
    if path.exists():
        if {**artifacts.read_json(path), "dataset": manifest["dataset"]} != manifest:
            raise artifacts.ArtifactError(f"{path} records another split than this config draws; use another --workdir")
        return
    artifacts.write_json(path, manifest)
    counts = {s: len(manifest[s]) for s in ("train", "validation", "test")}
    logging.info("dataset %s: %d classes, images per split %s", manifest["dataset"], len(manifest["class_names"]), counts)


def run_stage(config, workdir: str, stage: str) -> None:
    if identity.is_complete(config, workdir, stage):
        logging.info("stage %s: complete in %s, skipped", stage, run_folder.stage_dir(workdir, stage))
        return
    logging.info("stage %s: running in %s", stage, workdir)
    start = time.perf_counter()
    STAGE_RUNS[stage](config, workdir)
    _complete(config, workdir, stage, time.perf_counter() - start)


def _complete(config, workdir, stage: str, seconds: float) -> None:
    """Marks ``stage`` complete in ``workdir`` once every host is done with it, records its wall ``seconds`` and
    drops its work in progress."""
    # Host 0 writes the small artifacts (a LoRA, the dataset's metadata) at the end of a stage: no host may mark it
    # complete, or read it in the next stage, before every host is done with it.
    parallel.wait_for_every_host(f"bobjax: {stage} done in {workdir}", STAGE_BARRIER_TIMEOUT_S)
    if parallel.is_main_process():
        identity.mark_complete(config, workdir, stage)
        run_folder.record_timing(workdir, stage, seconds)
        # Checkpoints and caches are dead weight once the artifact is complete (a CLIP classifier's are GBs).
        run_folder.partial_dir(workdir, stage).rmtree(missing_ok=True)
    parallel.wait_for_every_host(f"bobjax: {stage} marked complete in {workdir}", STAGE_BARRIER_TIMEOUT_S)
    logging.info("stage %s: complete", stage)


def _run_packed(pack) -> None:
    """Trains the classifiers of the points of ``pack`` (:func:`bobjax.compare.packs`) whose earlier stages are
    complete and whose classifier is not, in one program (``bobjax.classify.packed``), and completes each point's
    classify stage as :func:`run_stage` would; its timing is the point's share of the pack's wall time. What is
    left (a lone pending point, a pack that cannot fit the device) trains alone next, in the stage loop."""
    earlier = config_lib.STAGES[:config_lib.STAGES.index("classify")]
    pending = [one for one in pack if not identity.is_complete(one.config, one.workdir, "classify")
               and all(identity.is_complete(one.config, one.workdir, stage)
                       for stage in config_lib.run_stages(one.config) if stage in earlier)]
    if len(pending) < 2:
        return
    logging.info("stage classify: %d points of method %s, seed %d packed in one program: %s", len(pending),
                 pending[0].method, pending[0].seed, ", ".join(one.point for one in pending))
    start = time.perf_counter()
    finished = classify_packed.run([(one.config, str(one.workdir)) for one in pending])
    seconds = (time.perf_counter() - start) / len(pending)
    for one in pending:
        if str(one.workdir) in finished:
            _complete(one.config, one.workdir, "classify", seconds)


def prepare_workdir(config, workdir: str, redo=(), record_split: bool = True) -> None:
    """Records the config (and the split), and deletes the stages named in ``redo``."""
    epath.Path(workdir).mkdir(parents=True, exist_ok=True)
    for stage in redo:
        if stage not in config_lib.STAGES:
            raise ConfigError(f"--redo names unknown stage {stage!r}; expected some of {config_lib.STAGES}")
    if parallel.is_main_process():
        artifacts.write_text(epath.Path(workdir) / "config.json", config.to_json_best_effort(indent=2) + "\n")
        if record_split:
            record_splits(config, workdir)
        for stage in redo:
            run_folder.remove_stage(workdir, stage)
    # The other hosts look for complete stages next: not before host 0 has removed those being redone.
    parallel.wait_for_every_host(f"bobjax: {workdir} prepared", STAGE_BARRIER_TIMEOUT_S)


def _pending_stages(plan, redo) -> list:
    """The ``(config, workdir, stage)`` of ``plan`` that will run. Raises, before any work, if a stage this command
    would skip was completed with a different config: found only when its turn came, the error would follow minutes
    to hours of the stages before it."""
    return [(config, workdir, stage) for config, workdir, stage in plan
            if stage in redo or not identity.is_complete(config, workdir, stage)]


def _mesh_check(pending):
    """``before(stage)``: checks, once, that every pending JAX stage's mesh holds its batch (``bobjax.meshes``), so
    a setting that cannot work stops the run before its first stage. Counting the devices starts JAX's backend,
    which must wait for a pending VLM caption stage (it needs the GPU's memory first): then the check runs after
    the captions, before the first JAX stage."""
    checked = []

    def before(stage: str | None) -> None:
        """``stage`` None: before any stage."""
        if checked or (vlm_first and stage in (None, "caption")):
            return
        meshes.check([(config, stage) for config, _, stage in pending])
        checked.append(True)

    vlm_first = any(stage == "caption" and config.caption.method == "vlm" for config, _, stage in pending)
    return before


def run(config, workdir: str, redo=()) -> None:
    """Runs ``config.stages``: in ``workdir``, or, for a comparison, in each run's folder and then the report
    over all runs in ``workdir``."""
    stages = config_lib.run_stages(config)
    if not compare.is_comparison(config):
        pending = _pending_stages([(config, workdir, stage) for stage in stages], redo)
        check_meshes = _mesh_check(pending)
        check_meshes(None)
        prepare_workdir(config, workdir, redo)
        pretrained.record(workdir, pretrained.resolve_all(pending).get(workdir, {}))
        for stage in stages:
            check_meshes(stage)
            run_stage(config, workdir, stage)
        return
    runs = compare.runs(config, workdir)
    prepare_workdir(config, workdir, [s for s in redo if s == "report"], record_split=False)
    _run_all(runs, workdir, redo, [(config, workdir, "report")] if "report" in stages else [])
    if compare.two_phase(config) and "classify" in stages:  # The second phase: the chosen points at full length.
        _run_all(compare.final_runs(config, workdir), workdir, redo, [])
    if "report" in stages:
        run_stage(config, workdir, "report")


def _run_all(runs, workdir, redo, later) -> None:
    """Runs the stages of each of ``runs`` (one phase of a comparison), every run's captions first; ``later``: the
    comparison's own stages still to come, whose weights are resolved (and missing ones named) now."""
    share.link_runs(runs, workdir, redo, STAGE_BARRIER_TIMEOUT_S)
    pending = _pending_stages([(one.config, one.workdir, stage) for one in runs
                               for stage in config_lib.run_stages(one.config)] + later, redo)
    check_meshes = _mesh_check(pending)
    check_meshes(None)
    weights = pretrained.resolve_all(pending)
    for one in runs:
        prepare_workdir(one.config, one.workdir, [s for s in redo if s != "report"])
        pretrained.record(one.workdir, weights.get(one.workdir, {}))
    # Every run's captions before any other stage: the caption VLM needs the GPU memory that JAX takes for good
    # once a JAX stage has started it (see bobjax.caption.stage).
    plan = [(k, one, stage) for k, one in enumerate(runs) for stage in config_lib.run_stages(one.config)]
    # Sweep points that train packed do so at the first one's classify stage; the others then find theirs complete.
    pack_of = {str(one.workdir): pack for pack in compare.packs(runs) for one in pack}
    for k, one, stage in sorted(plan, key=lambda item: item[2] != "caption"):
        logging.info("comparison run %d/%d (method %s, seed %d%s): %s in %s", k + 1, len(runs), one.method, one.seed,
                     ", the chosen point's full run" if one.final else "", stage, one.workdir)
        check_meshes(stage)
        if stage == "classify" and str(one.workdir) in pack_of:
            pack = pack_of[str(one.workdir)]
            for member in pack:
                del pack_of[str(member.workdir)]
            _run_packed(pack)
        run_stage(one.config, one.workdir, stage)


def main(argv) -> None:
    del argv
    config = _CONFIG.value
    try:
        parallel.initialize()
        accelerator.check(config)
        if parallel.is_main_process():
            print(config)
        run(config, artifacts.storage_path(_WORKDIR.value, "--workdir"), _REDO.value)
    except UserError as e:
        print(f"bobjax: error: {e}", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    app.run(main)
