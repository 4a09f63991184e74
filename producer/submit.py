"""Registering a batch in the database and sending its chunks to the workers."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from celery import Celery

from contract.cost import TYPICAL_CHARS, batch_cost, estimated_tokens
from contract.methods import split_methods
from contract.model_path import resolve_model, weights_sha256
from contract.settings import Settings
from contract.tasks import (
    EXPLAIN_TASK,
    ChunkMessage,
    celery_config,
    chunk_send_options,
    queue_for_model,
)
from db.batches import NewDocument, RejectedLine, pending_lengths, register_batch
from db.ownership import Resend, iter_chunks
from db.session import session_scope
from producer.readers import Record, Rejected, read_documents


@dataclass(frozen=True)
class Submission:
    batch_id: str
    accepted: int
    rejected: list[Rejected]
    chunks: int
    cost_note: str | None = None  # the documents that will cost far more than the rest


class NothingAccepted(ValueError):
    """Every line of the file was rejected: nothing is registered."""

    def __init__(self, path: Path, rejected: list[Rejected]) -> None:
        super().__init__(
            f"{path}: nothing submitted: all {len(rejected)} lines were rejected (above)"
        )
        self.rejected = rejected


def check_model(spec: str, settings: Settings) -> None:
    """Refuses, before anything is registered, a model that this machine can see is not
    a checkpoint: a directory without config.json, or one that is found nowhere. Where
    only the workers hold the models, EXPLAINQ_CHECK_MODEL=false leaves it to them."""
    if not settings.check_model:
        return
    path = resolve_model(spec, settings)  # FileNotFoundError names where it looked
    if not (path / "config.json").is_file():
        raise FileNotFoundError(f"model {spec!r}: {path} has no config.json (not a checkpoint)")


def weights_note(spec: str, settings: Settings) -> str | None:
    """One line when the weights under the model's name (as the workers name it: its
    directory's) differ from the ones last used with that name; None when they are the
    same, the name is new, or this machine cannot see the checkpoint. Hashed as the
    workers hash it (contract.model_path.weights_sha256), only for a name seen before."""
    from db.model_usage import last_weights

    if not settings.check_model:
        return None
    try:
        path = resolve_model(spec, settings)
    except FileNotFoundError:
        return None
    with session_scope(settings.sqlalchemy_url) as session:
        last = last_weights(session, path.name)
    if last is None:
        return None
    try:
        local = weights_sha256(path)
    except OSError:  # no weight files: the workers refuse it, naming why
        return None
    if local == last:
        return None
    return (
        f"note: model {path.name}: weights differ from the ones last used "
        f"(sha256 {last[:12]}… → {local[:12]}…)"
    )


class NotSent(Exception):
    """The batch is registered (its documents PENDING in the database) but sending its
    tasks failed: the sweeper or `producer resume` sends them later."""

    def __init__(self, submission: Submission, error: Exception) -> None:
        super().__init__(
            f"batch {submission.batch_id}: {submission.accepted} "
            f"document{'' if submission.accepted == 1 else 's'} registered, not sent: {error}"
        )
        self.submission = submission


def broker_app(settings: Settings) -> Celery:
    """A Celery app that only sends: same settings as the workers, none of their code."""
    app = Celery("explainq-producer")
    app.conf.update(celery_config(settings))
    return app


def submit(
    path: Path,
    settings: Settings,
    *,
    model: str | None = None,
    methods: Sequence[str] | None = None,
    params: dict[str, Any] | None = None,
    chunk_size: int | None = None,
    fmt: str | None = None,
    announce: Callable[[str], None] | None = None,
    on_rejected: Callable[[Rejected], None] | None = None,
) -> Submission:
    """Streams ``path``: registers every accepted document as PENDING (one transaction,
    pages of inserts: memory stays flat on a million lines), then enqueues them.

    The database commit comes first: if sending fails (``NotSent``), even half-way, the
    documents are still recorded and the sweeper or ``producer resume`` sends them.
    ``on_rejected`` hears each rejected line as it is read; ``announce`` the note on
    long documents (``CostTally``) before anything is queued.
    """
    methods = list(methods or split_methods([settings.method]))  # validated by Settings
    params = params if params is not None else {"n_steps": settings.n_steps}
    cost = batch_cost(methods, params, settings)
    size = chunk_size or settings.chunk_size
    tally = CostTally(cost, size)
    rejected: list[Rejected] = []

    def verdicts() -> Iterator[NewDocument | RejectedLine]:
        for item in read_documents(path, settings.max_document_bytes, fmt):
            if isinstance(item, Rejected):
                rejected.append(item)
                if on_rejected:
                    on_rejected(item)
                yield RejectedLine(item.line, item.field, item.reason)
            else:
                tally.add(item)
                yield NewDocument(item.external_id, item.line, item.text, item.meta)

    def duplicate(line: RejectedLine) -> None:  # found by the database, a page later
        item = Rejected(line.line, line.field, line.reason)
        rejected.append(item)
        if on_rejected:
            on_rejected(item)

    model = model or settings.model
    with session_scope(settings.sqlalchemy_url) as session:
        batch_id, accepted, _ = register_batch(
            session, source=str(path.resolve()), model=model, methods=methods,
            params=params, verdicts=verdicts(), on_duplicate=duplicate,
        )  # fmt: skip
        if not accepted:
            raise NothingAccepted(path, rejected)  # and the batch is rolled back
    note = tally.note(methods)
    if note and announce:
        announce(note)
    rejected.sort(key=lambda item: item.line)  # the database's duplicates came a page late
    registered = Submission(batch_id, accepted, rejected, chunks=0, cost_note=note)
    try:
        with session_scope(settings.sqlalchemy_url) as session:
            lengths = pending_lengths(session, batch_id)
            route = Route(model, methods, settings.queue)
            chunks = enqueue(broker_app(settings), batch_id, lengths, size, route, cost)
    except Exception as error:  # the broker is down or refuses us; the database has it all
        raise NotSent(registered, error) from error
    return replace(registered, chunks=chunks)


class CostTally:
    """A batch's estimated work, one document at a time as the file streams: the total,
    and the documents that cost more than a whole chunk of typical ones (each then runs
    in a chunk of its own), the three costliest kept to be named."""

    def __init__(self, cost: Callable[[int], float], size: int) -> None:
        self.cost, self.typical = cost, cost(TYPICAL_CHARS)
        self.limit = size * self.typical
        self.total = 0.0
        self.heavy = 0
        self.costliest: list[tuple[float, int, int]] = []  # (cost, line, characters)

    def add(self, record: Record) -> None:
        price = self.cost(len(record.text))
        self.total += price
        if price > self.limit:
            self.heavy += 1
            self.costliest = sorted([*self.costliest, (price, record.line, len(record.text))],
                                    key=lambda entry: (-entry[0], entry[1]))[:3]  # fmt: skip

    def note(self, methods: Sequence[str]) -> str | None:
        """One line naming the long documents; None when there are none."""
        if not self.heavy:
            return None
        named = ", ".join(
            f"line {line} (~{estimated_tokens(chars):,} tokens: "
            f"{price / self.typical:,.0f}x a 128-token document)"
            for price, line, chars in self.costliest
        )
        more = f" and {self.heavy - 3} more" if self.heavy > 3 else ""
        return (
            f"note: {self.heavy} long document{'' if self.heavy == 1 else 's'} with "
            f"{', '.join(methods)}: {named}{more}; each runs in a chunk of its own. "
            f"The batch is ~{self.total / self.typical:,.0f} documents of 128 tokens of work."
        )


@dataclass(frozen=True)
class Route:
    """Where a batch's chunks go (its model's queue) and what they show."""

    model: str
    methods: list[str]
    prefix: str  # EXPLAINQ_QUEUE

    def options(self, message: ChunkMessage) -> dict[str, Any]:
        return chunk_send_options(message, self.model, self.methods, self.prefix)


def enqueue(
    app: Celery,
    batch_id: str,
    ordered: Iterable[tuple[int, int]],
    chunk_size: int,
    route: Route,
    cost: Callable[[int], float] | None = None,
) -> int:
    """Sends (document id, length) pairs, shortest first, in chunks of similar length, so
    workers pad little, and of bounded cost, so a long expensive document does not hold
    others back, to the model's queue; returns how many."""
    sent = 0
    with app.producer_or_acquire() as producer:
        for chunk in iter_chunks(ordered, chunk_size, cost):
            message = ChunkMessage(batch_id, chunk)
            app.send_task(EXPLAIN_TASK, args=message.args(), producer=producer,
                          **route.options(message))  # fmt: skip
            sent += 1
    return sent


def resend(app: Celery, resends: Sequence[Resend], routes: dict[str, Route]) -> None:
    """Sends chunks handed over by ``hand_over``, each under the task id that now owns
    its documents, to its batch's model's queue."""
    with app.producer_or_acquire() as producer:
        for chunk in resends:
            message = ChunkMessage(chunk.batch_id, chunk.document_ids)
            app.send_task(EXPLAIN_TASK, args=message.args(), task_id=chunk.task_id,
                          producer=producer, **routes[chunk.batch_id].options(message))  # fmt: skip


def consumers(app: Celery, queue: str, timeout: float = 1.0) -> list[str]:
    """The live workers that consume ``queue`` (those that answer within ``timeout``)."""
    answers = app.control.inspect(timeout=timeout).active_queues() or {}
    return sorted(
        name for name, queues in answers.items() if any(q.get("name") == queue for q in queues)
    )


def no_consumer_note(settings: Settings, model: str) -> str | None:
    """One line when no live worker consumes ``model``'s queue: the batch waits there
    until one starts (with EXPLAINQ_MODEL naming the model). None when one does, or when
    the broker cannot be asked."""
    queue = queue_for_model(model, settings.queue)
    try:
        if consumers(broker_app(settings), queue):
            return None
    except Exception:  # the broker went away: the send already said what it could
        return None
    return (
        f"warning: no live worker consumes queue {queue}: the batch waits there until a "
        f"worker starts with EXPLAINQ_MODEL={model}"
    )
