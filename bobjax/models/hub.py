"""Pretrained weights by name: a local file or folder, ``bobjax:NAME`` (shipped with bobjax), or a Hugging Face hub id.

The one place that talks to the hub. A hub id is fetched into the Hugging Face cache (``HF_HOME`` /
``HF_HUB_CACHE``; with a warm cache a local lookup, and with ``HF_HUB_OFFLINE=1`` nothing else), only the files the
loader reads and one weight format (safetensors, else .bin). Every way this can fail (offline and not cached, gated,
no such repo or revision) becomes one :class:`WeightsError` that names the id and what to do, so ``bobjax.main``
prints it as one line. :meth:`Resolved.record` says which weights a run used (``WORKDIR/weights.json``).
"""

from __future__ import annotations

import dataclasses
import datetime
import hashlib
import os
import re
from collections.abc import Callable

from bobjax import assets
from bobjax.errors import UserError

FORMATS = ("safetensors", "bin")  # Weight formats, in preference order.
# Local files up to this size are fingerprinted by their sha256; larger ones (GBs of weights, read on every run)
# by size and modification time.
HASH_LIMIT = 64 * 2**20
_SHA256, _GIT_SHA1 = re.compile(r"[0-9a-f]{64}"), re.compile(r"[0-9a-f]{40}")


class WeightsError(UserError):
    """Pretrained weights that cannot be found or fetched; the message names them and what to do."""


@dataclasses.dataclass(frozen=True)
class Resolved:
    """Weights on local disk: ``path`` (a folder, or one file) is what loaders read."""

    name: str  # As configured: a hub id, a path or bobjax:NAME.
    path: str
    files: tuple[str, ...]  # The files that make the weights, relative to ``path`` (a folder) or its folder.
    revision: str | None = None  # The commit of a hub snapshot (its folder name in the cache).

    def record(self) -> dict:
        """What made these weights, for a run's record: the name, where they are, the hub revision, and one
        fingerprint per file. A hub file's is its cache blob name, read from the snapshot's link and never
        recomputed: the sha256 of LFS files (weights), git's blob sha1 of the others."""
        folder = self.path if os.path.isdir(self.path) else os.path.dirname(self.path)
        return {"name": self.name, "source": "hub" if self.revision else "local", "path": self.path,
                "revision": self.revision, "files": {f: _fingerprint(os.path.join(folder, f)) for f in self.files}}


def model_patterns(fmt: str) -> list[str]:
    """The files of a transformers or timm model folder: configs, tokenizer and processor files, chat template and
    weights of one format (not the Flax, TensorFlow or ONNX copies hub repos often hold as well)."""
    return ["*.json", "*.txt", "*.jinja", "*.model", f"*.{fmt}"]


def resolve(name: str, patterns: Callable[[str], list[str]], *, what: str, revision: str | None = None,
            complete: Callable[[str], bool] | None = None) -> Resolved:
    """``name`` -> :class:`Resolved`. A hub id is fetched with ``patterns(fmt)`` for each of :data:`FORMATS` until
    ``complete(folder)`` (default: some file of that format is there). ``what`` names the weights in errors (the
    config field). A local folder is taken as it is: its loader says what it lacks."""
    path = assets.resolve(name)
    if os.path.isfile(path):
        return Resolved(name, path, (os.path.basename(path),))
    if os.path.isdir(path):
        return Resolved(name, path, tuple(sorted({f for fmt in FORMATS for f in _matching(path, patterns(fmt))})))
    if name.startswith(assets.PREFIX) or path.startswith((".", "/", "~")) or path.count("/") > 1:
        raise WeightsError(f"{what} {name!r} does not exist (a local path; a hub id is ORG/NAME)")
    for fmt in FORMATS:
        folder = _download(name, patterns(fmt), revision, what)
        files = _matching(folder, patterns(fmt))
        if complete(folder) if complete else any(f.endswith(f".{fmt}") for f in files):
            return Resolved(name, folder, tuple(files), os.path.basename(folder))
    raise WeightsError(f"{what} {name!r}: its hub snapshot {folder} holds no {' or '.join(FORMATS)} weights bobjax "
                       "can load (an interrupted download? fetch it again online), or pass a local folder")


def _download(repo_id: str, allow_patterns: list[str], revision: str | None, what: str) -> str:
    """``snapshot_download`` with the hub's errors turned into :class:`WeightsError` messages."""
    from huggingface_hub import constants, snapshot_download
    from huggingface_hub.errors import (
        GatedRepoError,
        HFValidationError,
        LocalEntryNotFoundError,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )  # fmt: skip

    named = f"{what} {repo_id!r}"
    local = "or pass a local folder that holds it"
    try:
        return snapshot_download(repo_id, revision=revision, allow_patterns=allow_patterns)
    except HFValidationError as e:
        raise WeightsError(f"{named} is neither a local file or folder nor a valid hub id ({e})") from e
    except GatedRepoError as e:
        raise WeightsError(f"{named} is gated on the Hugging Face hub: accept its licence on "
                           f"https://huggingface.co/{repo_id} and log in (`hf auth login`), {local}") from e
    except RevisionNotFoundError as e:
        raise WeightsError(f"{named} has no revision {revision!r} on the Hugging Face hub") from e
    except RepositoryNotFoundError as e:
        raise WeightsError(f"{named} is neither a local folder nor a model on the Hugging Face hub (a private one "
                           "needs `hf auth login`)") from e
    except LocalEntryNotFoundError as e:  # Offline, or the hub unreachable, and not (completely) in the cache.
        reason = "HF_HUB_OFFLINE is set" if constants.HF_HUB_OFFLINE else f"the hub is unreachable ({e})"
        raise WeightsError(f"{named} is not in the Hugging Face cache {constants.HF_HUB_CACHE} and {reason}: "
                           f"download it once online, set HF_HOME to a cache that holds it, {local}") from e
    except OSError as e:  # No route, refused connection, disk full...
        raise WeightsError(f"{named} could not be fetched from the Hugging Face hub ({type(e).__name__}: {e}): "
                           f"set HF_HOME to a cache that holds it and HF_HUB_OFFLINE=1, {local}") from e


def _matching(folder: str, patterns: list[str]) -> list[str]:
    """The files under ``folder`` (relative, '/'-separated, hidden ones skipped) that ``patterns`` allow."""
    from huggingface_hub.utils import filter_repo_objects

    found = []
    for root, dirs, files in os.walk(folder):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        found += [os.path.relpath(os.path.join(root, f), folder).replace(os.sep, "/")
                  for f in sorted(files) if not f.startswith(".")]
    return list(filter_repo_objects(found, allow_patterns=patterns))


def _fingerprint(path: str) -> dict:
    stat = os.stat(path)
    target = os.readlink(path) if os.path.islink(path) else ""
    blob = os.path.basename(target) if os.path.basename(os.path.dirname(target)) == "blobs" else ""
    if _SHA256.fullmatch(blob):
        return {"size": stat.st_size, "sha256": blob}
    if _GIT_SHA1.fullmatch(blob):
        return {"size": stat.st_size, "git_sha1": blob}
    if stat.st_size > HASH_LIMIT:
        mtime = datetime.datetime.fromtimestamp(stat.st_mtime, datetime.UTC).isoformat()
        return {"size": stat.st_size, "mtime": mtime}
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(2**20), b""):
            digest.update(chunk)
    return {"size": stat.st_size, "sha256": digest.hexdigest()}
