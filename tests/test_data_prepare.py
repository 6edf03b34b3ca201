"""docs/data.md's preparation commands are the ones bobjax's errors name; the aircraft one, run as written against
bobjax's builder and a small archive in the official layout, prepares the dataset bobjax reads; launch/paper_grid.sh
runs the cells it can and names those that cannot start."""

from __future__ import annotations

import os
import pathlib
import re
import shlex
import subprocess
import sys

import pytest
import tfds_builders

from bobjax.data import sources
from bobjax.data.sources import DataError

ROOT = pathlib.Path(__file__).resolve().parents[1]
DOCS = (ROOT / "docs" / "data.md").read_text()
PAPER_DATASETS = ("caltech_birds2011", "oxford_iiit_pet", "fgvc_aircraft", "cars196")


def documented_command(name: str) -> str:
    found = re.findall(rf"`(python -m bobjax.data.prepare {name} [^`]*)`", DOCS)
    assert len(set(found)) == 1, f"docs/data.md should give one command for {name}, found {found}"
    return found[0]


@pytest.mark.parametrize("name", PAPER_DATASETS)
def test_docs_give_the_command_bobjax_errors_name(name, tmp_path):
    assert documented_command(name) == sources.prepare_command(name, "DATA_DIR")
    with pytest.raises(DataError) as error:
        sources.tfds_source(name, str(tmp_path), "thing")
    assert sources.prepare_command(name, str(tmp_path)) in str(error.value)


def test_documented_aircraft_command_prepares_the_dataset(tmp_path):
    import tensorflow_datasets as tfds

    per_class = {"train": 2, "validation": 1, "test": 1}
    manual = tmp_path / "downloads" / "manual"
    manual.mkdir(parents=True)
    tfds_builders.write_aircraft_archive(str(manual), per_class)
    argv = shlex.split(documented_command("fgvc_aircraft").replace("DATA_DIR", str(tmp_path)))
    assert argv[0] == "python"
    result = subprocess.run([sys.executable, *argv[1:]], env={**os.environ, "PYTHONPATH": str(ROOT)},
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert result.stdout.splitlines()[-1] == f"fgvc_aircraft: prepared in {tmp_path}"

    builder = tfds.builder("fgvc_aircraft", data_dir=tmp_path)
    assert builder.is_prepared() and list(pathlib.Path(builder.data_path).glob("*.array_record-*"))
    assert {s: builder.info.splits[s].num_examples for s in per_class} == {
        s: n * len(tfds_builders.AIRCRAFT_VARIANTS) for s, n in per_class.items()}
    assert builder.info.features["label"].names == tfds_builders.AIRCRAFT_VARIANTS
    source = sources.tfds_source("fgvc_aircraft", str(tmp_path), "aircraft")
    assert source.class_names[:2] == ["707-320", "727-200"]


STUB_PYTHON = """#!/bin/bash
# Stands in for `python -m bobjax.main`: records each call; the aircraft cells fail as an unprepared dataset does.
[[ $1 == -m && $2 == bobjax.main ]] || { echo "stub python: unexpected $*" >&2; exit 2; }
echo "$3" >> "$GRID_CALLS"
if [[ $3 == *dataset=aircraft* ]]; then
  echo "bobjax: error: TFDS dataset 'fgvc_aircraft' is not prepared in /data; run \\`tfds build fgvc_aircraft\\`" >&2
  exit 1
fi
echo "cell done"
"""


def test_paper_grid_runs_every_cell_it_can_and_names_those_it_cannot(tmp_path):
    stub = tmp_path / "bin" / "python"
    stub.parent.mkdir()
    stub.write_text(STUB_PYTHON)
    stub.chmod(0o755)
    calls = tmp_path / "calls"
    env = {"PATH": f"{stub.parent}:/usr/bin:/bin", "GRID_CALLS": str(calls)}
    result = subprocess.run(["bash", "launch/paper_grid.sh", str(tmp_path / "runs"), "--config.data.data_dir=/data"],
                            cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
    cells = subprocess.run(["bash", "launch/paper_grid.sh", "--cells"], cwd=ROOT, capture_output=True, text=True,
                           check=True).stdout.split()
    assert result.returncode == 1
    ran = calls.read_text().split()
    assert ran == [f"--config=configs/paper.py:dataset={c.replace(':', ',backbone=')}" for c in cells]
    assert result.stdout.count("cell done") == len(cells) - 2
    summary = result.stderr[result.stderr.index(f"2 of {len(cells)} cells did not finish:"):].splitlines()
    assert summary[1:] == [f"  aircraft-{b} (exit 1): bobjax: error: TFDS dataset 'fgvc_aircraft' is not prepared in "
                           f"/data; run `tfds build fgvc_aircraft`" for b in ("clip", "rn50")]


def test_prepare_names_the_missing_manual_files_and_unknown_datasets(tmp_path, capsys):
    from bobjax.data import prepare

    assert prepare.main(["fgvc_aircraft", f"--data_dir={tmp_path}"]) == 1
    error = capsys.readouterr().err
    assert error.startswith("bobjax.data.prepare: error: preparing 'fgvc_aircraft'")
    assert f"docs/data.md says which files go in {tmp_path}/downloads/manual" in error
    assert "fgvc-aircraft-2013b.tar.gz" in error  # The builder's own instructions, through TFDS's error.
    assert prepare.main(["no_such_set", f"--data_dir={tmp_path}"]) == 1
    assert "TFDS has no dataset 'no_such_set'" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        prepare.main(["cars196", "--data_dir=gs://bucket/tfds"])
    assert "prepare into a local folder" in capsys.readouterr().err
