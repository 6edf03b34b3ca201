"""Atomic artifacts, local or on Cloud Storage: what makes every stage killable at any moment and rerunnable.

Every path of a run goes through ``etils.epath``, so a workdir or data dir is a local folder or a Cloud Storage
one (``gs://BUCKET/...``); :func:`storage_path` turns a flag or config value into one and refuses any other
scheme. Libraries that read or write only local files (ArrayRecord's writer, PIL, safetensors) get a local
temporary file from :func:`atomic_path`, :func:`atomic_dir` or :func:`local_file`.

What "atomic" means, so that a reader never sees half an artifact:

- one file on local disk: written under a temporary name in the same folder, then renamed (atomic on POSIX);
- one file on an object store: uploaded in one write from bytes in memory. An object store shows an object
  only once its upload is complete, and it has no rename (GCS copies and deletes), so there is no temporary
  name;
- a folder of files (:func:`atomic_dir`, the TFDS datasets): on local disk, built under a temporary name and
  renamed; on an object store, uploaded file by file with its marker last (``dataset_info.json`` for a TFDS
  dataset), and readers and resume take the folder as complete only once the marker exists.

Where a run's artifacts go in its workdir, and which stages are complete, is :mod:`bobjax.run_folder`'s and
:mod:`bobjax.identity`'s; this module only writes and reads them.
"""

from __future__ import annotations

import contextlib
import json
import os
import pathlib
import re
import shutil
import tempfile
from collections.abc import Iterator

from etils import epath

from bobjax.errors import UserError

# The object stores a workdir or data dir may be on: Cloud Storage, which every library bobjax writes and reads
# through (epath, TFDS, ArrayRecord's reader, orbax, TensorBoard's writer) supports.
SCHEMES = ("gs",)

class ArtifactError(UserError):
    """An artifact cannot be written or reused; the message names the path."""


class StorageError(UserError):
    """A path names a file system bobjax does not support; the message names the field, the value and the schemes."""


def storage_path(value: str | os.PathLike, field: str) -> epath.Path:
    """``value`` of a flag or config ``field`` as a path: a local one (made absolute) or ``gs://BUCKET/...``.

    Any other scheme is a :class:`StorageError`, and so is a value that looks like a URL without its ``//``
    (``gs:/bucket``): epath would take that for a local folder named ``gs:``, which every host writes its own copy of.
    """
    value = os.fspath(value)
    expected = f"expected a local path or {' or '.join(f'{s}://BUCKET/PATH' for s in SCHEMES)}"
    scheme, sep, rest = value.partition("://")
    if sep and scheme not in SCHEMES:
        raise StorageError(f"{field}={value!r}: the file system {scheme}:// is not supported; {expected}")
    if sep and not rest.split("/")[0]:
        raise StorageError(f"{field}={value!r} names no bucket; {expected}")
    if not sep and re.match(r"[A-Za-z][A-Za-z0-9+.-]+:", value):
        raise StorageError(f"{field}={value!r} looks like a URL without its '//'; {expected}")
    return epath.Path(value) if sep else epath.Path(value).expanduser().resolve()


def on_object_store(path: str | os.PathLike) -> bool:
    """Whether ``path`` is on an object store (``gs://``), where objects are written whole and nothing is renamed."""
    return "://" in os.fspath(path)


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[str]:
    """Yields a local temporary file name to write ``path``'s content to; ``path`` gets it if the block succeeds
    (renamed next to it on local disk, uploaded in one write to an object store)."""
    path = epath.Path(path)
    local = not on_object_store(path)
    try:
        if local:
            path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent if local else None)
        os.close(fd)
    except OSError as e:
        raise ArtifactError(f"cannot write in {path.parent}: {e.strerror or e}") from e
    try:
        yield tmp
        if local:
            os.replace(tmp, path)
        else:
            path.write_bytes(pathlib.Path(tmp).read_bytes())
    except OSError as e:
        raise ArtifactError(f"cannot write {path}: {e.strerror or e}") from e
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


@contextlib.contextmanager
def atomic_dir(path: str | os.PathLike, marker: str) -> Iterator[str]:
    """Yields a fresh local temporary folder to build ``path``'s files in; they replace ``path`` if the block
    succeeds.

    For artifacts made of several files (a TFDS dataset): readers see the old folder or the new one, never a mix. On
    local disk the folder is renamed; on an object store its files are uploaded with ``marker`` (a file the block
    writes, which readers check) last.
    """
    path = epath.Path(path)
    local = not on_object_store(path)
    try:
        if local:
            path.parent.mkdir(parents=True, exist_ok=True)
        tmp = tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent if local else None)
    except OSError as e:
        raise ArtifactError(f"cannot write in {path.parent}: {e.strerror or e}") from e
    try:
        yield tmp
        if path.is_dir():
            path.rmtree()
        if local:
            os.replace(tmp, path)
        else:
            files = sorted((f for f in pathlib.Path(tmp).rglob("*") if f.is_file()), key=lambda f: f.name == marker)
            for file in files:
                (path / file.relative_to(tmp).as_posix()).write_bytes(file.read_bytes())
    except OSError as e:
        raise ArtifactError(f"cannot write {path}: {e.strerror or e}") from e
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


@contextlib.contextmanager
def local_file(path: str | os.PathLike) -> Iterator[str]:
    """``path`` as a local file name, for libraries that read only local files (safetensors): a file on an object
    store is copied to a temporary one for the block."""
    if not on_object_store(path):
        yield os.fspath(path)
        return
    with tempfile.NamedTemporaryFile(suffix=epath.Path(path).suffix) as f:
        f.write(epath.Path(path).read_bytes())
        f.flush()
        yield f.name


def write_bytes(path: str | os.PathLike, data: bytes) -> None:
    if on_object_store(path):
        try:
            epath.Path(path).write_bytes(data)
        except OSError as e:
            raise ArtifactError(f"cannot write {path}: {e.strerror or e}") from e
        return
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())


def write_text(path: str | os.PathLike, text: str) -> None:
    write_bytes(path, text.encode())


def write_json(path: str | os.PathLike, obj) -> None:
    write_text(path, json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n")


def read_json(path: str | os.PathLike):
    """The JSON value in ``path``; a damaged file is an error that names it."""
    try:
        return json.loads(epath.Path(path).read_text())
    except json.JSONDecodeError as e:
        raise ArtifactError(f"{path} is not valid JSON ({e}); delete it or rerun the stage that writes it") from e
