"""Fixtures of the chaos tests: a dev server (SQLite persistence) and a `rea worker` process
on free ports, under the test's own data dir."""

from collections.abc import Iterator
from pathlib import Path

import pytest

from devserver import DevServer, free_port
from settings import Settings
from tests.chaos.harness import Worker


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings(
        temporal_address=f"127.0.0.1:{free_port()}", ui_port=free_port(), data_dir=tmp_path
    )


@pytest.fixture
def server(settings: Settings) -> Iterator[DevServer]:
    with DevServer(settings) as dev:
        yield dev


@pytest.fixture
def worker(settings: Settings, server: DevServer) -> Iterator[Worker]:
    worker = Worker(settings)
    yield worker
    worker.stop()
