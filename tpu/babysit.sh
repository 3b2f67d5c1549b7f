#!/usr/bin/env bash
# Sees a run through on (preemptible) TPU slices: create -> setup -> run, and after a
# preemption delete -> create -> setup -> run again (zoo train resumes from its gs:// checkpoint).
set -euo pipefail
# shellcheck source=common.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

usage() {
  cat <<EOF
Usage: $PROG --name NAME --type TYPE --workdir gs://BUCKET/PATH [options] \\
         -- --config recipes/NAME.py:VARIANT [--config.KEY=VALUE ...]

Creates slice NAME if absent, sets it up and runs zoo train on it (tpu/create.sh,
setup.sh, run.sh). When the run is preempted (status 75) or the slice is lost
(SUSPENDED, FAILED, gone), it deletes the slice, creates it again and reruns: the
run resumes from its last checkpoint in the workdir. Stops on status 0 (done), 3
(NaN loss), another failure on a healthy slice, or after --max-attempts.

  slice:  --type TYPE, --spot (default) | --on-demand | --reserved, --runtime-version V
  setup:  --repo URL, --ref REF, --extras E, --setup-command CMD   (see tpu/setup.sh)
  run:    --workdir gs://..., --data-dir gs://...                   (see tpu/run.sh)
  --max-attempts N        slices to try, at most (default 30)
  --poll-seconds S        between state checks and attempts (default $POLL)
  --delete-when-done      delete the slice once the run has finished
  --project P, --zone Z   default: \$ZOO_TPU_PROJECT/\$ZOO_TPU_ZONE, then gcloud config
  --dry-run               print the commands of one attempt, run nothing
EOF
}

TYPE="" PIN=1 CREATE=() SETUP=() RUN=() RECIPE=() WORKDIR="" MAX_ATTEMPTS=30 DELETE_WHEN_DONE=0
while (($#)); do
  case $1 in
    --) shift; RECIPE=("$@"); break ;;
    --*=*) set -- "${1%%=*}" "${1#*=}" "${@:2}"; continue ;;
    --type) need "$@"; TYPE=$2; shift 2 ;;
    --spot | --on-demand | --reserved) CREATE+=("$1"); shift ;;
    --runtime-version) need "$@"; CREATE+=("$1" "$2"); shift 2 ;;
    --repo | --ref) need "$@"; SETUP+=("$1" "$2"); PIN=0; shift 2 ;;
    --extras | --setup-command) need "$@"; SETUP+=("$1" "$2"); shift 2 ;;
    --workdir) need "$@"; WORKDIR=$2; shift 2 ;;
    --data-dir) need "$@"; RUN+=("$1" "$2"); shift 2 ;;
    --max-attempts) need "$@"; MAX_ATTEMPTS=$2; shift 2 ;;
    --poll-seconds) need "$@"; set_poll "$2"; shift 2 ;;
    --delete-when-done) DELETE_WHEN_DONE=1; shift ;;
    *) common_flag "$@"; shift "$SHIFT" ;;
  esac
done
[[ -n $TYPE ]] || die "--type is required (to create the slice again after a preemption)," \
  "e.g. --type v5e-8"
tpu_type "$TYPE"
[[ $MAX_ATTEMPTS =~ ^[1-9][0-9]*$ ]] || die "--max-attempts '$MAX_ATTEMPTS': a positive number"
check_workdir "$WORKDIR"
check_recipe "${RECIPE[@]}"
resolve_common
CREATE=(--type "$TYPE" "${CREATE[@]}" --poll-seconds "$POLL")
RUN=(--workdir "$WORKDIR" "${RUN[@]}" -- "${RECIPE[@]}")
DELETE_HINT="tpu/delete.sh $NAME $(show "${LOC[@]}")"
export ZOO_TPU_NO_HINTS=1

# Every step's flags are checked before anything is rented.
"$HERE/setup.sh" "${COMMON[@]}" "${SETUP[@]}" --dry-run >/dev/null
"$HERE/run.sh" "${COMMON[@]}" --dry-run "${RUN[@]}" >/dev/null
# Every attempt ships the same code: this checkout's HEAD now, unless --repo/--ref say otherwise.
if ((PIN && !DRY_RUN)); then
  SETUP+=(--ref "$(git -C "$ROOT" rev-parse HEAD)")
  log "shipping commit ${SETUP[-1]} of $ROOT to every slice"
fi

# Ends the babysitting; the slice, if any, is left as it is.
stop() {
  local status=$1
  shift
  log "$*"
  known_state
  [[ $STATE == ABSENT ]] || log "$NAME is $STATE and may cost money: $DELETE_HINT"
  exit "$status"
}
trap 'log "interrupted; $NAME may still be up (and billing): $DELETE_HINT"; exit 130' INT TERM

# STATE as qr_state, retrying while gcloud itself fails.
known_state() {
  local tries
  for tries in 1 2 3 4 5 6 7 8 9 10; do
    qr_state
    [[ $STATE == UNKNOWN ]] || return 0
    log "could not read the state of $NAME (try $tries of 10)"
    sleep "$POLL"
  done
  log "gcloud keeps failing; is it logged in (gcloud auth login)? $NAME is left as it is: $DELETE_HINT"
  exit 1
}

# An ACTIVE slice: reused, waited for, or (re)created.
ensure_slice() {
  known_state
  while [[ $STATE == DELETING ]]; do
    sleep "$POLL"
    known_state
  done
  case $STATE in
    ACTIVE) log "$NAME is ACTIVE: reusing it"; return 0 ;;
    ACCEPTED | CREATING | WAITING_FOR_RESOURCES | PROVISIONING) wait_active; return ;;
    ABSENT) ;;
    *) "$HERE/delete.sh" "${COMMON[@]}" || return ;;
  esac
  "$HERE/create.sh" "${COMMON[@]}" "${CREATE[@]}" && return 0
  known_state
  [[ $STATE != ABSENT ]] || stop 1 "could not create $NAME (see gcloud's error above); not retrying"
  return 1
}

# Whether the slice stays ACTIVE for a few checks (a preempted one may lag a little).
healthy() {
  local i
  for i in 1 2 3; do
    known_state
    [[ $STATE == ACTIVE ]] || return 1
    ((i == 3)) || sleep "$POLL"
  done
}

for ((attempt = 1; ; attempt++)); do
  ((DRY_RUN)) || log "attempt $attempt of $MAX_ATTEMPTS: $WORKDIR on $NAME ($TYPE)"
  step=slice status=0
  {
    ensure_slice &&
      step=setup && "$HERE/setup.sh" "${COMMON[@]}" "${SETUP[@]}" &&
      step=train && "$HERE/run.sh" "${COMMON[@]}" "${RUN[@]}"
  } || status=$?

  if ((status == 0)); then
    ((DRY_RUN)) || log "the run is complete: $WORKDIR"
    ((!DELETE_WHEN_DONE)) || "$HERE/delete.sh" "${COMMON[@]}"
    ((!DRY_RUN)) || log "dry run: one attempt; after status 75 or a lost slice, it deletes and repeats"
    exit 0
  fi
  if [[ $step == train ]] && ((status == 3)); then
    stop 3 "zoo train stopped on a NaN/Inf loss (status 3): not relaunching (it would diverge again)"
  fi
  if [[ $step == train ]] && ((status == 75)); then
    log "zoo train was preempted (status 75) and saved a checkpoint"
  elif healthy; then
    ((status != 255)) || log "status 255: ssh lost its connection to a worker"
    stop "$status" "$step failed with status $status on a healthy slice: not relaunching." \
      "Fix it, then rerun this command: the run resumes."
  else
    log "$step failed with status $status and $NAME is $STATE: the slice was lost"
  fi
  ((attempt < MAX_ATTEMPTS)) ||
    stop "$status" "gave up after $MAX_ATTEMPTS attempts; rerun this command to go on (the run resumes)"
  known_state
  if [[ $STATE != ABSENT ]]; then
    "$HERE/delete.sh" "${COMMON[@]}" || log "deleting $NAME failed; the next attempt tries again"
  fi
  sleep "$POLL"
done
