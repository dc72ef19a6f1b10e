"""TLS and mTLS for real: Debian's nginx terminates TLS in front of the dev server (grpc_pass),
asking every client for a certificate from a CA made here. The worker and the `rea` CLI reach
the server only through it (REA_TEMPORAL_TLS_*): a campaign runs from start to result; a
client without a certificate, or without TLS, is refused with one clear line."""

import asyncio
import os
import shutil
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from temporalio.testing import WorkflowEnvironment

import devserver
from client import client_options, make_client
from settings import Settings
from tests.cli.test_first_hour import assert_one_line_error, listening
from tests.fakes import FakeActivities
from tests.workflows.conftest import campaign_workers
from workflows.options import ORCHESTRATION_QUEUE, SEARCH_ATTRIBUTES

NGINX = shutil.which("nginx") or next(
    (p for p in ("/usr/sbin/nginx", "/sbin/nginx") if Path(p).exists()), None
)
pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(
        NGINX is None or shutil.which("openssl") is None,
        reason="nginx or openssl is not installed (apt-get install nginx-light openssl)",
    ),
]
REA = Path(sys.executable).parent / "rea"


@dataclass
class Pki:
    ca: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path


def openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True, timeout=60)


def make_pki(folder: Path) -> Pki:
    """A test CA, a server certificate for localhost/127.0.0.1 and a client certificate."""
    openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj",
            "/CN=openrea test CA", "-keyout", "ca.key", "-out", "ca.crt", cwd=folder)  # fmt: skip
    # Version 3 certificates (rustls, under the SDKs, accepts no other), each for its side.
    (folder / "server.ext").write_text(
        "subjectAltName=DNS:localhost,IP:127.0.0.1\nextendedKeyUsage=serverAuth\n"
    )
    (folder / "client.ext").write_text("extendedKeyUsage=clientAuth\n")
    for name, subject in (("server", "/CN=localhost"), ("client", "/CN=openrea worker")):
        openssl("req", "-newkey", "rsa:2048", "-nodes", "-subj", subject,
                "-keyout", f"{name}.key", "-out", f"{name}.csr", cwd=folder)  # fmt: skip
        openssl("x509", "-req", "-in", f"{name}.csr", "-CA", "ca.crt", "-CAkey", "ca.key",
                "-CAcreateserial", "-days", "2", "-out", f"{name}.crt",
                "-extfile", f"{name}.ext", cwd=folder)  # fmt: skip
    return Pki(
        folder / "ca.crt",
        folder / "server.crt",
        folder / "server.key",
        folder / "client.crt",
        folder / "client.key",
    )


NGINX_CONF = """
{user}
worker_processes 1;
daemon off;
pid {dir}/nginx.pid;
error_log {dir}/error.log warn;
events {{ worker_connections 256; }}
http {{
    access_log off;
    client_body_temp_path {dir}/body;
    proxy_temp_path {dir}/proxy;
    fastcgi_temp_path {dir}/fastcgi;
    uwsgi_temp_path {dir}/uwsgi;
    scgi_temp_path {dir}/scgi;
    server {{
        listen 127.0.0.1:{port} ssl http2;
        ssl_certificate {pki.server_cert};
        ssl_certificate_key {pki.server_key};
        ssl_client_certificate {pki.ca};
        ssl_verify_client on;
        location / {{
            grpc_pass grpc://{upstream};
            # Workers' long polls last up to a minute: keep them open longer.
            grpc_read_timeout 300s;
            grpc_send_timeout 300s;
        }}
    }}
}}
"""


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return make_pki(tmp_path_factory.mktemp("pki"))


@pytest.fixture(scope="module")
async def upstream() -> AsyncIterator[WorkflowEnvironment]:
    env = await WorkflowEnvironment.start_local(
        dev_server_existing_path=str(devserver.binary("temporal")),
        search_attributes=SEARCH_ATTRIBUTES,
        dev_server_extra_args=devserver.dynamic_config_args(),
        **client_options(),
    )
    yield env
    await env.shutdown()


@pytest.fixture(scope="module")
def proxy(
    upstream: WorkflowEnvironment, pki: Pki, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    """nginx terminating (m)TLS on a free port, passing gRPC to the dev server."""
    folder = tmp_path_factory.mktemp("nginx")
    port = devserver.free_port()
    conf = folder / "nginx.conf"
    conf.write_text(
        NGINX_CONF.format(
            user="user root;" if os.geteuid() == 0 else "",
            dir=folder,
            port=port,
            pki=pki,
            upstream=upstream.client.service_client.config.target_host,
        )
    )
    assert NGINX is not None
    nginx = subprocess.Popen([NGINX, "-c", str(conf), "-p", str(folder)], stderr=subprocess.PIPE)
    address = f"127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while not listening(address):
        assert nginx.poll() is None, nginx.stderr.read() if nginx.stderr else ""
        assert time.monotonic() < deadline, "nginx did not start"
        time.sleep(0.1)
    yield address
    nginx.terminate()
    nginx.wait(timeout=30)


def tls_env(proxy: str, pki: Pki, folder: Path, client_cert: bool = True) -> dict[str, str]:
    env = os.environ | {
        "REA_TEMPORAL_ADDRESS": proxy,
        "REA_TEMPORAL_TLS_CA": str(pki.ca),
        "REA_DATA_DIR": str(folder),
        "COLUMNS": "200",
    }
    if client_cert:
        env |= {"REA_TEMPORAL_TLS_CERT": str(pki.client_cert)}
        env |= {"REA_TEMPORAL_TLS_KEY": str(pki.client_key)}
    return env


async def rea(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    # A thread: the worker runs on this event loop while the command waits for it.
    return await asyncio.to_thread(
        subprocess.run, [str(REA), *args], env=env, capture_output=True, text=True, timeout=240
    )


async def test_a_campaign_runs_through_an_mtls_proxy_and_clients_without_certificates_are_refused(
    proxy: str, pki: Pki, tmp_path: Path
) -> None:
    settings = Settings(
        temporal_address=proxy,
        temporal_tls_ca=pki.ca,
        temporal_tls_cert=pki.client_cert,
        temporal_tls_key=pki.client_key,
        data_dir=tmp_path,
    )
    client = await make_client(settings)  # the worker's own connection goes through nginx
    fakes = FakeActivities()
    fakes.planning_may_finish.set()
    spec = tmp_path / "campaign.json"
    spec.write_text(
        '{"goal": "over mTLS", "approvers": ["alice@example.com"], "max_hypotheses": 2, '
        '"exploitation_trials": 0, "seeds": 2, '
        '"budget": {"device_hours": 40, "max_parallel_trials": 4}}'
    )

    through_proxy = WorkflowEnvironment.from_client(client)
    async with campaign_workers(through_proxy, ORCHESTRATION_QUEUE, fakes):
        run = await rea(
            tls_env(proxy, pki, tmp_path),
            "campaign", "start", str(spec), "--id", "mtls", "--auto-approve",
        )  # fmt: skip
        assert run.returncode == 0, run.stderr
        assert "Approved as alice@example.com" in run.stdout and "Report:" in run.stdout

        no_cert = await rea(tls_env(proxy, pki, tmp_path, client_cert=False), "campaign", "list")
        line = assert_one_line_error(no_cert, f"cannot connect to {proxy} over TLS")
        assert "REA_TEMPORAL_TLS" in line and no_cert.returncode == 2

        plain = os.environ | {"REA_TEMPORAL_ADDRESS": proxy, "COLUMNS": "200"}
        no_tls = await rea(plain, "campaign", "list")
        assert_one_line_error(no_tls, f"no Temporal server at {proxy}", "REA_TEMPORAL_TLS_CA")
