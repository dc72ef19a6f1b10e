"""Shared fixtures: real Temporal servers from the wheels (never downloaded)."""

from collections.abc import AsyncIterator

import pytest
from temporalio.testing import WorkflowEnvironment

import devserver
from client import client_options
from worker import ensure_search_attributes
from workflows.options import SEARCH_ATTRIBUTES


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
