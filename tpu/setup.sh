#!/usr/bin/env bash
# shellcheck disable=SC2016,SC2088  # remote commands: ~ and $ expand on the workers
# Puts zoo on every worker of a slice (~/zoo, venv ~/zoo-venv) and checks that JAX sees the TPUs.
set -euo pipefail
# shellcheck source=common.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

usage() {
  cat <<EOF
Usage: $PROG --name NAME [--repo URL [--ref REF]] [--extras tpu] [--setup-command CMD] [options]

Ships the code to all workers of slice NAME, installs it into ~/zoo-venv with
pip install -e ~/zoo'[EXTRAS]', then prints jax.device_count() on each worker.

  --repo URL              git clone URL on the workers (default: copy a git archive of
                          this checkout; uncommitted changes are not shipped)
  --ref REF               the commit, tag or branch to ship or check out (default: HEAD)
  --extras E              pip extras, comma-separated (default: tpu; e.g. tpu,tfds-catalog)
  --setup-command CMD     one more command for each worker, run in ~/zoo after the install
                          (e.g. copy data or a converted checkpoint from gs://)
  --project P, --zone Z   default: \$ZOO_TPU_PROJECT/\$ZOO_TPU_ZONE, then gcloud config
  --dry-run               print the commands, run nothing
EOF
}

REPO="" REF="" EXTRAS=tpu SETUP_CMD=""
while (($#)); do
  case $1 in
    --*=*) set -- "${1%%=*}" "${1#*=}" "${@:2}"; continue ;;
    --repo) need "$@"; REPO=$2; shift 2 ;;
    --ref) need "$@"; REF=$2; shift 2 ;;
    --extras) need "$@"; EXTRAS=$2; shift 2 ;;
    --setup-command) need "$@"; SETUP_CMD=$2; shift 2 ;;
    *) common_flag "$@"; shift "$SHIFT" ;;
  esac
done
[[ $EXTRAS =~ ^[a-z0-9,_-]+$ ]] ||
  die "--extras '$EXTRAS': comma-separated extras, e.g. tpu,tfds-catalog"
resolve_common
SSH=(compute tpus tpu-vm ssh "$NAME" "${LOC[@]}" --worker=all --command)

# 1. The code, as ~/zoo on every worker.
if [[ -n $REPO ]]; then
  get="rm -rf ~/zoo && git clone -q $(shq "$REPO") ~/zoo"
  [[ -z $REF ]] || get+=" && git -C ~/zoo checkout -q $(shq "$REF")"
else
  tarball="${TMPDIR:-/tmp}/zoo-$NAME.tar.gz"
  if ((!DRY_RUN)) && [[ -n $(git -C "$ROOT" status --porcelain --untracked-files=no) ]]; then
    log "warning: uncommitted changes in $ROOT are not shipped (only commits are)"
  fi
  ((DRY_RUN)) || trap 'rm -f "$tarball"' EXIT
  x git -C "$ROOT" archive --format=tar.gz -o "$tarball" "${REF:-HEAD}"
  gc compute tpus tpu-vm scp "$tarball" "$NAME:zoo.tar.gz" "${LOC[@]}" --worker=all
  get="rm -rf ~/zoo && mkdir ~/zoo && tar -xzf ~/zoo.tar.gz -C ~/zoo && rm ~/zoo.tar.gz"
fi

# 2. A venv (python3-venv comes from apt if the image lacks it) with zoo and JAX for TPU.
venv="[ -x ~/zoo-venv/bin/pip ] || python3 -m venv ~/zoo-venv || { sudo apt-get -qq update"
venv+=" && sudo apt-get -qq -o DPkg::Lock::Timeout=600 install -y python3-venv"
venv+=" && rm -rf ~/zoo-venv && python3 -m venv ~/zoo-venv; }"
install="cd ~/zoo && ~/zoo-venv/bin/pip install -q -U pip"
install+=" && ~/zoo-venv/bin/pip install -q -e \".[$EXTRAS]\""
remote="set -euo pipefail; $get; $venv; $install"
[[ -z $SETUP_CMD ]] || remote+="; $SETUP_CMD"
gc "${SSH[@]}" "$remote"

# 3. Every worker must see the whole slice.
check='n=$(~/zoo-venv/bin/python -c "import jax; print(jax.device_count())")'
check+=' && echo "$(hostname): jax.device_count() = $n"'
gc "${SSH[@]}" "$check"
hint "next: tpu/run.sh $NAME $(show "${LOC[@]}") --workdir gs://... -- --config recipes/NAME.py:VARIANT"
