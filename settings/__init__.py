"""Settings shared by the CLI, the worker and the tests: environment (REA_*) or flags."""

from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    """Where the Temporal server is and where openrea keeps its files.

    Every field can be set as an environment variable: ``REA_TEMPORAL_ADDRESS``,
    ``REA_NAMESPACE``, ``REA_DATA_DIR``, ``REA_UI_PORT``, ``REA_HTTP_PORT``,
    ``REA_TRAINING_SLOTS``, ``REA_TRIAL_THREADS``,
    ``REA_SEARCH_STORAGE``, ``REA_DATABASE_URL``, ``REA_LLM_BASE_URL``, ``REA_LLM_MODEL``,
    ``REA_LLM_API_KEY``, ``REA_LLM_TIMEOUT_S``, ``REA_JOB_MEMORY_LIMIT_GB``.

    Job backend (``activities/backends``): ``REA_JOB_BACKEND`` (``local`` or ``slurm``),
    ``REA_SLURM_PARTITION``, ``REA_SLURM_DEVICE``, ``REA_SLURM_TIME_MARGIN``,
    ``REA_SLURM_MIN_TIME_MINUTES``, ``REA_SLURM_PYTHON``.

    Observability (see ``activities/telemetry.py``): ``REA_OTLP_ENDPOINT``,
    ``REA_TRACE_CONSOLE``, ``REA_TRACE_FILE``.

    Transport security (every process that connects: the CLI, workers, the Slack app, jobs):
    ``REA_TEMPORAL_TLS`` (TLS with the system's roots), ``REA_TEMPORAL_TLS_CA`` (the
    server's CA, PEM), ``REA_TEMPORAL_TLS_CERT`` and ``REA_TEMPORAL_TLS_KEY`` (this client's
    certificate and key, for mTLS), ``REA_TEMPORAL_TLS_SERVER_NAME`` (the name the server's
    certificate is checked against, when it is not the address's host) and
    ``REA_TEMPORAL_API_KEY`` (sent as a bearer token, over TLS). Give absolute paths: jobs
    read them from their own working directory.

    Slack approvals (``rea slack``; ``rea up`` runs it too once the token and signing secret
    are set): ``REA_SLACK_BOT_TOKEN`` (the bot's ``xoxb-`` token; empty: notifications are
    only logged), ``REA_SLACK_SIGNING_SECRET`` (verifies that requests come from Slack),
    ``REA_SLACK_CHANNEL`` (where campaigns post), ``REA_SLACK_API_URL`` (the Web API, default
    ``https://slack.com/api/``), ``REA_SLACK_USERS`` (JSON mapping Slack user ids to approver
    names, e.g. ``{"U01":"alice@example.com"}``; a click by anyone else changes nothing) and
    ``REA_SLACK_PORT`` (where Slack's requests arrive, default 3000, path ``/slack/events``).
    """

    model_config = SettingsConfigDict(env_prefix="REA_", frozen=True)

    temporal_address: str = "localhost:7233"
    namespace: str = "default"
    data_dir: Path = Path(".rea")
    ui_port: int = Field(default=8233, ge=1, le=65535)
    http_port: int = Field(
        default=7243,
        ge=1,
        le=65535,
        description="Port of the dev server's HTTP API (`rea up`; docs/api.md).",
    )
    temporal_tls: bool = Field(
        default=False, description="Connect over TLS (implied by any REA_TEMPORAL_TLS_* file)."
    )
    temporal_tls_ca: Path | None = Field(
        default=None, description="PEM file of the CA that signed the server's certificate."
    )
    temporal_tls_cert: Path | None = Field(
        default=None, description="PEM file of this client's certificate (mTLS)."
    )
    temporal_tls_key: Path | None = Field(
        default=None, description="PEM file of this client's private key (mTLS)."
    )
    temporal_tls_server_name: str = Field(
        default="", description="Server name to verify, when not the address's host."
    )
    temporal_api_key: str = Field(
        default="", description="API key (bearer token) for Temporal Cloud or a proxy."
    )
    training_slots: int = Field(
        default=1, ge=1, description="Trials one training worker runs at once."
    )
    trial_threads: int = Field(
        default=0,
        ge=0,
        description="CPU threads of each trial; 0: its share of the cores (cores / "
        "training_slots) less the cores other processes keep busy, rechecked as it trains.",
    )
    trace_console: bool = Field(
        default=False, description="Print OpenTelemetry spans and metrics to stderr."
    )
    trace_file: bool = Field(
        default=False, description="Append OpenTelemetry spans to <data_dir>/traces.jsonl."
    )
    otlp_endpoint: str = Field(
        default="",
        description="OTLP collector for spans and metrics, e.g. http://localhost:4317 (gRPC; "
        "OTEL_EXPORTER_OTLP_PROTOCOL=http/protobuf for HTTP, e.g. http://localhost:4318).",
    )
    search_storage: str = Field(
        default="",
        description="SQLAlchemy URL of exploitation's Optuna studies (e.g. "
        "postgresql+psycopg://postgres@127.0.0.1/openrea); empty: an SQLite file under the "
        "data dir.",
    )

    database_url: str = Field(
        default="",
        description="SQLAlchemy URL of the insights database (trials, hypotheses, decisions), "
        "e.g. postgresql+psycopg://postgres@127.0.0.1/openrea so that workers on many hosts "
        "share one history; empty: an SQLite file under the data dir.",
    )
    job_memory_limit_gb: float = Field(
        default=0.0,
        ge=0.0,
        description="Address-space cap of each training job, in GiB (0: none); an allocation "
        "past it fails as out of memory in that job alone.",
    )
    job_backend: Literal["local", "slurm"] = Field(
        default="local",
        description="Where trials that run as jobs run: local processes on the jobs worker's "
        "host, or Slurm batch jobs (sbatch through TorchX; SLURM_CONF as for Slurm's tools).",
    )
    slurm_partition: str = Field(
        default="", description="Slurm partition of training jobs; empty: the default one."
    )
    slurm_device: Literal["cpu", "gpu"] = Field(
        default="cpu",
        description="What one of a trial's devices is on the cluster: a core or a GPU.",
    )
    slurm_time_margin: float = Field(
        default=2.0,
        ge=1.0,
        description="A job's time limit is its trial's estimated wall time times this.",
    )
    slurm_min_time_minutes: int = Field(
        default=10, ge=1, description="No job's time limit is below this many minutes."
    )
    slurm_python: str = Field(
        default="",
        description="The interpreter on the cluster's nodes, with openrea installed; empty: "
        "the jobs worker's own (the nodes share its filesystem).",
    )
    llm_base_url: str = Field(
        default="",
        description="OpenAI-compatible endpoint of the LLM research agent, e.g. "
        "http://127.0.0.1:8080/v1; empty: only the offline knowledge-based agent proposes.",
    )
    llm_model: str = Field(default="", description="Model name sent to the LLM endpoint.")
    llm_api_key: str = Field(default="", description="Key of the LLM endpoint, if it needs one.")
    llm_timeout_s: float = Field(
        default=60.0, gt=0.0, le=600.0, description="Limit of one LLM call (Temporal retries)."
    )

    slack_bot_token: str = Field(default="", description="Slack bot token (xoxb-...).")
    slack_signing_secret: str = Field(
        default="", description="The Slack app's signing secret (request verification)."
    )
    slack_channel: str = Field(default="", description="Channel id or name campaigns post to.")
    slack_api_url: str = Field(
        default="https://slack.com/api/", description="Slack Web API base URL (ends with /)."
    )
    slack_users: dict[str, str] = Field(
        default_factory=dict,
        description='Slack user id -> approver name, e.g. {"U01": "alice@example.com"}.',
    )
    slack_port: int = Field(default=3000, ge=1, le=65535)

    @field_validator("slack_api_url")
    @classmethod
    def _api_url_ends_with_slash(cls, url: str) -> str:
        # slack_sdk joins method names onto the base URL: without the slash, calls 404.
        return url if url.endswith("/") else url + "/"

    @property
    def slack_configured(self) -> bool:
        """The Slack app can run: it has a bot token and a signing secret."""
        return bool(self.slack_bot_token and self.slack_signing_secret)

    @field_validator("temporal_address")
    @classmethod
    def _host_and_port(cls, address: str) -> str:
        host, _, port = address.rpartition(":")
        if not host or not port.isdigit():
            raise ValueError(f"expected host:port such as localhost:7233, got {address!r}")
        return address

    @model_validator(mode="after")
    def _cert_with_key(self) -> "Settings":
        if (self.temporal_tls_cert is None) != (self.temporal_tls_key is None):
            raise ValueError(
                "REA_TEMPORAL_TLS_CERT and REA_TEMPORAL_TLS_KEY go together (mTLS needs both)"
            )
        return self

    @property
    def tls_enabled(self) -> bool:
        """Connect over TLS: asked for, or a CA or client certificate given."""
        return bool(self.temporal_tls or self.temporal_tls_ca or self.temporal_tls_cert)

    @property
    def http_url(self) -> str:
        """The dev server's HTTP API (`rea up`)."""
        return f"http://{self.host}:{self.http_port}"

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
    def runbook_dir(self) -> Path:
        """Where engineers' runbook entries live (``rea runbook add-from-escalation``); the
        shipped ones are in ``runbooks/patterns``."""
        return self.data_dir / "runbooks"

    @property
    def database(self) -> str:
        """The insights database's URL. The default file is the one the first versions kept
        trial results in, so that its migrations carry those results forward."""
        return self.database_url or f"sqlite:///{self.data_dir.resolve() / 'results.sqlite'}"
