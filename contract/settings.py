"""The one settings object of explainq, read from ``EXPLAINQ_*`` environment variables.

The producer, the workers, the results CLI and Flower all read the same object, so a
value such as the visibility timeout can never differ between them. Nothing here imports
Celery or torch: ``contract.tasks.celery_config`` turns it into the plain dict that each
side passes to its own ``Celery`` app.
"""

from __future__ import annotations

from functools import cache
from pathlib import Path
from typing import Annotated, Literal

from pydantic import (
    BeforeValidator,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_settings import BaseSettings, SettingsConfigDict

from contract.caps import as_env, cap_problems, stride_problems
from contract.methods import FIRST_LEVEL, methods_problem, split_methods
from contract.model_path import DEFAULT_MODEL

_TRUE, _FALSE = {"true", "1", "yes", "on"}, {"false", "0", "no", "off"}


def parse_quality(value: object) -> object:
    """``EXPLAINQ_QUALITY``: true, false, or ``sample:F`` (0 < F <= 1) for a share."""
    if not isinstance(value, str):
        return value
    text = value.strip().lower()
    if text in _TRUE | _FALSE:
        return text in _TRUE
    share = text.removeprefix("sample:")
    try:
        if text.startswith("sample:") and 0 < float(share) <= 1:
            return float(share)
    except ValueError:
        pass
    raise ValueError(f"true, false or sample:F with 0 < F <= 1, not {value!r}")


def quality_label(quality: bool | float) -> bool | str:
    """How a run's quality setting is recorded on its rows: true, false or sample:F."""
    if isinstance(quality, bool) or quality >= 1:
        return bool(quality)
    return f"sample:{quality:g}"


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="EXPLAINQ_", extra="ignore")

    home: Path = Field(
        default=Path("~/.explainq"),
        description="Where the default SQLite database and prepared models live.",
    )
    database_url: str | None = Field(
        default=None, description="SQLAlchemy URL; default: SQLite at $EXPLAINQ_HOME/explainq.db."
    )
    broker_url: str = Field(
        default="redis://127.0.0.1:6379/0",
        description="Redis URL; or Redis Sentinel's sentinel://host:port;sentinel://host:port "
        "with EXPLAINQ_BROKER_MASTER.",
    )
    broker_master: str | None = Field(
        default=None, description="With sentinel:// broker URLs: the name of the master."
    )
    queue: str = "explainq"

    model: str = Field(
        default=DEFAULT_MODEL,
        description="A checkpoint directory, or the name of a model under $EXPLAINQ_HOME/models.",
    )
    check_model: bool = Field(
        default=True,
        description="producer submit refuses a model this machine cannot find; turn off "
        "where only the workers can see the models.",
    )
    method: str = Field(
        default="lig", description="Default of `producer submit --method`: comma-separated."
    )
    # Adaptive by default: it met the 1% tolerance on every benchmark document, in fewer
    # steps than 50 fixed ones (docs/PERFORMANCE.md).
    n_steps: Annotated[int, Field(ge=1)] | Literal["auto"] = Field(
        default="auto", description="Integration steps, or 'auto' for adaptive steps."
    )
    internal_batch_size: int | None = Field(
        default=None, ge=1, description="Rows per pass; unset: sized from memory."
    )
    max_tokens: int = Field(default=512, ge=8, le=8192)
    quality: Annotated[bool | float, BeforeValidator(parse_quality)] = Field(
        default=True,
        description="Measure faithfulness (comprehensiveness, sufficiency): true, false, or "
        "sample:F for a share F of the documents (the same ones on every run).",
    )
    window_stride: int | None = Field(
        default=None, ge=1, description="Tokens between overlapping windows of a long text."
    )

    chunk_size: int = Field(default=16, ge=1)
    max_document_bytes: int = Field(default=100_000, ge=1)
    # Caps on what one batch may ask of a worker (issue 5): checked at `producer submit`
    # for the command line and here for the environment, with the setting in the error.
    max_steps: int = Field(
        default=1024, ge=FIRST_LEVEL, description="Cap on n_steps and max_steps."
    )
    max_samples: int = Field(default=4096, ge=1, description="Cap on perturbation samples.")
    max_internal_batch_size: int = Field(default=4096, ge=1, description="Cap on rows per pass.")
    max_chunk_size: int = Field(default=1024, ge=1, description="Cap on documents per task.")

    visibility_timeout: int = Field(
        default=6 * 3600, description="Seconds before Redis redelivers an unacknowledged task."
    )
    stale_after: int = Field(default=3600, description="Seconds before a document is re-sent.")
    sweep_interval: float = Field(
        default=300, gt=0, description="Seconds between sweeps (celery beat, or worker -B)."
    )
    max_attempts: int = Field(default=3, ge=1)
    metrics_port: int | None = Field(
        default=None, ge=1, le=65535, description="Workers serve /metrics here; unset: off."
    )
    metrics_host: str = Field(default="127.0.0.1", description="Address of /metrics.")
    db_retries: int = Field(default=5, ge=0)

    # `results serve`: HTTP Basic credentials; required to listen beyond 127.0.0.1.
    web_user: str | None = Field(default=None, description="results serve: HTTP Basic user.")
    web_password: SecretStr | None = Field(
        default=None, description="results serve: HTTP Basic password (with EXPLAINQ_WEB_USER)."
    )
    web_database_url: str | None = Field(
        default=None,
        description="results serve: the database as a read-only role (else EXPLAINQ_DATABASE_URL).",
    )
    web_statement_timeout_ms: int = Field(
        default=5000, ge=0, description="results serve: the longest one read may run (0: none)."
    )

    @field_validator("method")
    @classmethod
    def _known_methods(cls, value: str) -> str:
        methods = split_methods([value])
        if problem := methods_problem(methods):
            raise ValueError(problem)
        return ",".join(methods)

    @model_validator(mode="after")
    def _sentinel_has_a_master(self) -> Settings:
        if self.broker_url.startswith("sentinel://") and not self.broker_master:
            raise ValueError(
                "EXPLAINQ_BROKER_URL is a sentinel:// URL: set EXPLAINQ_BROKER_MASTER to the "
                "name of the master the sentinels watch"
            )
        return self

    @model_validator(mode="after")
    def _within_caps(self) -> Settings:
        values = {"n_steps": self.n_steps, "internal_batch_size": self.internal_batch_size,
                  "chunk_size": self.chunk_size}  # fmt: skip
        problems = cap_problems(values, self, as_env)
        problems += stride_problems(self, self.window_stride, as_env)
        if problems:
            raise ValueError("; ".join(problems))
        return self

    @property
    def home_dir(self) -> Path:
        return self.home.expanduser()

    @property
    def models_dir(self) -> Path:
        return self.home_dir / "models"

    @property
    def sqlalchemy_url(self) -> str:
        if self.database_url:
            return self.database_url
        return f"sqlite:///{self.home_dir / 'explainq.db'}"

    @property
    def web_url(self) -> str:
        """The web app's database: its read-only role's URL where set."""
        return self.web_database_url or self.sqlalchemy_url


@cache
def get_settings() -> Settings:
    return Settings()


def settings_or_exit() -> Settings:
    """For the command lines: the settings, or exit status 1 with one line naming the
    EXPLAINQ_* variable that is wrong (not a validation traceback)."""
    try:
        return get_settings()
    except ValidationError as error:
        raise SystemExit(f"error: {settings_problem(error)}") from None


def settings_problem(error: ValidationError) -> str:
    """One line naming the EXPLAINQ_* variable that is out of bounds, and why."""
    first = error.errors()[0]
    # Settings are flat: the field is loc[0] (a union adds the member that failed).
    where = f"EXPLAINQ_{str(first['loc'][0]).upper()}" if first["loc"] else ""
    message = first["msg"].removeprefix("Value error, ")
    return f"{where + ': ' if where else ''}{message}"
