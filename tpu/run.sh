#!/usr/bin/env bash
# shellcheck disable=SC2016,SC2088  # remote commands: ~ and $ expand on the workers
# Runs `zoo train` on every worker of a slice; exits with its status (75: preempted, rerun).
set -euo pipefail
# shellcheck source=common.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

usage() {
  cat <<EOF
Usage: $PROG --name NAME --workdir gs://BUCKET/PATH [--data-dir gs://BUCKET/DIR] [options] \\
         -- --config recipes/NAME.py:VARIANT [--config.KEY=VALUE ...]

Runs zoo train on all workers of slice NAME (ZOO_DISTRIBUTED=auto), shows its output
(also in ~/zoo-train.log on each worker) and exits with its status: 0 done, 75
preempted (rerun the same command to resume), 3 NaN loss, 255 ssh failed, other: a
crash. If this command is interrupted, zoo train saves a checkpoint and stops.

  --workdir gs://...      the run folder (checkpoints, metrics); must be on gs://
  --data-dir gs://...     TFDS data dir shared by all workers: --config.task.data_dir and
                          TFDS_DATA_DIR (needed on slices with several workers: only
                          worker 0 prepares the data)
  --project P, --zone Z   default: \$ZOO_TPU_PROJECT/\$ZOO_TPU_ZONE, then gcloud config
  --dry-run               print the gcloud command, run nothing
EOF
}

WORKDIR="" DATA_DIR="" RECIPE=()
while (($#)); do
  case $1 in
    --) shift; RECIPE=("$@"); break ;;
    --*=*) set -- "${1%%=*}" "${1#*=}" "${@:2}"; continue ;;
    --workdir) need "$@"; WORKDIR=$2; shift 2 ;;
    --data-dir) need "$@"; DATA_DIR=$2; shift 2 ;;
    *) common_flag "$@"; shift "$SHIFT" ;;
  esac
done
check_workdir "$WORKDIR"
check_recipe "${RECIPE[@]}"
resolve_common
if ((!DRY_RUN)) && [[ -z $DATA_DIR ]]; then
  log "note: no --data-dir; with several workers only worker 0 prepares data, in its own data_dir"
fi

env="ZOO_DISTRIBUTED=auto"
args=(--workdir "$WORKDIR" "${RECIPE[@]}")
if [[ -n $DATA_DIR ]]; then
  env+=" TFDS_DATA_DIR=$(shq "$DATA_DIR")"
  args+=("--config.task.data_dir=$DATA_DIR")
fi
# On each worker: zoo train writes to ~/zoo-train.log (a file, so a lost connection cannot
# break its output) and the session follows the log. The shell then ignores SIGTERM, so it
# outlives a preemption to report zoo's status. If the session ends first (ssh lost, Ctrl-C),
# tail stops and zoo gets SIGTERM: it saves a checkpoint and exits with status 75.
# The log exists before tail starts (else tail can find no file, end at once, and its kill
# would stop zoo before it began).
remote="cd ~/zoo || exit 1; : >~/zoo-train.log; $env ~/zoo-venv/bin/zoo train $(show "${args[@]}")"
remote+=" >~/zoo-train.log 2>&1 & pid=\$!; trap \"\" TERM"
remote+="; tail -n +1 -f --pid=\$pid ~/zoo-train.log; kill \$pid 2>/dev/null; wait \$pid"
status=0
gc compute tpus tpu-vm ssh "$NAME" "${LOC[@]}" --worker=all --command "$remote" || status=$?
((DRY_RUN)) || log "zoo train exited with status $status"
exit "$status"
