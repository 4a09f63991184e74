"""``results serve`` (the web app) and ``results report`` (one self-contained HTML file):
both import the web package inside the verb, so ``results --help`` stays instant."""

from __future__ import annotations

import ipaddress
import sys
from pathlib import Path

import typer
from rich.console import Console
from rich.text import Text

from results.app import app, fail, reading

LOOPBACK_NAMES = ("localhost",)


def loopback(host: str) -> bool:
    if host in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False  # a name: it may resolve anywhere


@app.command("serve")
def serve_command(
    host: str = typer.Option(
        "127.0.0.1",
        help="Address to listen on; beyond loopback "
        "needs EXPLAINQ_WEB_USER and EXPLAINQ_WEB_PASSWORD.",
    ),
    port: int = typer.Option(8000, min=1, max=65535, help="TCP port."),
) -> None:
    """Serve the results web app (read-only): batches, documents, the corpus, models,
    and their JSON API under /api/v1."""
    from contract.settings import settings_or_exit

    settings = settings_or_exit()
    credentials = bool(settings.web_user) and bool(
        settings.web_password and settings.web_password.get_secret_value()
    )
    if not loopback(host) and not credentials:
        raise fail(
            f"--host {host} listens beyond this machine: set EXPLAINQ_WEB_USER and "
            "EXPLAINQ_WEB_PASSWORD (HTTP Basic), or keep the default 127.0.0.1"
        )
    import uvicorn

    from web.app import create_app

    Console(stderr=True).print(
        Text(f"results web app on http://{host}:{port}/ (read-only"
             + (", HTTP Basic)" if credentials else ")")), soft_wrap=True)  # fmt: skip
    uvicorn.run(create_app(settings), host=host, port=port, server_header=False,
                proxy_headers=False, log_level="info")  # fmt: skip


@app.command("report")
def report_command(
    batch: str = typer.Option(..., "--batch", help="The batch to report."),
    output: Path = typer.Option(..., "-o", "--output", help="The HTML file to write."),
    limit: int = typer.Option(500, min=1, help="Documents shown at most (the cap)."),
) -> None:
    """One self-contained HTML file (no script, no network) with the batch's summary,
    quality plots and each document's heatmap, up to --limit documents."""
    from web.report import write_report

    try:
        handle = output.open("w", encoding="utf-8")
    except OSError as error:
        raise fail(f"cannot write {output}: {error.strerror or error}") from None
    try:
        with reading() as session:
            done = write_report(session, batch, handle, cap=limit)
    except BaseException:
        handle.close()
        output.unlink(missing_ok=True)  # a partial report must not pass for a complete one
        raise
    handle.close()
    err = Console(stderr=True)
    if done["capped"]:
        err.print(Text(f"note: the report shows the first {done['shown']} of {done['total']} "
                       f"documents (--limit {limit})"), soft_wrap=True)  # fmt: skip
    err.print(Text(f"{done['shown']} documents written to {output}"), soft_wrap=True)
    sys.stdout.flush()
