#!/usr/bin/env bash
# Runs one bobjax command on every worker of a Cloud TPU VM (single- or multi-host), as JAX requires, detached.
#
#   launch/tpu_vm.sh TPU ZONE [--caption-here] [bobjax.main flags...]   copy this tree, install, start the job
#   launch/tpu_vm.sh TPU ZONE logs [WORKER]     follow a worker's log (default worker 0; Ctrl-C stops following only)
#   launch/tpu_vm.sh TPU ZONE status            which workers still run the job, and the exit code of those done
#   launch/tpu_vm.sh TPU ZONE stop              stop the job on every worker
#
# Start copies this checkout (no .git, venvs, runs/, caches) to ~/bobjax on every worker, replacing the previous
# copy; makes ~/bobjax-venv with Python >= 3.11 (the VM's python3 if new enough, else a uv-managed CPython 3.11:
# the stock Ubuntu 22.04 TPU images have 3.10); installs '.[tpu]' (and the CPU build of torch with --caption-here,
# for captioning with the VLM on the VM's CPU); then starts `python -m bobjax.main FLAGS` under setsid/nohup with
# BOBJAX_ACCELERATOR=tpu, logging to ~/bobjax-job.log on each worker. The job outlives the ssh session. Rerunning the
# same start command after a stop, a crash or a preemption resumes the run (complete stages are skipped); it
# refuses while a worker still runs the previous job.
#
# For tests only: BOBJAX_TPU_INSTALL and BOBJAX_TPU_RUN replace the install and run commands (default: the real ones).
set -euo pipefail
usage="usage: $0 TPU ZONE [--caption-here] [bobjax.main flags...] | $0 TPU ZONE logs [WORKER] | status | stop"
if [[ $# -lt 3 ]]; then
  echo "$usage" >&2
  exit 2
fi
tpu=$1 zone=$2
shift 2
repo=$(cd "$(dirname "$0")/.." && pwd)
ssh=(gcloud compute tpus tpu-vm ssh "$tpu" --zone="$zone")

case "$1" in
  logs)
    exec "${ssh[@]}" --worker="${2:-0}" --command='tail -n +1 -F ~/bobjax-job.log' ;;
  status | stop)
    exec "${ssh[@]}" --worker=all --command="bash ~/bobjax/launch/tpu_worker.sh $1" ;;
  -*) ;;
  *)
    echo "$0: unknown command '$1'; $usage" >&2
    exit 2 ;;
esac

# torch is pinned as in pyproject.toml's torch extra; the CPU build, as a TPU VM has no GPU for the caption VLM.
install="python -m pip install -q -e '.[tpu]'"
if [[ "$1" == --caption-here ]]; then
  shift
  install="python -m pip install -q torch==2.14.1 --index-url https://download.pytorch.org/whl/cpu && $install"
fi
install=${BOBJAX_TPU_INSTALL:-$install}
run=${BOBJAX_TPU_RUN:-python -m bobjax.main}

tarball=$(mktemp -d)/bobjax.tar.gz
trap 'rm -rf "$(dirname "$tarball")"' EXIT
tar -czf "$tarball" -C "$repo" --exclude=.git --exclude=.venv --exclude=venv --exclude=./runs --exclude=__pycache__ \
  --exclude=.pytest_cache --exclude='*.egg-info' --exclude=./build --exclude=.whl .
gcloud compute tpus tpu-vm scp --zone="$zone" --worker=all "$tarball" "$tpu":bobjax.tar.gz
# Unpacked beside the old copy; the worker script swaps it in only once it knows no job is running.
"${ssh[@]}" --worker=all --command="set -e; rm -rf ~/bobjax.new; mkdir ~/bobjax.new
  tar -xzf ~/bobjax.tar.gz -C ~/bobjax.new; rm ~/bobjax.tar.gz
  BOBJAX_TPU_INSTALL=$(printf '%q' "$install") BOBJAX_TPU_RUN=$(printf '%q' "$run") \
    bash ~/bobjax.new/launch/tpu_worker.sh start $(printf '%q ' "$@")"
echo "started on every worker of $tpu. Follow: $0 $tpu $zone logs [WORKER]; running workers: $0 $tpu $zone status;" \
  "stop: $0 $tpu $zone stop; resume: rerun this command"
