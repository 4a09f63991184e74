"""``make demo``: the whole system on one machine, with nothing else installed.

Prepares the default model if needed, starts an embedded Redis (unless
EXPLAINQ_BROKER_URL is set) and a real Celery worker process, submits the held-out
sample of movie-review sentences through the producer, waits, shows the results, and
shuts everything down. The database (SQLite under EXPLAINQ_HOME unless
EXPLAINQ_DATABASE_URL is set) stays, for the ``results`` commands.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from contextlib import ExitStack
from pathlib import Path

import typer
from rich.console import Console
from sqlalchemy.engine import make_url

from contract.model_path import DEFAULT_MODEL, resolve_model
from contract.settings import Settings, settings_or_exit
from db import queries
from db.listing import list_page
from db.session import migrate, session_scope
from producer.embedded_redis import EmbeddedRedis
from producer.progress import wait
from producer.submit import broker_app, submit
from results import render

console = Console()
SAMPLE_NAME = "demo_sample.jsonl"


def main(
    sample: Path | None = typer.Option(
        None, help=f"Input file (default: the model's {SAMPLE_NAME})."
    ),
    timeout: float = typer.Option(900, help="Seconds to wait for the batch."),
) -> None:
    """Run the explainq demo end to end."""
    settings = settings_or_exit()
    url = settings.sqlalchemy_url
    console.rule("[bold]explainq demo")
    migrate(url)
    console.print(f"database  {make_url(url).render_as_string(hide_password=True)}")
    model_dir = ensure_model(settings)
    console.print(f"model     {model_dir}")
    sample = sample or model_dir / SAMPLE_NAME
    if not sample.is_file():
        console.print(f"[red]error:[/] no sample file {sample}; pass --sample FILE")
        raise typer.Exit(1)

    with ExitStack() as stack:
        if "EXPLAINQ_BROKER_URL" not in os.environ:
            redis = EmbeddedRedis().start()
            stack.callback(redis.stop)
            settings = settings.model_copy(update={"broker_url": redis.url})
            console.print(f"broker    embedded redis-server on {redis.url}")
        else:
            console.print(f"broker    {make_url(settings.broker_url).render_as_string(True)}")
        worker = start_worker(settings, stack)
        console.print(f"worker    {worker} ready")

        result = submit(sample, settings, model=str(model_dir))
        console.print(
            f"submitted {result.accepted} documents from {sample} as batch {result.batch_id}"
        )
        for rejection in result.rejected:
            console.print(f"[yellow]rejected[/] {rejection.describe(sample)}")
        wait(url, result.batch_id, console=console, timeout=timeout)

    show_results(url, result.batch_id)


def ensure_model(settings: Settings) -> Path:
    """The configured model's directory, prepared first if it is the default one."""
    try:
        return resolve_model(settings.model, settings)
    except FileNotFoundError:
        if settings.model != DEFAULT_MODEL:
            raise
    console.print("preparing the default model once (about 2 minutes on 2 CPU cores) ...")
    subprocess.run([sys.executable, "-m", "workers.prepare_model"], check=True)
    return resolve_model(settings.model, settings)


def start_worker(settings: Settings, stack: ExitStack, ready_timeout: float = 180) -> str:
    """A real Celery worker process; stopped (warm shutdown) when ``stack`` closes."""
    name = f"demo-{os.getpid()}@localhost"
    env = {
        **os.environ,
        "EXPLAINQ_BROKER_URL": settings.broker_url,
        "EXPLAINQ_DATABASE_URL": settings.sqlalchemy_url,
    }
    log = settings.home_dir / "demo-worker.log"
    command = [sys.executable, "-m", "celery", "-A", "workers", "worker", "--concurrency=1",
               "--events", f"--hostname={name}", "--loglevel=INFO", f"--logfile={log}"]  # fmt: skip
    process = subprocess.Popen(
        command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT
    )
    stack.callback(stop_process, process)
    app = broker_app(settings)
    deadline = time.monotonic() + ready_timeout
    with console.status("starting a Celery worker (loading torch and the model) ..."):
        while not app.control.ping(destination=[name], timeout=1.0):
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"the worker did not start; see {log}")
    return name


def stop_process(process: subprocess.Popen[bytes], grace: float = 60) -> None:
    process.terminate()  # Celery's warm shutdown: finish the task in hand, then exit
    try:
        process.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def show_results(url: str, batch_id: str) -> None:
    with session_scope(url) as session:
        rows, _ = list_page(session, batch=batch_id, limit=1000)
        console.print(render.results_table(rows))
        done = [row for row in rows if row.confidence is not None]
        best = max(done, key=lambda row: row.confidence) if done else None
        if best:
            explanation = queries.find_document(session, best.id).explanations[0]
            console.print(
                render.heatmap(
                    explanation.tokens,
                    explanation.attributions,
                    explanation.label,
                    explanation.probabilities,
                    title=f"document {best.external_id} (the most confident)",
                    text=explanation.document.text,
                    offsets=explanation.offsets,
                    words=explanation.words,
                )
            )
    console.rule("explore what the demo made")
    for command in (
        f"results list --batch {batch_id}",
        f"results show {best.external_id if best else '<document>'} --batch {batch_id}",
        "results top-tokens --label positive --min-count 1",
        f"results export --format jsonl --batch {batch_id} -o /tmp/explainq-demo.jsonl",
    ):
        # Never wrapped, whatever the terminal's width: these are meant to be copied.
        console.print(f"  .venv/bin/{command}", highlight=False, soft_wrap=True)


if __name__ == "__main__":
    typer.run(main)
