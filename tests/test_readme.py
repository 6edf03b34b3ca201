"""The README's quick start stays true: two commands, the demo config, and the exact command CI runs."""

import os
import re

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def quick_start_commands():
    text = open(os.path.join(ROOT, "README.md")).read()
    section = text.split("## Quick start", 1)[1]
    block = re.search(r"```bash\n(.*?)```", section, re.S).group(1)
    return [line for line in block.splitlines() if line.strip()]


def test_quick_start_is_two_commands_and_ci_runs_the_second():
    demo, tests = quick_start_commands()
    assert "python -m bobjax.main --config=configs/demo.py" in demo
    assert os.path.exists(os.path.join(ROOT, "configs", "demo.py"))
    ci = open(os.path.join(ROOT, ".ci", "run")).read().strip().splitlines()
    assert ci[-1] == tests


def test_readme_stays_short():
    """The README is what a newcomer reads in two minutes (two screens); detail belongs in docs/."""
    lines = open(os.path.join(ROOT, "README.md")).read().splitlines()
    assert len(lines) <= 120, f"README.md has {len(lines)} lines; move detail into a guide under docs/"
