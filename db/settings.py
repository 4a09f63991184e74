"""The one settings object of explainq, read from ``EXPLAINQ_*`` environment variables.

The producer, the workers, the results CLI and Flower all read the same object, so a
value such as the visibility timeout can never differ between them. Nothing here imports
Celery or torch: the Celery configuration is a plain dict that each side passes to its
own ``Celery`` app.
"""

from __future__ import annotations

from functools import cache
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

# The contract between producer and workers: the task is sent by name, so the producer
# never imports the worker code (and so never imports torch).
EXPLAIN_TASK = "explainq.explain_chunk"
SWEEP_TASK = "explainq.sweep"
DEFAULT_MODEL = "minilm-sentiment"
# Attribution methods the workers implement (workers.engine.methods.METHODS, which a test
# keeps equal to this), so that the producer can refuse a typo without importing torch.
METHODS = ("lig",)


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="EXPLAINQ_", extra="ignore")

    home: Path = Field(
        default=Path("~/.explainq"),
        description="Where the default SQLite database and prepared models live.",
    )
    database_url: str | None = Field(
        default=None, description="SQLAlchemy URL; default: SQLite at $EXPLAINQ_HOME/explainq.db."
    )
    broker_url: str = "redis://127.0.0.1:6379/0"
    queue: str = "explainq"

    model: str = Field(
        default=DEFAULT_MODEL,
        description="A checkpoint directory, or the name of a model under $EXPLAINQ_HOME/models.",
    )
    method: str = "lig"
    n_steps: Annotated[int, Field(ge=1, le=1024)] | Literal["auto"] = Field(
        default=50, description="Integration steps, or 'auto' for adaptive steps."
    )
    internal_batch_size: int | None = Field(
        default=None, ge=1, le=4096, description="Rows per pass; unset: sized from memory."
    )
    max_tokens: int = Field(default=512, ge=8, le=8192)

    chunk_size: int = Field(default=16, ge=1, le=1024)
    max_document_bytes: int = Field(default=100_000, ge=1)

    visibility_timeout: int = Field(
        default=6 * 3600, description="Seconds before Redis redelivers an unacknowledged task."
    )
    stale_after: int = Field(default=3600, description="Seconds before a document is re-sent.")
    sweep_interval: float = Field(
        default=300, gt=0, description="Seconds between sweeps (celery beat, or worker -B)."
    )
    max_attempts: int = Field(default=3, ge=1)
    db_retries: int = Field(default=5, ge=0)

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

    def celery_config(self) -> dict[str, Any]:
        """Celery settings shared verbatim by producer, workers and Flower."""
        return {
            "broker_url": self.broker_url,
            "broker_transport_options": {"visibility_timeout": self.visibility_timeout},
            "broker_connection_retry_on_startup": True,
            "task_serializer": "json",
            "result_serializer": "json",
            "accept_content": ["json"],
            "task_default_queue": self.queue,
            "task_acks_late": True,
            "task_reject_on_worker_lost": True,
            "task_ignore_result": True,
            "task_send_sent_event": True,
            "worker_send_task_events": True,
            "worker_prefetch_multiplier": 1,
            "worker_cancel_long_running_tasks_on_connection_loss": True,
            # Loading torch and a model takes seconds; the default 4 s kills the child.
            "worker_proc_alive_timeout": 120,
            "worker_hijack_root_logger": False,
            # The sweeper: re-sends documents left unfinished longer than stale_after.
            "beat_schedule": {
                "explainq-sweep": {"task": SWEEP_TASK, "schedule": self.sweep_interval}
            },
        }


@cache
def get_settings() -> Settings:
    return Settings()


def resolve_model(spec: str, settings: Settings) -> Path:
    """A model spec is a checkpoint directory, or a name under ``settings.models_dir``."""
    path = Path(spec).expanduser()
    if path.is_dir():
        return path.resolve()
    named = settings.models_dir / spec
    if named.is_dir():
        return named
    hint = " (prepare it with `make model`)" if spec == DEFAULT_MODEL else ""
    raise FileNotFoundError(f"model {spec!r} not found: no directory {path} or {named}{hint}")
