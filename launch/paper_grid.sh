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
# every cell, e.g. --config.data.data_dir=/shared/tfds.
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
for cell in "${cells[@]}"; do
  dataset=${cell%:*} backbone=${cell#*:}
  "${run[@]}" "--config=configs/paper.py:dataset=$dataset,backbone=$backbone" --workdir="$root/$dataset-$backbone" "$@"
done
