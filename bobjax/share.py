"""Shared stages: runs of a comparison whose caption bank, LoRA or synthetic set would be made from the same config
fields use one copy of it, made once. A sweep over classifier settings, or methods that differ only in the classifier
stream, then caption, fine-tune and generate once.

Where: ``WORKDIR/shared/<stage>-<key>/``, holding the stage's folder under its usual name and its work in progress
(``shared/generate-3f2a9c1e0b7d/synthetic/``, ``.../synthetic.partial/``), the key being the first 12 hex digits of the
sha256 of the stage's identity, which its ``COMPLETE`` marker records (:func:`bobjax.identity.of`: what changes its
output, so not where the data is stored, the mesh or a batch size that changes nothing). Runs share a folder if and
only if those identities are equal: ``seed`` is part of them, so seeds never share; ``method`` is not, but each
method's preset is (DataDream's prompts, BOB's context plan), so BOB and its within-class ablation share captions and
the LoRA, not the synthetic set. Only caption, finetune, generate and filter are shared: classify and report are each
run's results, and stay in its folder.

How: a run's folder holds, where the stage's folder would be, a one-line pointer file (``synthetic.link``) with the
shared folder's path relative to the run (``../../shared/generate-3f2a9c1e0b7d``), which
:func:`bobjax.run_folder.stage_dir` follows. So each run stays an ordinary run: its stages, the report and a rerun of
the run alone read, write, complete and ``--redo`` the shared folder as their own, and its ``COMPLETE`` marker still
refuses a changed config. A pointer rather than a symlink because an object store (``gs://``) has neither symlinks
nor rename: the pointer is one small object written whole. Content keys rather than "reuse the run that made it
first" because then no run owns an artifact that others read.

Rules: a run that already has a folder of its own for a stage (made before sharing, or as a single run) keeps it;
a pointer, once written, stays (a changed config is then refused, as in any run) until ``--redo=STAGE`` points it at
the folder of the current identity, which the redo then remakes once for every run that shares it. A folder no run
points at any more (after such a redo) may be deleted by hand. Only host 0 writes pointers; every host waits for them.
"""

from __future__ import annotations

import hashlib
import json

from bobjax import artifacts, config_lib, identity, parallel, run_folder

SHARED_STAGES = ("caption", "finetune", "generate", "filter")
STORE = "shared"  # Under the comparison's workdir.


def key(config, stage: str) -> str:
    """The name of ``stage``'s identity under ``config``: equal identities, equal key."""
    inputs = json.dumps(identity.of(config, stage), sort_keys=True)
    return hashlib.sha256(inputs.encode()).hexdigest()[:12]


def _pointer(run, workdir, stage: str) -> str:
    """The shared folder of ``run``'s ``stage``, relative to the run's folder."""
    depth = len(run.workdir.relative_to(workdir).parts)
    return "/".join([".."] * depth + [STORE, f"{stage}-{key(run.config, stage)}"])


def link_runs(runs, workdir, redo, timeout_s: int) -> None:
    """Points the shared stages of each of ``runs`` (:func:`bobjax.compare.runs`) at their inputs' folder under
    ``workdir``, by the rules above."""
    if parallel.is_main_process():
        for run in runs:
            for stage in config_lib.run_stages(run.config):
                if stage not in SHARED_STAGES:
                    continue
                link = run_folder.link_path(run.workdir, stage)
                linked = link.exists()
                if not linked and (run_folder.stage_dir(run.workdir, stage).exists()
                                   or run_folder.partial_dir(run.workdir, stage).exists()):
                    continue  # A folder of its own, kept.
                if stage in redo or not linked:
                    artifacts.write_text(link, _pointer(run, workdir, stage) + "\n")
    parallel.wait_for_every_host(f"bobjax: shared stages linked in {workdir}", timeout_s)


def shared_folders(runs, workdir) -> dict[str, list[str]]:
    """``{shared stage folder: [runs that use it]}``, both relative to ``workdir``, for the report."""
    out: dict[str, list[str]] = {}
    for run in runs:
        for stage in SHARED_STAGES:
            folder = run_folder.stage_dir(run.workdir, stage)
            if folder.parent != run.workdir:
                shared = f"{STORE}/{folder.parent.name}/{folder.name}"
                out.setdefault(shared, []).append(str(run.workdir.relative_to(workdir)))
    return out
