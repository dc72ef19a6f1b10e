"""Shared fixtures: real Temporal servers from the wheels (never downloaded)."""

import os
import uuid
from collections.abc import AsyncIterator, Iterator

import pytest
from temporalio.testing import WorkflowEnvironment

import devserver
from client import client_options
from worker import ensure_search_attributes
from workflows.options import SEARCH_ATTRIBUTES

PG_ADMIN_DSN = os.environ.get(
    "OPENREA_TEST_PG_DSN", "postgresql://postgres@127.0.0.1:5432/postgres"
)


@pytest.fixture
def pg_url() -> Iterator[str]:
    """A throwaway PostgreSQL database (SQLAlchemy URL), dropped afterwards; skips when
    none answers."""
    psycopg = pytest.importorskip("psycopg", reason="psycopg is not installed")
    try:
        admin = psycopg.connect(PG_ADMIN_DSN, autocommit=True, connect_timeout=3)
    except psycopg.OperationalError as err:
        pytest.skip(f"PostgreSQL does not answer at {PG_ADMIN_DSN}: {err}")
    name = f"openrea_test_{uuid.uuid4().hex[:12]}"
    with admin:
        admin.execute(f'CREATE DATABASE "{name}"')
        try:
            base = PG_ADMIN_DSN.rsplit("/", 1)[0].replace("postgresql://", "postgresql+psycopg://")
            yield f"{base}/{name}"
        finally:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(scope="session")
async def time_skipping_env() -> AsyncIterator[WorkflowEnvironment]:
    """The Java time-skipping test server: weeks of workflow time in seconds."""
    env = await WorkflowEnvironment.start_time_skipping(
        test_server_existing_path=str(devserver.binary("temporal-test-server")),
        **client_options(),
    )
    await ensure_search_attributes(env.client, env.client.namespace)
    yield env
    await env.shutdown()


@pytest.fixture(scope="session")
async def dev_env() -> AsyncIterator[WorkflowEnvironment]:
    """The real dev server (the one `rea up` runs), tuned and with our search attributes."""
    env = await WorkflowEnvironment.start_local(
        dev_server_existing_path=str(devserver.binary("temporal")),
        search_attributes=SEARCH_ATTRIBUTES,
        dev_server_extra_args=devserver.dynamic_config_args(),
        **client_options(),
    )
    yield env
    await env.shutdown()
