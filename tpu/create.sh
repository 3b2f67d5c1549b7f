#!/usr/bin/env bash
# Creates a TPU slice as a queued resource and waits until it is ACTIVE.
set -euo pipefail
# shellcheck source=common.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

usage() {
  cat <<EOF
Usage: $PROG --name NAME --type TYPE [--spot | --on-demand | --reserved] [options]

Creates queued resource NAME (TPU VM node NAME) and waits until it is ACTIVE.

  --type TYPE             v5e-8, v5p-32, v6e-8, v4-8, ... (v5e-N is v5litepod-N)
  --spot                  preemptible capacity, the cheapest (default)
  --on-demand             on-demand capacity
  --reserved              your project's reservation
  --runtime-version V     TPU VM image (default: the type's, e.g. v2-alpha-tpuv5-lite)
  --no-wait               return once the request is queued
  --poll-seconds S        between state checks (default $POLL)
  --project P, --zone Z   default: \$ZOO_TPU_PROJECT/\$ZOO_TPU_ZONE, then gcloud config
  --dry-run               print the gcloud commands, run nothing
EOF
}

TYPE="" CAPACITY=--spot RUNTIME_FLAG="" WAIT=1
while (($#)); do
  case $1 in
    --*=*) set -- "${1%%=*}" "${1#*=}" "${@:2}"; continue ;;
    --type) need "$@"; TYPE=$2; shift 2 ;;
    --spot | --reserved) CAPACITY=$1; shift ;;
    --on-demand) CAPACITY=""; shift ;;
    --runtime-version) need "$@"; RUNTIME_FLAG=$2; shift 2 ;;
    --no-wait) WAIT=0; shift ;;
    --poll-seconds) need "$@"; set_poll "$2"; shift 2 ;;
    *) common_flag "$@"; shift "$SHIFT" ;;
  esac
done
[[ -n $TYPE ]] || die "--type is required, e.g. --type v5e-8"
tpu_type "$TYPE"
resolve_common

gc compute tpus queued-resources create "$NAME" --node-id "$NAME" "${LOC[@]}" \
  --accelerator-type "$ACCEL" --runtime-version "${RUNTIME_FLAG:-$RUNTIME}" ${CAPACITY:+"$CAPACITY"}
((WAIT)) || exit 0
if ! wait_active; then
  log "$NAME is $STATE, not ACTIVE. Why:" \
    "gcloud compute tpus queued-resources describe $NAME $(show "${LOC[@]}")"
  log "then free the name: tpu/delete.sh $NAME $(show "${LOC[@]}")"
  exit 1
fi
hint "next: tpu/setup.sh $NAME $(show "${LOC[@]}")"
