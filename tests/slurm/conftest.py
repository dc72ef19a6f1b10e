"""A real single-node Slurm cluster (``slurmdev``) for the whole session, shared by the
Slurm tests; its commands find it through ``SLURM_CONF``.

Without Slurm's packages (or root) the tests skip, unless ``REA_REQUIRE_SLURM=1`` (set by
``.ci/run``, which installs them) turns the skip into a failure.
"""

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from slurmdev import SlurmCluster, SlurmStartError


@pytest.fixture(scope="session")
def slurm(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SlurmCluster]:
    cluster = SlurmCluster(tmp_path_factory.mktemp("slurm"))
    try:
        cluster.start()
    except SlurmStartError as err:
        if os.environ.get("REA_REQUIRE_SLURM") == "1":
            pytest.fail(f"Slurm is required here (REA_REQUIRE_SLURM=1): {err}")
        pytest.skip(f"no Slurm cluster: {err}")
    previous = os.environ.get("SLURM_CONF")
    os.environ.update(cluster.env)
    yield cluster
    cluster.destroy()
    if previous is None:
        os.environ.pop("SLURM_CONF", None)
    else:
        os.environ["SLURM_CONF"] = previous


def slurm_out(*cmd: str) -> str:
    return subprocess.run(cmd, capture_output=True, text=True, check=True).stdout


def task_pids(slurm_id: str) -> list[int]:
    """The task processes of a running job's first step (``scontrol listpids``): the trainer,
    not the batch shell or srun."""
    rows = [line.split() for line in slurm_out("scontrol", "listpids", slurm_id).splitlines()[1:]]
    return [int(row[0]) for row in rows if row[2] == "0" and row[3] != "-"]


def job_folder(handle_details: dict[str, object]) -> Path:
    return Path(str(handle_details["job_dir"]))
