"""The VLM's answers, kept per image as they come, so a killed caption stage resumes where it stopped.

An append-only JSONL file in the stage's work folder (``WORKDIR/captions.partial/responses.jsonl``), one line
per finished image, fsynced after every batch. A kill can only tear the last line; it is dropped on reopening, so that image is
asked again and no image is asked twice. ``--redo=caption`` deletes that folder, and with it these answers.
The config the answers were made with is kept beside them; answers from another config are refused.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable

from bobjax import artifacts
from bobjax.artifacts import ArtifactError


class ResponseCache:
    """``image_id -> record`` of every image answered so far, for the config described by ``key`` (JSON values)."""

    def __init__(self, folder: str, key: dict):
        self.path = os.path.join(folder, "responses.jsonl")
        key_path = os.path.join(folder, "responses.config.json")
        if os.path.exists(key_path):
            with open(key_path) as f:
                recorded = json.load(f)
            if recorded != key:
                raise ArtifactError(
                    f"{self.path} holds answers made with another caption config ({key_path}); rerun with "
                    "--redo=caption to discard them, or restore that config"
                )
        else:
            artifacts.write_json(key_path, key)
        self.records: dict[str, dict] = {}
        if os.path.exists(self.path):
            self._load()

    def _load(self) -> None:
        with open(self.path, "rb") as f:
            data = f.read()
        complete = data[: data.rfind(b"\n") + 1]  # A kill mid-append leaves at most one partial last line.
        for number, line in enumerate(complete.splitlines(), 1):
            try:
                record = json.loads(line)
            except ValueError as e:
                raise ArtifactError(f"{self.path} line {number} is not JSON ({e}); rerun with --redo=caption") from e
            self.records[record["image_id"]] = record
        if len(complete) < len(data):
            with open(self.path, "r+b") as f:
                f.truncate(len(complete))

    def __contains__(self, image_id: str) -> bool:
        return image_id in self.records

    def add(self, records: Iterable[dict]) -> None:
        """Appends ``records`` (each with an ``image_id``) durably, in one write."""
        records = list(records)
        lines = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records)
        with open(self.path, "a", encoding="utf-8") as f:
            f.write(lines)
            f.flush()
            os.fsync(f.fileno())
        self.records.update((r["image_id"], r) for r in records)
