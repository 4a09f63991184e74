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

from pydantic import Field, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

# The contract between producer and workers: the task is sent by name, so the producer
# never imports the worker code (and so never imports torch).
EXPLAIN_TASK = "explainq.explain_chunk"
SWEEP_TASK = "explainq.sweep"
DEFAULT_MODEL = "minilm-sentiment"
# Attribution methods the workers implement (workers.engine.methods.METHODS, which a test
# keeps equal to this), so that the producer can refuse a typo without importing torch.
METHODS = ("lig", "saliency", "input_x_gradient", "attention", "occlusion", "kernel_shap", "lime")
# The first level of lig's adaptive steps (workers.engine.quadrature.nested_sizes()[0];
# db imports no engine, a test holds the two equal): the least max_steps can be.
FIRST_LEVEL = 9


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
    quality: bool = Field(
        default=True, description="Measure faithfulness (comprehensiveness, sufficiency)."
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
    db_retries: int = Field(default=5, ge=0)

    @field_validator("method")
    @classmethod
    def _known_methods(cls, value: str) -> str:
        methods = [m.strip() for m in value.split(",") if m.strip()]
        if problem := methods_problem(methods):
            raise ValueError(problem)
        return ",".join(methods)

    @model_validator(mode="after")
    def _within_caps(self) -> Settings:
        problems = over_caps(
            self,
            {"n_steps": self.n_steps, "internal_batch_size": self.internal_batch_size,
             "chunk_size": self.chunk_size},
            options=False,
        )  # fmt: skip
        problems += stride_problems(self, self.window_stride, options=False)
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

    def celery_config(self) -> dict[str, Any]:
        """Celery settings shared verbatim by producer, workers and Flower."""
        return {
            "broker_url": self.broker_url,
            "broker_transport_options": {
                "visibility_timeout": self.visibility_timeout,
                # A broker that vanishes without closing the TCP connection must not
                # hang a publish (producer, sweeper, retry) forever.
                "socket_timeout": 30,
                "socket_connect_timeout": 5,
            },
            "broker_connection_retry_on_startup": True,
            "broker_connection_max_retries": None,  # a worker outlives any broker outage
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


# What each capped value is capped by: the value's name -> the cap's field.
CAPS = {
    "n_steps": "max_steps",
    "max_steps": "max_steps",
    "n_samples": "max_samples",
    "internal_batch_size": "max_internal_batch_size",
    "chunk_size": "max_chunk_size",
}


def over_caps(settings: Settings, values: dict[str, Any], *, options: bool = True) -> list[str]:
    """One line per value above its cap, naming the value as the user gave it (``--n-steps
    5000``, or ``EXPLAINQ_N_STEPS=5000`` with ``options=False``) and the capping setting."""
    problems = []
    for name, value in values.items():
        cap = CAPS.get(name)
        if cap is None or not isinstance(value, int) or isinstance(value, bool):
            continue
        limit = getattr(settings, cap)
        if value > limit:
            given = (
                f"--{name.replace('_', '-')} {value}"
                if options
                else f"EXPLAINQ_{name.upper()}={value}"
            )
            problems.append(f"{given} is over the limit EXPLAINQ_{cap.upper()}={limit}")
    return problems


def stride_problems(settings: Settings, stride: int | None, *, options: bool = True) -> list[str]:
    """A window stride must leave no gap: at most a window's content (EXPLAINQ_MAX_TOKENS
    less [CLS] and [SEP]; a model with a smaller limit narrows it further)."""
    width = settings.max_tokens - 2
    if stride is None or stride <= width:
        return []
    given = f"--window-stride {stride}" if options else f"EXPLAINQ_WINDOW_STRIDE={stride}"
    return [f"{given} is over the limit EXPLAINQ_MAX_TOKENS-2={width} (no gaps between windows)"]


def methods_problem(methods: list[str]) -> str | None:
    """Why a batch cannot ask for these methods, if it cannot."""
    unknown = sorted(set(methods) - set(METHODS)) or ([] if methods else ["(none)"])
    return f"unknown method {', '.join(unknown)}; known: {', '.join(METHODS)}" if unknown else None


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
