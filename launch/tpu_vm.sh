#!/usr/bin/env bash
# Runs one bobjax command on every worker of a Cloud TPU VM (single- or multi-host), as JAX requires.
#
#   launch/tpu_vm.sh TPU_NAME ZONE --config=configs/cub.py --workdir=gs://bucket/cub [--config.x=y ...]
#
# Each worker gets the repository (rsync of this checkout), installs it with jax[tpu], and runs
# `python -m bobjax.main` with the same arguments; jax.distributed.initialize() finds the other workers by itself.
set -euo pipefail
if [[ $# -lt 3 ]]; then
  echo "usage: $0 TPU_NAME ZONE [bobjax.main flags...]" >&2
  exit 2
fi
tpu=$1 zone=$2
shift 2
repo=$(cd "$(dirname "$0")/.." && pwd)
args=$(printf '%q ' "$@")
gcloud compute tpus tpu-vm scp --recurse --zone="$zone" --worker=all "$repo" "$tpu":~/bobjax
gcloud compute tpus tpu-vm ssh "$tpu" --zone="$zone" --worker=all --command="
  set -e; cd ~/bobjax
  python3 -m venv ~/bobjax-venv && . ~/bobjax-venv/bin/activate
  pip install -q -e '.[tpu,torch]'
  python -m bobjax.main $args"
