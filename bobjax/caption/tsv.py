"""The BOB authors' caption files: one TSV per attribute, header ``image<TAB>response``, rows aligned by image.

Exporting lets people read, diff or hand-edit captions; importing lets a run reuse released captions (or
those of another captioner) instead of running a VLM.
"""

from __future__ import annotations

from collections.abc import Sequence

from etils import epath

from bobjax import artifacts
from bobjax.data.sources import DataError

HEADER = ("image", "response")


def _one_line(text: str) -> str:
    return " ".join(text.split())


def write_tsv(path: str, image_ids: Sequence[str], responses: Sequence[str]) -> None:
    rows = ["\t".join(HEADER)] + [f"{_one_line(i)}\t{_one_line(r)}" for i, r in zip(image_ids, responses, strict=True)]
    artifacts.write_text(path, "\n".join(rows) + "\n")


def same_image(found: str, expected: str) -> bool:
    """A TSV's image names the image id exactly or by trailing path components (paths from another machine)."""
    found = found.replace("\\", "/")
    return found == expected or found.endswith("/" + expected) or expected.endswith("/" + found)


def read_tsv(path: str, image_ids: Sequence[str]) -> list[str]:
    """The responses of ``path``, whose rows must name ``image_ids`` in that order; else the first mismatch is named."""
    path = epath.Path(path)
    if not path.is_file():
        raise DataError(f"caption file {path} does not exist; expected a TSV with header 'image<TAB>response'")
    lines = path.read_text(encoding="utf-8").splitlines()
    if not lines or tuple(lines[0].split("\t")) != HEADER:
        found = lines[0] if lines else "an empty file"
        raise DataError(f"caption file {path}: expected the header 'image<TAB>response', found {found!r}")
    rows = lines[1:]
    while rows and not rows[-1].strip():
        rows.pop()
    responses = []
    for number, (line, expected) in enumerate(zip(rows, image_ids), 2):
        if "\t" not in line:
            raise DataError(f"caption file {path} line {number}: expected 'image<TAB>response', found {line!r}")
        image, response = line.split("\t", 1)
        if not same_image(image, expected):
            raise DataError(f"caption file {path} line {number}: expected image {expected!r}, found {image!r}")
        responses.append(response)
    if len(rows) != len(image_ids):
        line = min(len(rows), len(image_ids)) + 2
        expected = repr(image_ids[len(rows)]) if len(rows) < len(image_ids) else "the end of the file"
        found = repr(rows[len(image_ids)].split("\t")[0]) if len(rows) > len(image_ids) else "the end of the file"
        raise DataError(f"caption file {path} has {len(rows)} rows for the {len(image_ids)} images of the train "
                        f"split; first mismatch at line {line}: expected {expected}, found {found}")
    return responses
