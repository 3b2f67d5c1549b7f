# shellcheck shell=bash disable=SC2034  # sets variables for the scripts that source it
# Sourced by tpu/*.sh: common flags, print-or-run of commands, TPU types, slice state.
# One name is both the queued resource's id and its TPU VM's node id.

if ((BASH_VERSINFO[0] < 4 || (BASH_VERSINFO[0] == 4 && BASH_VERSINFO[1] < 4))); then
  echo "tpu/: needs bash >= 4.4, this is $BASH_VERSION (macOS: brew install bash)" >&2
  exit 2
fi

PROG="tpu/${0##*/}"
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(dirname "$HERE")  # the zoo checkout

NAME=""
PROJECT=${ZOO_TPU_PROJECT:-}
ZONE=${ZOO_TPU_ZONE:-}
DRY_RUN=0
POLL=30  # seconds between state checks (--poll-seconds)

log() { echo "$PROG [$(date '+%F %T')]: $*" >&2; }
die() { echo "$PROG: error: $*" >&2; exit 2; }
hint() { ((DRY_RUN)) || [[ -n ${ZOO_TPU_NO_HINTS:-} ]] || log "$@"; }  # babysit.sh sets it

# Quotes one word for a shell only when it needs it: copy-pasteable and readable.
shq() {
  if [[ $1 =~ ^[A-Za-z0-9_./:=@%+,-]+$ ]]; then
    printf '%s' "$1"
  else
    printf "'%s'" "${1//\'/\'\\\'\'}"
  fi
}

# A command line: its words quoted and joined by spaces.
show() {
  local w out=()
  for w in "$@"; do out+=("$(shq "$w")"); done
  echo "${out[*]}"
}

# Runs a command, logging it first; with --dry-run only prints it (on stdout).
x() {
  if ((DRY_RUN)); then
    show "$@"
    return 0
  fi
  log "+ $(show "$@")"
  "$@"
}

gc() { x gcloud "$@"; }

# `need "$@"`: the flag in $1 has a value in $2.
need() { [[ $# -ge 2 && $2 != -* ]] || die "$1 needs a value (see $PROG --help)"; }

# Parses one common flag at "$@"; SHIFT is how many words it took. A bare word is the name.
common_flag() {
  SHIFT=2
  case $1 in
    --name) need "$@"; NAME=$2 ;;
    --project) need "$@"; PROJECT=$2 ;;
    --zone) need "$@"; ZONE=$2 ;;
    --dry-run) DRY_RUN=1; SHIFT=1 ;;
    -h | --help) usage; exit 0 ;;
    -*) die "unknown flag $1 (see $PROG --help)" ;;
    *)
      [[ -z $NAME ]] || die "unexpected argument '$1': the name is already '$NAME'"
      NAME=$1
      SHIFT=1
      ;;
  esac
}

set_poll() {
  [[ $1 =~ ^[0-9]+([.][0-9]+)?$ ]] || die "--poll-seconds '$1' is not a number of seconds"
  POLL=$1
}

# After parsing: checks the name, fills project and zone, sets LOC and COMMON.
resolve_common() {
  [[ -n $NAME ]] ||
    die "--name is required: the slice's name, e.g. --name my-v5e (or as the first argument)"
  [[ $NAME =~ ^[a-z]([-a-z0-9]{0,61}[a-z0-9])?$ ]] ||
    die "--name '$NAME': use lowercase letters, digits and hyphens, starting with a letter"
  if ((DRY_RUN)); then
    [[ -n $PROJECT ]] || die "--dry-run calls no gcloud: pass --project P (or export ZOO_TPU_PROJECT=P)"
    [[ -n $ZONE ]] || die "--dry-run calls no gcloud: pass --zone Z (or export ZOO_TPU_ZONE=Z)"
  else
    command -v gcloud >/dev/null ||
      die "gcloud not found: install the Google Cloud CLI" \
        "(cloud.google.com/sdk/docs/install), or use --dry-run"
    [[ -n $PROJECT ]] || PROJECT=$(gcloud config get-value project 2>/dev/null) || true
    [[ -n $PROJECT ]] || die "no project: pass --project P, export ZOO_TPU_PROJECT=P" \
      "or run 'gcloud config set project P'"
    [[ -n $ZONE ]] || ZONE=$(gcloud config get-value compute/zone 2>/dev/null) || true
    [[ -n $ZONE ]] || die "no zone: pass --zone Z (e.g. us-west4-a), export ZOO_TPU_ZONE=Z" \
      "or run 'gcloud config set compute/zone Z'"
  fi
  LOC=(--project "$PROJECT" --zone "$ZONE")
  COMMON=(--name "$NAME" "${LOC[@]}")
  ((DRY_RUN)) && COMMON+=(--dry-run)
  return 0
}

# --type (v5e-8, v5p-32, v6e-8, v4-8, ...) -> ACCEL (gcloud's accelerator type) and RUNTIME.
tpu_type() {
  local gen=${1%-*} n=${1##*-}
  [[ $1 == *-* && $n =~ ^[1-9][0-9]*$ ]] || gen=bad
  case $gen in
    v4) ACCEL=v4-$n RUNTIME=tpu-ubuntu2204-base ;;
    v5e | v5litepod) ACCEL=v5litepod-$n RUNTIME=v2-alpha-tpuv5-lite ;;
    v5p) ACCEL=v5p-$n RUNTIME=v2-alpha-tpuv5 ;;
    v6e) ACCEL=v6e-$n RUNTIME=v2-alpha-tpuv6e ;;
    *) die "--type '$1' is not a TPU type; use v4-N, v5e-N (= v5litepod-N), v5p-N or v6e-N," \
      "e.g. --type v5e-8" ;;
  esac
}

# Checkpoints must outlive the VM: only a bucket survives preemption.
check_workdir() {
  [[ -n $1 ]] || die "--workdir is required, e.g. --workdir gs://BUCKET/runs/smoke_full"
  [[ $1 == gs://?* ]] ||
    die "--workdir '$1' is not on gs://: a TPU VM's disk is lost when it is preempted;" \
      "use e.g. gs://BUCKET/runs/NAME"
}

# The words after --: zoo train's recipe flags, with a --config.
check_recipe() {
  local w config=0
  for w in "$@"; do
    case $w in
      --config | --config=*) config=1 ;;
      --workdir | --workdir=*) die "give --workdir before --, as this script's flag" ;;
    esac
  done
  ((config)) || die "no recipe: end with -- --config recipes/NAME.py:VARIANT [--config.KEY=VALUE ...]"
}

# STATE := the queued resource's state (ACTIVE, WAITING_FOR_RESOURCES, SUSPENDED, ...),
# ABSENT when there is none, UNKNOWN when gcloud failed otherwise. Dry run: ABSENT.
qr_state() {
  local err
  if ((DRY_RUN)); then
    gc compute tpus queued-resources describe "$NAME" "${LOC[@]}" --format 'value(state.state)'
    STATE=ABSENT
    return 0
  fi
  err=$(mktemp)
  if STATE=$(gcloud compute tpus queued-resources describe "$NAME" "${LOC[@]}" \
    --format 'value(state.state)' 2>"$err"); then
    STATE=${STATE:-UNKNOWN}
  elif grep -qi 'not.found' "$err"; then
    STATE=ABSENT
  else
    STATE=UNKNOWN
    log "describe $NAME failed: $(tail -n 1 "$err")"
  fi
  rm -f "$err"
}

# Polls until the slice is ACTIVE (status 0) or at a dead end (1: FAILED, SUSPENDED, gone...).
wait_active() {
  local last=""
  if ((DRY_RUN)); then
    qr_state
    return 0
  fi
  while :; do
    qr_state
    [[ $STATE == "$last" ]] || log "$NAME is $STATE"
    last=$STATE
    case $STATE in
      ACTIVE) return 0 ;;
      FAILED | SUSPENDING | SUSPENDED | DELETING | ABSENT) return 1 ;;
    esac
    sleep "$POLL"
  done
}
