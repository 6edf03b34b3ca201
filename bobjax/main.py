"""The bobjax command line: ``python -m bobjax.main --config=configs/cub.py --workdir=DIR``.

Prints and records the resolved config, then runs the stages that ``config.stages`` names, in pipeline order.
A stage whose artifact is complete (for the same config) is skipped, so a killed run is finished by rerunning
the same command. Override any field: ``--config.finetune.lora_rank=8``; the config is locked, so a misspelt
key fails and names itself.
"""

from __future__ import annotations

import importlib
import json
import os
import sys

from absl import app, flags, logging
from ml_collections import config_flags

from bobjax import artifacts, config_lib, parallel
from bobjax.data import fewshot
from bobjax.errors import ConfigError, UserError

_CONFIG = config_flags.DEFINE_config_file("config", None, "Config file (configs/*.py[:args]).", lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Folder for every artifact of the run.")
_REDO = flags.DEFINE_list("redo", [], "Stages to remake even if complete (their folders are deleted first).")
flags.mark_flags_as_required(["config", "workdir"])

def parse_stages(value) -> list[str]:
    """``"caption,finetune"`` or a tuple -> stage names in pipeline order; unknown names are an error."""
    names = [s.strip() for s in (value.split(",") if isinstance(value, str) else value) if s.strip()]
    unknown = [s for s in names if s not in config_lib.STAGES]
    if unknown:
        raise ConfigError(f"config.stages names unknown stage(s) {unknown}; expected some of {config_lib.STAGES}")
    return [s for s in config_lib.STAGES if s in names]


def stage_module(name: str):
    return importlib.import_module(f"bobjax.{name}")


def record_splits(config, workdir: str) -> None:
    """Writes ``splits.json`` (the image ids of the run); a different existing split is an error."""
    splits = fewshot.make_splits(config.data, config.seed)
    manifest = splits.manifest()
    path = os.path.join(workdir, "splits.json")
    if os.path.exists(path):
        with open(path) as f:
            if json.load(f) != manifest:
                raise artifacts.ArtifactError(f"{path} records another split than this config draws; use another --workdir")
        return
    artifacts.write_json(path, manifest)
    counts = {s: len(manifest[s]) for s in ("train", "validation", "test")}
    logging.info("dataset %s: %d classes, images per split %s", manifest["dataset"], len(manifest["class_names"]), counts)


def run(config, workdir: str, redo=()) -> None:
    stages = parse_stages(config.stages)
    os.makedirs(workdir, exist_ok=True)
    if parallel.is_main_process():
        artifacts.write_text(os.path.join(workdir, "config.json"), config.to_json_best_effort(indent=2) + "\n")
        record_splits(config, workdir)
    for stage in redo:
        if stage not in config_lib.STAGES:
            raise ConfigError(f"--redo names unknown stage {stage!r}; expected some of {config_lib.STAGES}")
        if parallel.is_main_process():
            artifacts.remove_stage(workdir, stage)
    for stage in stages:
        if artifacts.is_complete(config, workdir, stage):
            logging.info("stage %s: complete in %s, skipped", stage, artifacts.stage_dir(workdir, stage))
            continue
        logging.info("stage %s: running", stage)
        stage_module(stage).run(config, workdir)
        if parallel.is_main_process():
            artifacts.mark_complete(config, workdir, stage)
        logging.info("stage %s: complete", stage)


def main(argv) -> None:
    del argv
    parallel.initialize()
    config = _CONFIG.value
    workdir = os.path.abspath(os.path.expanduser(_WORKDIR.value))
    if parallel.is_main_process():
        print(config)
    try:
        run(config, workdir, _REDO.value)
    except UserError as e:
        print(f"bobjax: error: {e}", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    app.run(main)
