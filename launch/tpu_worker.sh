#!/usr/bin/env bash
# The worker's half of launch/tpu_vm.sh, run by it over ssh on every worker of a Cloud TPU VM (not by hand):
#
#   bash ~/bobjax.new/launch/tpu_worker.sh start FLAGS...   swap in the new copy, venv, install, start detached
#   bash ~/bobjax/launch/tpu_worker.sh status | stop
#
# Files on each worker: ~/bobjax (the code), ~/bobjax-venv, ~/bobjax-job.log (the previous one: .log.prev),
# ~/bobjax-job.pid (the job's process group) and ~/bobjax-job.exit (its exit code, once it ends).
set -euo pipefail
code=~/bobjax venv=~/bobjax-venv log=~/bobjax-job.log pidfile=~/bobjax-job.pid exitfile=~/bobjax-job.exit
worker=$(hostname)

running() {  # The job's pid if it still runs (a zombie no longer does).
  local pid state
  [[ -f $pidfile ]] && pid=$(cat "$pidfile") && state=$(ps -o stat= -p "$pid") && [[ $state != Z* ]] && echo "$pid"
}

is_311() {  # Whether the python $1 is >= 3.11 (bobjax's floor; jax 0.10.2 has no 3.10 wheels).
  "$1" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null
}

make_venv() {
  if [[ -x $venv/bin/python ]] && is_311 "$venv/bin/python"; then
    return
  fi
  rm -rf "$venv"  # Also a 3.10 venv left by an earlier version of this launcher.
  if is_311 python3; then
    echo "$worker: venv from $(python3 --version)"
    python3 -m venv "$venv"
    return
  fi
  # Ubuntu 22.04 (the tpu-ubuntu2204-base and v2-alpha-tpuv* images) ships 3.10: uv fetches a managed CPython 3.11.
  local uv
  uv=$(command -v uv || echo ~/.local/bin/uv)
  if [[ ! -x $uv ]]; then
    python3 -m pip install -q --user uv
  fi
  echo "$worker: $(python3 --version) is older than 3.11; venv from uv's managed CPython 3.11"
  "$uv" venv --seed --python 3.11 "$venv"
}

start() {
  local pid
  if pid=$(running); then
    rm -rf ~/bobjax.new
    echo "$worker: the job still runs (pid $pid); stop it first (launch/tpu_vm.sh TPU ZONE stop)" >&2
    exit 1
  fi
  rm -rf "$code"
  mv ~/bobjax.new "$code"
  cd "$code"
  make_venv
  export PATH=$venv/bin:$PATH VIRTUAL_ENV=$venv
  eval "$BOBJAX_TPU_INSTALL"
  [[ -f $log ]] && mv -f "$log" "$log.prev"
  rm -f "$exitfile"
  # setsid: its own session and process group, so neither the ssh session's end nor its hangup reaches the job;
  # stop signals that group. BOBJAX_ACCELERATOR=tpu: bobjax stops if JAX finds no TPU rather than run on the CPU.
  BOBJAX_ACCELERATOR="${BOBJAX_ACCELERATOR:-tpu}" setsid nohup bash -c 'eval "$0 \"\$@\""; echo $? > '"$exitfile" "$BOBJAX_TPU_RUN" "$@" \
    > "$log" 2>&1 < /dev/null &
  pid=$!
  echo "$pid" > "$pidfile"
  # Return (and so end the ssh session) only once setsid has moved the job out of it.
  for _ in $(seq 100); do
    [[ $(ps -o sid= -p "$pid") -eq $pid ]] && break
    sleep 0.1
  done
  echo "$worker: started (pid $pid), log $log"
}

status() {
  local pid
  if [[ -f $exitfile ]]; then
    echo "$worker: finished, exit code $(cat "$exitfile")"
  elif pid=$(running); then
    echo "$worker: running (pid $pid); $(tail -n 1 "$log")"
  else
    echo "$worker: not running"
  fi
}

stop() {
  local pid
  if ! pid=$(running); then
    echo "$worker: not running"
    return
  fi
  kill -TERM -- "-$pid"
  for _ in $(seq 30); do
    running > /dev/null || { echo "$worker: stopped"; return; }
    sleep 1
  done
  kill -KILL -- "-$pid"
  echo "$worker: killed (did not stop within 30 s of SIGTERM)"
}

case "${1:-}" in
  start) shift; start "$@" ;;
  status | stop) "$1" ;;
  *) echo "usage: $0 start FLAGS... | status | stop" >&2; exit 2 ;;
esac
