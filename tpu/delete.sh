#!/usr/bin/env bash
# Deletes a slice: its queued resource and TPU VM (billing stops).
set -euo pipefail
# shellcheck source=common.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

usage() {
  cat <<EOF
Usage: $PROG --name NAME [--project P] [--zone Z] [--dry-run]

Deletes queued resource NAME and its TPU VM. The run's gs:// workdir stays.
EOF
}

while (($#)); do
  case $1 in
    --*=*) set -- "${1%%=*}" "${1#*=}" "${@:2}"; continue ;;
    *) common_flag "$@"; shift "$SHIFT" ;;
  esac
done
resolve_common
gc compute tpus queued-resources delete "$NAME" "${LOC[@]}" --force --quiet
