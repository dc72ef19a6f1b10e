"""The dev server's start waits for an earlier server on the same database to stop."""

import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

import devserver
from settings import Settings


def stand_in(db: Path) -> subprocess.Popen[bytes]:
    """A process whose command line names ``db`` the way a dev server's does, once /proc
    shows it (make test once read an empty command line just after the start)."""
    process = subprocess.Popen(
        [sys.executable, "-c", "import time; time.sleep(60)", "--db-filename", str(db)]
    )
    deadline = time.monotonic() + 10
    while str(db).encode() not in _cmdline(process.pid) and time.monotonic() < deadline:
        time.sleep(0.02)
    return process


def _cmdline(pid: int) -> bytes:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return b""


def test_a_server_still_running_on_the_database_is_named(tmp_path: Path) -> None:
    db = tmp_path / "temporal.db"
    other = stand_in(tmp_path / "other.db")
    process = stand_in(db)
    try:
        assert devserver.servers_of(db) == [process.pid]
        with pytest.raises(devserver.ServerStartError, match=f"pid {process.pid}.*REA_DATA_DIR"):
            devserver.wait_for_earlier_server(db, timeout_s=0.5)
    finally:
        process.kill()
        process.wait()
        other.kill()
        other.wait()
    assert devserver.servers_of(db) == []


def test_start_goes_on_once_the_earlier_server_has_stopped(tmp_path: Path) -> None:
    db = tmp_path / "temporal.db"
    process = stand_in(db)
    stopper = threading.Timer(0.5, process.kill)
    stopper.start()
    devserver.wait_for_earlier_server(db, timeout_s=30)
    assert process.wait() != 0  # it was killed, not timed out
    stopper.join()


def test_a_server_that_exits_while_starting_is_quoted(tmp_path: Path) -> None:
    # Its log may go with a temporary data dir (the benchmark's), so the error quotes it.
    (tmp_path / "temporal.db").mkdir()  # SQLite cannot open a directory
    settings = Settings(
        data_dir=tmp_path,
        temporal_address=f"127.0.0.1:{devserver.free_port()}",
        ui_port=devserver.free_port(),
    )
    with pytest.raises(devserver.ServerStartError, match=r"exited \(code 1\): .*database file"):
        devserver.DevServer(settings).start()
