"""Settings shared by the CLI, the worker and the tests: environment (REA_*) or flags."""

from pathlib import Path

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    """Where the Temporal server is and where openrea keeps its files.

    Every field can be set as an environment variable: ``REA_TEMPORAL_ADDRESS``,
    ``REA_NAMESPACE``, ``REA_DATA_DIR``, ``REA_UI_PORT``, ``REA_TRAINING_SLOTS``,
    ``REA_SEARCH_STORAGE``.
    """

    model_config = SettingsConfigDict(env_prefix="REA_", frozen=True)

    temporal_address: str = "localhost:7233"
    namespace: str = "default"
    data_dir: Path = Path(".rea")
    ui_port: int = Field(default=8233, ge=1, le=65535)
    training_slots: int = Field(
        default=1, ge=1, description="Trials one training worker runs at once."
    )
    trace_console: bool = Field(default=False, description="Print OpenTelemetry spans to stderr.")
    search_storage: str = Field(
        default="",
        description="SQLAlchemy URL of exploitation's Optuna studies (e.g. "
        "postgresql+psycopg://postgres@127.0.0.1/openrea); empty: an SQLite file under the "
        "data dir.",
    )

    @field_validator("temporal_address")
    @classmethod
    def _host_and_port(cls, address: str) -> str:
        host, _, port = address.rpartition(":")
        if not host or not port.isdigit():
            raise ValueError(f"expected host:port such as localhost:7233, got {address!r}")
        return address

    @property
    def host(self) -> str:
        return self.temporal_address.rsplit(":", 1)[0]

    @property
    def port(self) -> int:
        return int(self.temporal_address.rsplit(":", 1)[1])

    @property
    def ui_url(self) -> str:
        return f"http://{self.host}:{self.ui_port}"

    def workflow_url(self, workflow_id: str) -> str:
        """Where the Web UI shows one campaign."""
        return f"{self.ui_url}/namespaces/{self.namespace}/workflows/{workflow_id}"

    @property
    def search_storage_url(self) -> str:
        """Where exploitation's Optuna studies live (shared by every worker that tunes)."""
        return self.search_storage or f"sqlite:///{self.data_dir.resolve() / 'optuna.sqlite'}"

    @property
    def results_db(self) -> Path:
        return self.data_dir / "results.sqlite"
