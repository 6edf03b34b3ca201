"""The README's quick start stays true: two commands, the demo config, and the exact command CI runs."""

import os
import re

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def quick_start_commands():
    text = open(os.path.join(ROOT, "README.md")).read()
    section = text.split("## Quick start", 1)[1]
    block = re.search(r"```bash\n(.*?)```", section, re.S).group(1)
    return [line for line in block.splitlines() if line.strip()]


def ci_commands():
    """The lines of .ci/run that run something (no comments, no blank lines)."""
    lines = open(os.path.join(ROOT, ".ci", "run")).read().splitlines()
    return [line for line in lines if line.strip() and not line.lstrip().startswith("#")]


def test_quick_start_is_two_commands_and_ci_runs_the_second():
    demo, tests = quick_start_commands()
    assert "python -m bobjax.main --config=configs/demo.py" in demo
    assert os.path.exists(os.path.join(ROOT, "configs", "demo.py"))
    ci = ci_commands()
    assert tests in ci, f"CI does not run the README's test command {tests!r} verbatim"


def test_ci_runs_the_slow_tests_after_the_default_suite():
    """The default suite skips the long end-to-end runs (marker ``slow``); CI runs exactly those afterwards, and an
    empty selection (pytest's exit code 5) is not a failure."""
    _, tests = quick_start_commands()
    ci = ci_commands()
    slow = [i for i, line in enumerate(ci) if "-m slow" in line and "--runslow" in line]
    assert slow, "CI never runs the slow tests (-m slow --runslow)"
    assert slow[0] > ci.index(tests), "CI runs the slow tests before the README's command"
    assert "-eq 5" in ci[slow[0]], "an empty slow selection (exit code 5) would fail CI"


def test_readme_stays_short():
    """The README is what a newcomer reads in two minutes (two screens); detail belongs in docs/."""
    lines = open(os.path.join(ROOT, "README.md")).read().splitlines()
    assert len(lines) <= 120, f"README.md has {len(lines)} lines; move detail into a guide under docs/"
