"""client.connect_options: what every process that connects sends for TLS and API keys."""

from pathlib import Path

import pytest
from pydantic import ValidationError
from temporalio.client import TLSConfig

from client import ServerUnreachable, connect_options
from settings import Settings


def test_without_tls_settings_nothing_is_added() -> None:
    assert connect_options(Settings()) == {}


def test_an_api_key_travels_over_tls_with_the_system_roots() -> None:
    assert connect_options(Settings(temporal_api_key="k")) == {"api_key": "k", "tls": True}


def test_certificates_are_read_from_their_files(tmp_path: Path) -> None:
    for name in ("ca", "crt", "key"):
        (tmp_path / name).write_bytes(f"{name} pem".encode())
    settings = Settings(
        temporal_tls_ca=tmp_path / "ca",
        temporal_tls_cert=tmp_path / "crt",
        temporal_tls_key=tmp_path / "key",
        temporal_tls_server_name="temporal.internal",
    )
    tls = connect_options(settings)["tls"]
    assert tls == TLSConfig(
        server_root_ca_cert=b"ca pem",
        domain="temporal.internal",
        client_cert=b"crt pem",
        client_private_key=b"key pem",
    )


def test_a_missing_file_or_half_a_pair_is_one_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ServerUnreachable, match=r"cannot read .*/nope .*REA_TEMPORAL_TLS_CA"):
        connect_options(Settings(temporal_tls_ca=tmp_path / "nope"))
    with pytest.raises(ValidationError, match="REA_TEMPORAL_TLS_CERT and REA_TEMPORAL_TLS_KEY"):
        Settings(temporal_tls_cert=tmp_path / "crt")
