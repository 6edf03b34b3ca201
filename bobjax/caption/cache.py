"""The VLM's answers, kept per image as they come, so a killed caption stage resumes where it stopped.

An append-only JSONL file in the stage's work folder (``WORKDIR/captions.partial/responses.jsonl``), one line
per finished image, fsynced after every batch. A kill can only tear the last line; it is dropped on reopening, so that image is
asked again and no image is asked twice. An object store cannot append: there the file is rewritten whole after
every batch, in one write (a few MB for thousands of images), so it is never torn. ``--redo=caption`` deletes
that folder, and with it these answers.
The config the answers were made with is kept beside them; answers from another config are refused.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterable

from etils import epath

from bobjax import artifacts
from bobjax.artifacts import ArtifactError


class ResponseCache:
    """``image_id -> record`` of every image answered so far, for the config described by ``key`` (JSON values);
    answers whose recorded key ``accepts`` refuses are another config's (default: any key but ``key``)."""

    def __init__(self, folder, key: dict, accepts: Callable[[dict], bool] | None = None):
        self.path = epath.Path(folder) / "responses.jsonl"
        key_path = epath.Path(folder) / "responses.config.json"
        if key_path.exists():
            if not (accepts or key.__eq__)(artifacts.read_json(key_path)):
                raise ArtifactError(
                    f"{self.path} holds answers made with another caption config ({key_path}); rerun with "
                    "--redo=caption to discard them, or restore that config"
                )
        else:
            artifacts.write_json(key_path, key)
        self.records: dict[str, dict] = {}
        if self.path.exists():
            self._load()

    def _load(self) -> None:
        data = self.path.read_bytes()
        complete = data[: data.rfind(b"\n") + 1]  # A kill mid-append leaves at most one partial last line.
        for number, line in enumerate(complete.splitlines(), 1):
            try:
                record = json.loads(line)
            except ValueError as e:
                raise ArtifactError(f"{self.path} line {number} is not JSON ({e}); rerun with --redo=caption") from e
            self.records[record["image_id"]] = record
        if len(complete) < len(data):  # On local disk only: an object is never torn.
            with open(self.path, "r+b") as f:
                f.truncate(len(complete))

    def __contains__(self, image_id: str) -> bool:
        return image_id in self.records

    def add(self, records: Iterable[dict]) -> None:
        """Appends ``records`` (each with an ``image_id``) durably, in one write."""
        records = list(records)
        lines = "".join(_line(r) for r in records)
        if artifacts.on_object_store(self.path):
            artifacts.write_text(self.path, "".join(map(_line, self.records.values())) + lines)
        else:
            with open(self.path, "a", encoding="utf-8") as f:
                f.write(lines)
                f.flush()
                os.fsync(f.fileno())
        self.records.update((r["image_id"], r) for r in records)


def _line(record: dict) -> str:
    return json.dumps(record, ensure_ascii=False) + "\n"
