"""Files shipped inside the bobjax package, named ``bobjax:NAME`` in configs (e.g. the toy-world SD prior)."""

from __future__ import annotations

import os

from bobjax.errors import ConfigError

PREFIX = "bobjax:"
ASSETS_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "assets")


def resolve(name: str) -> str:
    """``bobjax:NAME`` -> the path of asset NAME; any other name (a path or hub id) is returned unchanged."""
    if not name.startswith(PREFIX):
        return os.path.expanduser(name)
    path = os.path.join(ASSETS_DIR, name[len(PREFIX):])
    if not os.path.exists(path):
        shipped = sorted(os.listdir(ASSETS_DIR)) if os.path.isdir(ASSETS_DIR) else []
        raise ConfigError(f"{name!r} is not shipped with bobjax (no {path}); shipped assets: {shipped}")
    return path
