"""Contexts from a list the user gives (``config.generate.contexts_file``), in place of the caption bank's.

BOB's ablation draws contexts from 100 that an LLM invented instead of from the real images' captions; this is
that list's form: one ``background<TAB>pose`` per line, words as the prompt template takes them. Blank lines and
lines starting with ``#`` are skipped.
"""

from __future__ import annotations

from etils import epath

from bobjax import assets
from bobjax.errors import ConfigError


def read_contexts_file(name: str) -> list[tuple[str, str]]:
    """(background, pose) pairs of ``name`` (a path, ``gs://...`` or ``bobjax:ASSET``), in file order."""
    if not name:
        raise ConfigError("plan 'listed' draws contexts from config.generate.contexts_file, which is empty; give a "
                          "file with one 'background<TAB>pose' per line")
    path = epath.Path(assets.resolve(name))
    if not path.is_file():
        raise ConfigError(f"config.generate.contexts_file {name!r}: no such file ({path})")
    contexts = []
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        if not line.strip() or line.startswith("#"):
            continue
        fields = [f.strip() for f in line.split("\t")]
        if len(fields) != 2 or not all(fields):
            raise ConfigError(f"config.generate.contexts_file {name!r}, line {number}: expected "
                              f"'background<TAB>pose', got {line!r}")
        contexts.append((fields[0], fields[1]))
    if not contexts:
        raise ConfigError(f"config.generate.contexts_file {name!r} lists no context")
    return contexts
