"""A new user's first hour, through the real `rea` command against a real `rea up`.

Every user mistake is one line on stderr naming the field or cause and the fix, with a
non-zero exit and no traceback.
"""

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from contracts import Budget, DatasetRef, ModelSpec
from devserver import free_port
from tests.factories import APPROVER, campaign_request

BIN = Path(sys.executable).parent
REA = BIN / "rea"
WIDE = 200  # error lines are checked for being one line: do not let rich wrap them


def listening(address: str) -> bool:
    host, port = address.split(":")
    with socket.socket() as sock:
        return sock.connect_ex((host, int(port))) == 0


def rea_env(data_dir: Path, columns: int = WIDE) -> dict[str, str]:
    return os.environ | {
        "REA_TEMPORAL_ADDRESS": f"127.0.0.1:{free_port()}",
        "REA_UI_PORT": str(free_port()),
        "REA_HTTP_PORT": str(free_port()),
        "REA_DATA_DIR": str(data_dir),
        "COLUMNS": str(columns),
    }


def rea(env: dict[str, str], *args: str, timeout: float = 240) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(REA), *args], env=env, capture_output=True, text=True, timeout=timeout
    )


def assert_one_line_error(out: subprocess.CompletedProcess[str], *needles: str) -> str:
    """The command failed with exactly one line on stderr that contains every needle."""
    assert out.returncode != 0, out.stdout
    assert "Traceback" not in out.stderr + out.stdout, out.stderr
    lines = [line for line in out.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, out.stderr
    for needle in needles:
        assert needle in lines[0], lines[0]
    return lines[0]


def start_up(env: dict[str, str]) -> subprocess.Popen[str]:
    """`rea up` in the background, returned once it accepts connections."""
    process = subprocess.Popen(
        [str(REA), "up"], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    deadline = time.monotonic() + 60
    while not listening(env["REA_TEMPORAL_ADDRESS"]):
        assert process.poll() is None, process.stdout.read() if process.stdout else ""
        assert time.monotonic() < deadline, "rea up did not start"
        time.sleep(0.2)
    return process


def stop_up(process: subprocess.Popen[str], within_s: float) -> float:
    """SIGTERM `rea up`; how long it took to exit (it is killed after ``within_s``)."""
    started = time.monotonic()
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout=within_s)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
        pytest.fail(f"rea up did not stop within {within_s} s of SIGTERM")
    return time.monotonic() - started


def write_campaign(folder: Path, name: str, **overrides: object) -> Path:
    fields: dict[str, object] = {
        "baseline": ModelSpec(epochs=1, batch_size=256),
        "dataset": DatasetRef(max_rows=4000),
        "budget": Budget(device_hours=1.0, max_trials=3),
    }
    path = folder / f"{name}.json"
    path.write_text(campaign_request(**(fields | overrides)).model_dump_json())
    return path


# ---- without a server ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "needles"),
    [
        (["campaign", "approve", "c1", "--as", APPROVER, "--hours", "-1"], ["--hours", "-1"]),
        (["campaign", "extend-budget", "c1", "--as", APPROVER, "--hours", "0"], ["--hours"]),
        (["campaign", "status", "c1"], ["no Temporal server at 127.0.0.1:", "rea up"]),
    ],
)
def test_mistakes_without_a_server_are_one_line(
    tmp_path: Path, args: list[str], needles: list[str]
) -> None:
    out = rea(rea_env(tmp_path / "data"), *args, timeout=60)
    assert_one_line_error(out, *needles)
    assert out.returncode == 2


def test_a_diverged_training_run_exits_3_and_says_so(tmp_path: Path) -> None:
    spec = tmp_path / "trial.json"
    spec.write_text(
        json.dumps({"model": {"dense_lr": 10.0, "epochs": 1}, "dataset": {"max_rows": 3000}})
    )
    out = rea(rea_env(tmp_path / "data"), "train", str(spec), timeout=120)
    assert out.returncode == 3
    assert_one_line_error(out, "diverged", "dense_lr")
    assert "NE" not in out.stdout  # no result table for a diverged run


# ---- against `rea up` ----------------------------------------------------------------------


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    env = rea_env(tmp_path_factory.mktemp("rea") / "data")
    process = start_up(env)
    yield env
    stop_up(process, within_s=30)


@pytest.mark.e2e
def test_start_prints_the_plan_and_the_exact_approve_command(
    server: dict[str, str], tmp_path: Path
) -> None:
    spec = write_campaign(tmp_path, "c")
    out = rea(server, "campaign", "start", str(spec), "--id", "first-hour", "--no-watch")
    assert out.returncode == 0, out.stderr
    shown = rea(server, "campaign", "status", "first-hour", "--json")
    planned = [h["id"] for h in json.loads(shown.stdout)["plan"]["hypotheses"]]
    assert planned[0] in out.stdout and "knowledge" in out.stdout  # the plan, with sources
    assert f"rea campaign approve first-hour --as {APPROVER}" in out.stdout

    again = rea(server, "campaign", "start", str(spec), "--id", "first-hour", "--no-watch")
    assert_one_line_error(again, "--id", "'first-hour' already exists")

    # Too few hours for even one trial: the campaign waits for an extension.
    approve = rea(server, "campaign", "approve", "first-hour", "--as", APPROVER, "--hours", "1e-9")
    assert approve.returncode == 0, approve.stderr
    twice = rea(server, "campaign", "approve", "first-hour", "--as", APPROVER, "--hours", "2")
    assert_one_line_error(twice, "already approved with 1e-09 device-hours", "extend-budget")
    extend = rea(
        server, "campaign", "extend-budget", "first-hour", "--as", APPROVER, "--hours", "1"
    )
    assert extend.returncode == 0, extend.stderr

    # 80 columns: the table fits and no trial id is cut.
    narrow = server | {"COLUMNS": "80"}
    watched = rea(narrow, "campaign", "watch", "first-hour")
    assert watched.returncode == 0, watched.stderr
    words = " ".join(watched.stdout.split())
    assert "best baseline: NE" in words or "baseline, " in words, words
    assert all(len(line) <= 80 for line in watched.stdout.splitlines() if "http" not in line)
    # max_trials 3: the baseline and the first two hypotheses are screened.
    for trial_id in ("baseline", f"v-{planned[0]}", f"v-{planned[1]}"):
        assert trial_id in watched.stdout
    status = rea(narrow, "campaign", "status", "first-hour")
    assert f"v-{planned[1]}" in status.stdout and "done" in status.stdout
    assert all(len(line) <= 80 for line in status.stdout.splitlines())


@pytest.mark.e2e
def test_auto_approve_does_not_ask_for_approval(server: dict[str, str], tmp_path: Path) -> None:
    spec = write_campaign(tmp_path, "c", budget=Budget(device_hours=1.0, max_trials=1))
    out = rea(server, "campaign", "start", str(spec), "--auto-approve", "--no-watch")
    assert out.returncode == 0, out.stderr
    assert f"Approved as {APPROVER}" in out.stdout
    assert "rea campaign approve" not in out.stdout


@pytest.mark.e2e
def test_planning_that_cannot_succeed_ends_the_campaign_with_the_field_named(
    server: dict[str, str], tmp_path: Path
) -> None:
    bad = ModelSpec(epochs=1, table_rows={"no_such_feature": 8})
    spec = write_campaign(tmp_path, "c", baseline=bad)
    out = rea(server, "campaign", "start", str(spec), "--id", "bad-spec", "--no-watch")
    assert_one_line_error(out, "campaign bad-spec failed", "no_such_feature")

    status = rea(server, "campaign", "status", "bad-spec")
    assert_one_line_error(status, "campaign bad-spec failed", "planning failed", "table_rows")
    listed = rea(server, "campaign", "list")
    assert any("bad-spec" in line and "failed" in line for line in listed.stdout.splitlines())


@pytest.mark.e2e
def test_a_broken_dataset_path_blocks_approval_with_the_path_named(
    server: dict[str, str], tmp_path: Path
) -> None:
    spec = write_campaign(tmp_path, "c", dataset=DatasetRef(path=str(tmp_path / "no-such-dir")))
    out = rea(server, "campaign", "start", str(spec), "--id", "bad-data", "--no-watch")
    assert out.returncode == 1, out.stderr  # the plan waits, but the checklist failed
    assert "FAILED" in out.stdout and "no-such-dir" in out.stdout
    assert "rea campaign preflight bad-data" in out.stdout

    approve = rea(server, "campaign", "approve", "bad-data", "--as", APPROVER)
    assert_one_line_error(approve, "rejected", "preflight failed", "no-such-dir", "--override")
    auto = rea(server, "campaign", "start", str(spec), "--id", "bad-auto", "--auto-approve")
    assert_one_line_error(auto, "not approved", "preflight failed", "no-such-dir")
    for campaign in ("bad-data", "bad-auto"):
        assert rea(server, "campaign", "stop", campaign, "--by", APPROVER).returncode == 0


@pytest.mark.e2e
def test_status_of_a_campaign_that_failed_at_start_is_one_line(server: dict[str, str]) -> None:
    temporal = [str(BIN / "temporal"), "--address", server["REA_TEMPORAL_ADDRESS"]]
    subprocess.run(
        [*temporal, "workflow", "start", "--type", "CampaignWorkflow",
         "--task-queue", "rea-orchestration", "--workflow-id", "malformed",
         "--input", json.dumps({"approvers": ["alice"], "budget": {"device_hours": -1}})],
        check=True, capture_output=True, timeout=60,
    )  # fmt: skip
    for _ in range(100):
        out = rea(server, "campaign", "status", "malformed")
        if "failed" in out.stderr:
            break
        time.sleep(0.2)
    assert_one_line_error(out, "campaign malformed failed", "budget.device_hours")
    missing = rea(server, "campaign", "status", "no-such-campaign")
    assert_one_line_error(missing, "no campaign 'no-such-campaign'", "rea campaign list")
    stop = rea(server, "campaign", "stop", "no-such-campaign", "--as", APPROVER)
    assert_one_line_error(stop, "no campaign 'no-such-campaign'")


@pytest.mark.e2e
def test_up_on_a_port_in_use_is_one_line(server: dict[str, str]) -> None:
    out = rea(server, "up", timeout=60)
    port = server["REA_TEMPORAL_ADDRESS"].split(":")[1]
    assert_one_line_error(out, f"port {port} is in use by pid ", "temporal server start-dev")


@pytest.mark.e2e
def test_up_stops_within_seconds_while_trials_train_and_retry(tmp_path: Path) -> None:
    env = rea_env(tmp_path / "data")
    spec = write_campaign(tmp_path, "long", baseline=ModelSpec(epochs=200))
    up = start_up(env)
    out = rea(env, "campaign", "start", str(spec), "--id", "long", "--auto-approve", "--no-watch")
    assert out.returncode == 0, out.stderr
    time.sleep(3)  # training is under way
    first = stop_up(up, within_s=30)
    assert not listening(env["REA_TEMPORAL_ADDRESS"])

    # Restarted, the interrupted trials retry (attempt 2) from their checkpoints.
    up = start_up(env)
    for _ in range(100):
        status = rea(env, "campaign", "status", "long")
        if "retrying train_trial: attempt 2" in status.stdout:
            break
        time.sleep(0.3)
    assert "retrying train_trial: attempt 2" in status.stdout, status.stdout
    second = stop_up(up, within_s=30)

    assert first < 8 and second < 8, f"rea up took {first:.1f} s and {second:.1f} s to stop"
    assert not listening(env["REA_TEMPORAL_ADDRESS"]) and not listening(
        f"127.0.0.1:{env['REA_UI_PORT']}"
    )


# ---- issue 22: steering, ids, exit codes, pasteable commands, unwrapped logs ----------------


def no_venv_on_path(env: dict[str, str]) -> dict[str, str]:
    """The README's shell: `rea` is not on the PATH (the virtualenv is not activated), and
    output goes to a log (no COLUMNS, not a terminal)."""
    path = ":".join(p for p in env["PATH"].split(":") if Path(p).resolve() != BIN.resolve())
    return {k: v for k, v in env.items() if k != "COLUMNS"} | {"PATH": path}


@pytest.mark.e2e
def test_only_approvers_steer_and_exit_codes_and_commands_say_what_happened(
    server: dict[str, str], tmp_path: Path
) -> None:
    spec = write_campaign(tmp_path, "c")
    shell = no_venv_on_path(server)
    out = rea(shell, "campaign", "start", str(spec), "--id", "steer", "--no-watch")
    assert out.returncode == 0, out.stderr
    [approve] = [line.strip() for line in out.stdout.splitlines() if "campaign approve" in line]
    assert approve.startswith(str(REA.relative_to(Path.cwd()))), approve  # not a bare `rea`

    # Nobody but an approver (or operator) steers it, and everyone says who they are.
    mallory = rea(server, "campaign", "stop", "steer", "--as", "mallory")
    assert_one_line_error(mallory, "rejected", "'mallory' may not stop this campaign")
    assert mallory.returncode == 1
    anonymous = rea(server, "campaign", "stop", "steer")
    assert_one_line_error(anonymous, "--as: say who you are")
    assert anonymous.returncode == 2
    resume = rea(server, "campaign", "resume", "steer", "--as", APPROVER)
    assert_one_line_error(resume, "not paused")
    assert resume.returncode == 1

    # Paused first, so that no trial starts and the campaign waits for the stop below.
    paused = rea(server, "campaign", "pause", "steer", "--as", APPROVER, "--reason", "lunch")
    assert paused.returncode == 0 and "Paused by alice@example.com: lunch" in paused.stdout
    # The printed approve command works as printed in the same shell.
    pasted = subprocess.run(
        ["bash", "-c", approve], env=shell, capture_output=True, text=True, timeout=120
    )
    assert pasted.returncode == 0, pasted.stderr
    stopped = rea(server, "campaign", "stop", "steer", "--by", APPROVER)  # the old flag
    assert stopped.returncode == 0, stopped.stderr

    # A finished campaign's id is not reused silently.
    for _ in range(200):
        if '"phase": "stopped"' in rea(server, "campaign", "status", "steer", "--json").stdout:
            break
        time.sleep(0.3)
    again = rea(server, "campaign", "start", str(spec), "--id", "steer", "--no-watch")
    assert_one_line_error(again, "'steer' already exists and has ended", "campaign status steer")
    assert "--reuse-id" in again.stderr

    # Off a terminal nothing is wrapped at 80 columns: the headline reads whole.
    watched = rea(shell, "campaign", "watch", "steer")
    assert watched.returncode == 0, watched.stderr
    status = json.loads(rea(server, "campaign", "status", "steer", "--json").stdout)
    headline = status["proposal"]["headline"]
    assert len(headline) > 80, headline
    assert any(headline in line for line in watched.stdout.splitlines()), watched.stdout


@pytest.mark.e2e
def test_up_prints_its_addresses_serves_http_and_its_server_dies_with_it(
    tmp_path: Path,
) -> None:
    env = rea_env(tmp_path / "data")
    up = subprocess.Popen(
        [str(REA), "up"], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    assert up.stdout is not None
    lines: list[str] = []
    deadline = time.monotonic() + 60
    while not any("Start a campaign" in line for line in lines):
        assert time.monotonic() < deadline and up.poll() is None, "".join(lines)
        lines.append(up.stdout.readline())
    shown = "".join(lines)
    http = f"http://127.0.0.1:{env['REA_HTTP_PORT']}"
    for address in (env["REA_TEMPORAL_ADDRESS"], http, f"http://127.0.0.1:{env['REA_UI_PORT']}"):
        assert address in shown, shown
    with urllib.request.urlopen(f"{http}/api/v1/namespaces/default/workflows") as answer:
        assert answer.status == 200

    up.send_signal(signal.SIGKILL)  # no cleanup runs: the kernel must end the server
    up.wait()
    for _ in range(100):
        if not listening(env["REA_TEMPORAL_ADDRESS"]):
            break
        time.sleep(0.1)
    assert not listening(env["REA_TEMPORAL_ADDRESS"]), "the dev server outlived rea up"
    stop_up(start_up(env), within_s=30)  # and the next `rea up` starts


@pytest.mark.e2e
def test_ctrl_c_on_an_embedded_campaign_says_it_goes_on_and_how_to_stop_it(
    tmp_path: Path,
) -> None:
    spec = write_campaign(tmp_path, "c")
    env = rea_env(tmp_path / "data")
    start = subprocess.Popen(
        [str(REA), "campaign", "start", str(spec), "--id", "ctrl-c", "--embedded"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert start.stdout is not None
    deadline = time.monotonic() + 90
    while "Started" not in start.stdout.readline():
        assert time.monotonic() < deadline and start.poll() is None
    start.send_signal(signal.SIGINT)
    _, err = start.communicate(timeout=60)
    assert start.returncode == 130, err
    assert "ctrl-c was NOT stopped" in err and "campaign stop ctrl-c --as" in err, err
    assert "Traceback" not in err
