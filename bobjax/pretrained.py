"""The pretrained weights each stage loads: resolved before any stage runs, recorded in ``WORKDIR/weights.json``.

Resolving fetches a hub id into the Hugging Face cache (a local lookup once it is there), so weights that cannot be
found stop the command before its first stage, with one line naming them, instead of after the hours of stages
before the one that needs them. The record says which weights made a result: per stage, the config field, the
name, the hub revision (snapshot commit) and a fingerprint per file (see :meth:`bobjax.models.hub.Resolved.record`).
"""

from __future__ import annotations

from collections.abc import Callable

from etils import epath

from bobjax import artifacts, parallel
from bobjax.classify import backbones
from bobjax.models import hub
from bobjax.quality import encoders

MANIFEST = "weights.json"


def _needed(config, stage: str) -> tuple[tuple, Callable[[], dict]] | None:
    """(a key naming the weights ``stage`` loads with ``config``: its config field and value, a function that fetches
    them and returns their record), or None if the stage loads none."""
    if stage == "caption" and config.caption.method == "vlm":
        name = config.caption.model
        return ("caption.model", name), lambda: hub.resolve(name, hub.model_patterns,
                                                            what="config.caption.model").record()
    if stage == "finetune" or (stage == "generate" and config.generate.renderer == "diffusion"):
        return ("model.sd", config.model.sd), lambda: _stable_diffusion(config.model.sd)
    if stage == "classify":
        cfg = config.classify
        return ("classify.checkpoint", cfg.backbone, cfg.checkpoint), lambda: _classifier(cfg)
    if (stage == "filter" and config.filter.rule != "none") or (stage == "report" and config.quality.metrics):
        name = encoders.encoder_name(config)
        if name != encoders.ORACLE:
            return ("quality.encoder", name), lambda: encoders.resolve_clip(name).record()
    return None


def resolve_all(plan) -> dict[str, dict[str, dict]]:
    """``{workdir: {stage: record}}`` for the ``(config, workdir, stage)`` of ``plan``, fetched in order (so an error
    names the first weights that cannot be fetched), each distinct one once."""
    fetched, records = {}, {}
    for config, workdir, stage in plan:
        weights = _needed(config, stage)
        if weights is None:
            continue
        key, fetch = weights
        if key not in fetched:
            fetched[key] = {"field": key[0], **fetch()}
        records.setdefault(workdir, {})[stage] = fetched[key]
    return records


def _stable_diffusion(name: str) -> dict:
    from bobjax.models.sd.pipeline import resolve_stable_diffusion

    return resolve_stable_diffusion(name, what="config.model.sd").record()


def _classifier(cfg) -> dict:
    checkpoint = backbones.resolve_checkpoint(cfg)
    return {"backbone": cfg.backbone,
            **(checkpoint.record() if checkpoint else {"name": "random", "source": "random initialisation"})}


def record(workdir: str, stages: dict[str, dict]) -> None:
    """Sets the records of ``stages`` in ``WORKDIR/weights.json``; those of other stages (complete, skipped) stay."""
    if not stages or not parallel.is_main_process():
        return
    path = epath.Path(workdir) / MANIFEST
    manifest = artifacts.read_json(path) if path.exists() else {}
    artifacts.write_json(path, {**manifest, **stages})
