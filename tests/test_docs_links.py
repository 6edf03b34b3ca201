"""The README and the guides in docs/ point only at things that exist: every relative link (and its #anchor), and
every repository path they name (``configs/demo.py`` in a command, ``bobjax/models/attention.py`` in the text), so a
renamed file or section breaks this test instead of a reader's click or copied command."""

import glob
import os
import re
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PAGES = ["README.md"] + sorted(os.path.relpath(p, ROOT) for p in glob.glob(os.path.join(ROOT, "docs", "*.md")))

LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)\)")
# A path into the repository's top-level folders, as a command or the text names it: configs/demo.py:seeds=3 names
# configs/demo.py; a trailing full stop or comma is the sentence's.
REPO_PATH = re.compile(r"(?<![\w./:-])((?:bobjax|benchmarks|configs|docs|launch|tests)/[\w./-]*)")


def slug(heading: str) -> str:
    """GitHub's anchor of a Markdown heading: lower case, punctuation dropped, spaces as hyphens."""
    text = re.sub(r"[`*_]", "", heading.strip().lower())
    return re.sub(r"[^\w\- ]", "", text).replace(" ", "-")


def anchors(path: str) -> set[str]:
    text = re.sub(r"```.*?```", "", open(path).read(), flags=re.S)
    return {slug(h) for h in re.findall(r"^#+ (.*)$", text, re.M)}


def links(text: str) -> list[str]:
    return [t for t in LINK.findall(text) if not re.match(r"[a-z]+:", t)]  # http:, https:, mailto: are not ours.


def repo_paths(text: str) -> list[str]:
    return [p.rstrip(".,") for p in REPO_PATH.findall(text)]


def broken(page: str) -> list[str]:
    """What ``page`` (relative to the repository) names that does not exist, one line each."""
    text = open(os.path.join(ROOT, page)).read()
    here = os.path.dirname(os.path.join(ROOT, page))
    out = []
    for target in links(text):
        path, _, anchor = target.partition("#")
        full = os.path.normpath(os.path.join(here, path)) if path else os.path.join(ROOT, page)
        if not os.path.exists(full):
            out.append(f"{page}: link {target!r}: {os.path.relpath(full, ROOT)} does not exist")
        elif anchor and full.endswith(".md") and anchor not in anchors(full):
            out.append(f"{page}: link {target!r}: no heading with anchor #{anchor} in {os.path.relpath(full, ROOT)}")
    for path in repo_paths(text):
        if not os.path.exists(os.path.join(ROOT, path)):
            out.append(f"{page}: names {path}, which does not exist")
    return out


@pytest.mark.parametrize("page", PAGES)
def test_every_link_and_path_exists(page):
    assert broken(page) == []


def test_the_map_of_the_tests_names_every_test_file():
    """docs/development.md's table of which module each test file covers: a new or renamed test file shows there."""
    text = open(os.path.join(ROOT, "docs", "development.md")).read()
    table = text.split("| code | tests (in `tests/`) |", 1)[1].split("\n\n", 1)[0]
    mapped = set(re.findall(r"`(test_\w+\.py)`", table))
    present = {os.path.basename(p) for p in glob.glob(os.path.join(ROOT, "tests", "test_*.py"))}
    assert sorted(present - mapped) == [], "test files missing from docs/development.md's map of the tests"
    assert sorted(mapped - present) == [], "docs/development.md's map of the tests names files that do not exist"


def test_every_guide_is_listed_in_the_readme():
    readme = links(open(os.path.join(ROOT, "README.md")).read())
    assert [p for p in PAGES[1:] if p not in readme] == []


def test_a_broken_link_a_missing_anchor_and_a_missing_config_are_found(tmp_path, monkeypatch):
    page = tmp_path / "docs" / "page.md"
    page.parent.mkdir()
    page.write_text("# A title\n\n[ok](#a-title) [gone](missing.md) [anchor](page.md#nowhere) "
                    "[web](https://example.com/x)\n\n```bash\npython -m bobjax.main --config=configs/nope.py:seeds=3\n"
                    "```\n")
    monkeypatch.setattr(sys.modules[__name__], "ROOT", str(tmp_path))
    found = broken("docs/page.md")
    assert len(found) == 3
    assert "docs/missing.md does not exist" in found[0]
    assert "#nowhere" in found[1]
    assert "configs/nope.py" in found[2]
