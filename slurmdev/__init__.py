"""A single-node Slurm cluster for development and tests, started by hand (no systemd).

    python -m slurmdev up [DIR]     start munged, slurmdbd, slurmctld and slurmd under DIR
    python -m slurmdev down [DIR]   stop them (DIR defaults to .rea/slurm)

``make slurm`` runs ``up`` and prints the ``SLURM_CONF`` to export. Everything lives under
DIR: the configuration, state, spool, logs and a munge key of its own; accounting goes to a
MariaDB database named after DIR (root with an empty password on 127.0.0.1, as on these
machines). The node is this host's short name; it claims more cores than the host has
(``config_overrides``) so that several small trials run side by side, as on a real node.

Needs Debian's ``slurmctld slurmd slurm-client slurmdbd munge`` (Slurm 22.05) and root.
"""

import hashlib
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from devserver import free_port

NODE_CPUS = 8
NODE_MEMORY_MB = 16000
PARTITION = "debug"
DAEMONS = ("slurmd", "slurmctld", "slurmdbd", "munged")


class SlurmStartError(RuntimeError):
    """The cluster cannot start here; the message says why and what to do."""


def _database_name(root: Path) -> str:
    # One accounting database per cluster folder: clusters started by parallel runs never
    # share job ids or records.
    return "slurm_acct_" + hashlib.sha1(str(root).encode()).hexdigest()[:10]


class SlurmCluster:
    """munged, slurmdbd, slurmctld and slurmd of one cluster folder.

    Args:
        root: The cluster's folder (created).
        cluster_name: Slurm's ClusterName (also the accounting cluster's name).
    """

    def __init__(self, root: Path, cluster_name: str = "rea") -> None:
        self.root = root.resolve()
        self.cluster_name = cluster_name
        self.conf = self.root / "slurm.conf"

    @property
    def env(self) -> dict[str, str]:
        """What Slurm's commands (sbatch, sacct...) need to reach this cluster."""
        return {"SLURM_CONF": str(self.conf)}

    def start(self, timeout_s: float = 60.0) -> "SlurmCluster":
        missing = [d for d in ("munged", "slurmdbd", "slurmctld", "slurmd") if not _which(d)]
        if missing:
            raise SlurmStartError(
                f"{', '.join(missing)} not installed: apt-get install -y slurmctld slurmd "
                "slurm-client slurmdbd munge"
            )
        if os.geteuid() != 0:
            raise SlurmStartError("the dev cluster runs its daemons as root: run it as root")
        self.stop()  # leftovers of an earlier run of this folder
        for sub in ("state", "spool", "log"):
            (self.root / sub).mkdir(parents=True, exist_ok=True)
        self._write_config()
        key = self.root / "munge.key"
        if not key.exists():
            _run(["mungekey", "--create", f"--keyfile={key}"])
        key.chmod(0o400)
        _run(
            [
                _which("munged"),
                "--force",
                f"--socket={self.root / 'munge.sock'}",
                f"--key-file={key}",
                f"--pid-file={self.root / 'munged.pid'}",
                f"--log-file={self.root / 'log/munged.log'}",
                f"--seed-file={self.root / 'munge.seed'}",
            ]
        )
        # slurmdbd reads slurmdbd.conf beside $SLURM_CONF.
        self._spawn("slurmdbd", ["-D"])
        self._wait(lambda: _port_open(self._ports["dbd"]), "slurmdbd", timeout_s)
        self._spawn("slurmctld", ["-D", "-i", "-f", str(self.conf)])
        self._wait(lambda: _port_open(self._ports["ctld"]), "slurmctld", timeout_s)
        self._spawn("slurmd", ["-D", "-f", str(self.conf)])
        self._wait(self._node_idle, "slurmd (node idle)", timeout_s)
        return self

    def stop(self, timeout_s: float = 10.0) -> None:
        """Stop the daemons of this folder (those its pid files name): SIGTERM to all at
        once, SIGKILL to those still there after ``timeout_s``."""
        pids = []
        for daemon in DAEMONS:
            pid_file = self.root / f"{daemon}.pid"
            try:
                pid = int(pid_file.read_text().split()[0])
                os.kill(pid, signal.SIGTERM)
                pids.append(pid)
            except (OSError, ValueError, IndexError):
                pass
            pid_file.unlink(missing_ok=True)
        deadline = time.monotonic() + timeout_s
        while pids and time.monotonic() < deadline:
            pids = [pid for pid in pids if _running(pid)]
            time.sleep(0.1)
        for pid in pids:
            os.kill(pid, signal.SIGKILL)

    def destroy(self) -> None:
        """Stop the daemons and drop the cluster's accounting database (tests' clusters)."""
        self.stop()
        subprocess.run(
            [
                "mariadb",
                "-uroot",
                "-h127.0.0.1",
                "-e",
                f"DROP DATABASE IF EXISTS {_database_name(self.root)}",
            ],
            capture_output=True,
        )

    def __enter__(self) -> "SlurmCluster":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # ---- internals ---------------------------------------------------------------------------

    def _write_config(self) -> None:
        ports_file = self.root / "ports"
        if ports_file.exists():
            dbd, ctld, slurmd = map(int, ports_file.read_text().split())
        else:
            dbd, ctld, slurmd = free_port(), free_port(), free_port()
            ports_file.write_text(f"{dbd} {ctld} {slurmd}")
        self._ports = {"dbd": dbd, "ctld": ctld, "slurmd": slurmd}
        r, host = self.root, socket.gethostname().split(".")[0]
        auth = f"AuthType=auth/munge\nAuthInfo=socket={r / 'munge.sock'}\n"
        dbd_conf = r / "slurmdbd.conf"
        dbd_conf.write_text(
            auth + f"DbdHost=localhost\nDbdPort={dbd}\nSlurmUser=root\n"
            f"PidFile={r / 'slurmdbd.pid'}\nLogFile={r / 'log/slurmdbd.log'}\n"
            "StorageType=accounting_storage/mysql\nStorageHost=127.0.0.1\n"
            f"StoragePort=3306\nStorageUser=root\nStorageLoc={_database_name(r)}\n"
        )
        dbd_conf.chmod(0o600)  # slurmdbd refuses a readable config (it may hold a password)
        self.conf.write_text(
            auth
            + f"""ClusterName={self.cluster_name}
SlurmctldHost={host}
SlurmUser=root
SlurmdUser=root
SlurmctldPort={ctld}
SlurmdPort={slurmd}
StateSaveLocation={r / "state"}
SlurmdSpoolDir={r / "spool"}
SlurmctldPidFile={r / "slurmctld.pid"}
SlurmdPidFile={r / "slurmd.pid"}
SlurmctldLogFile={r / "log/slurmctld.log"}
SlurmdLogFile={r / "log/slurmd.log"}
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
JobAcctGatherType=jobacct_gather/linux
AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=localhost
AccountingStoragePort={dbd}
# With slurmdbd this "password" is the munge socket to talk to it with.
AccountingStoragePass={r / "munge.sock"}
MailProg=/bin/true
MpiDefault=none
ReturnToService=2
SlurmdParameters=config_overrides
# A job past its time limit, or cancelled, gets SIGTERM and then SIGKILL 5 s later.
KillWait=5
OverTimeLimit=0
InactiveLimit=0
NodeName={host} CPUs={NODE_CPUS} RealMemory={NODE_MEMORY_MB} State=UNKNOWN
PartitionName={PARTITION} Nodes={host} Default=YES MaxTime=INFINITE State=UP
"""
        )

    def _spawn(self, daemon: str, args: list[str]) -> None:
        log = (self.root / "log" / f"{daemon}.out").open("ab")
        # A session of its own: the daemons outlive the shell or test that started them.
        self._process = subprocess.Popen(
            [_which(daemon), *args],
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            # In the cluster's folder: whatever a daemon writes there (a core dump) stays
            # out of the caller's directory.
            cwd=self.root,
            env={**os.environ, **self.env},
        )

    def _node_idle(self) -> bool:
        out = subprocess.run(
            ["sinfo", "-h", "-o", "%t"],
            capture_output=True,
            text=True,
            env={**os.environ, **self.env},
        )
        return out.returncode == 0 and out.stdout.strip() in ("idle", "mix", "alloc")

    def _wait(self, ready: object, what: str, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if callable(ready) and ready():
                return
            if self._process.poll() is not None:
                out = (self.root / "log" / f"{what.split()[0]}.out").read_text()[-2000:]
                raise SlurmStartError(f"{what} exited: {out}")
            time.sleep(0.3)
        raise SlurmStartError(f"{what} did not come up in {timeout_s:.0f} s: see {self.root}/log")


def _which(name: str) -> str:
    for folder in ("/usr/sbin", "/usr/bin", *os.environ.get("PATH", "").split(":")):
        if folder and (Path(folder) / name).exists():
            return str(Path(folder) / name)
    return ""


def _running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A daemon started here is our child only in this process: reap it if it is a zombie.
    try:
        return os.waitpid(pid, os.WNOHANG) == (0, 0)
    except ChildProcessError:
        return True


def _port_open(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


def _run(cmd: list[str]) -> None:
    done = subprocess.run(cmd, capture_output=True, text=True)
    if done.returncode != 0:
        raise SlurmStartError(f"{' '.join(cmd)} failed: {done.stderr.strip()}")


def main() -> None:
    action = sys.argv[1] if len(sys.argv) > 1 else "up"
    root = Path(sys.argv[2] if len(sys.argv) > 2 else ".rea/slurm")
    cluster = SlurmCluster(root)
    if action == "up":
        cluster.start()
        print(f"Slurm is up; to use it:\n  export SLURM_CONF={cluster.conf}")
    elif action == "down":
        cluster.stop()
        print(f"Slurm under {cluster.root} stopped.")
    else:
        sys.exit("usage: python -m slurmdev up|down [DIR]")
