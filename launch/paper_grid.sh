#!/usr/bin/env bash
# Every cell of BOB's few-shot table that bobjax can run (configs/paper.py), each a comparison of its own in
# ROOT/<dataset>-<backbone>. Run from the repository root:
#
#   launch/paper_grid.sh ROOT [bobjax.main flags...]              every cell in turn, on this machine
#   sbatch --array=0-7 launch/paper_grid.sh ROOT [flags...]       one cell per SLURM array task (BOBJAX_VENV: a venv
#                                                                 with bobjax[cuda,torch]; --nodes=N for N per cell)
#   launch/paper_grid.sh --cells                                  the cells, one a line, in array order
#   python -m bobjax.report ROOT/*                                then: the paper's table with ours beside it
#
# Rerunning the same command resumes every cell: complete stages and finished sweep points are skipped. Flags go to
# every cell, e.g. --config.data.data_dir=/shared/tfds. A cell that cannot start (its dataset not prepared: see
# docs/data.md) or fails does not stop the others; the end names each such cell with its error and exits 1.
#SBATCH --job-name=bobjax-paper
#SBATCH --ntasks-per-node=1
#SBATCH --gpus-per-node=8
#SBATCH --cpus-per-task=32
#SBATCH --output=bobjax-paper-%A_%a.log
set -euo pipefail
cells=(aircraft:clip aircraft:rn50 cars:clip cars:rn50 cub:clip cub:rn50 pets:clip pets:rn50)
if [[ "${1:-}" == --cells ]]; then
  printf '%s\n' "${cells[@]}"
  exit 0
fi
if [[ $# -lt 1 || "$1" == -* ]]; then
  echo "usage: $0 ROOT [bobjax.main flags...] | $0 --cells" >&2
  exit 2
fi
root=$1
shift
run=(python -m bobjax.main)
if [[ -n "${SLURM_ARRAY_TASK_ID:-}" ]]; then
  if (( SLURM_ARRAY_TASK_ID >= ${#cells[@]} )); then
    echo "$0: SLURM_ARRAY_TASK_ID=$SLURM_ARRAY_TASK_ID, but there are ${#cells[@]} cells (--array=0-$(( ${#cells[@]} - 1 )))" >&2
    exit 2
  fi
  cells=("${cells[$SLURM_ARRAY_TASK_ID]}")
  . "${BOBJAX_VENV:?set BOBJAX_VENV to a venv with bobjax[cuda,torch] installed}/bin/activate"
  run=(srun "${run[@]}")
fi
# A cell that fails (an unprepared dataset stops its cell in seconds, naming the command that prepares it) does not
# stop the others; the summary names each cell that did not finish, with its last `bobjax: error:` line.
errors=$(mktemp -d)
trap 'rm -rf "$errors"' EXIT
failed=()
exec 3>&1
for cell in "${cells[@]}"; do
  dataset=${cell%:*} backbone=${cell#*:}
  status=0
  "${run[@]}" "--config=configs/paper.py:dataset=$dataset,backbone=$backbone" --workdir="$root/$dataset-$backbone" \
    "$@" 2>&1 1>&3 3>&- | tee /dev/stderr | { grep '^bobjax: error:' || true; } > "$errors/cell" \
    || status=${PIPESTATUS[0]}
  if (( status )); then
    failed+=("$dataset-$backbone (exit $status): $(tail -n 1 "$errors/cell")")
  fi
done
if (( ${#failed[@]} )); then
  echo "$0: ${#failed[@]} of ${#cells[@]} cells did not finish:" >&2
  printf '  %s\n' "${failed[@]}" >&2
  exit 1
fi
