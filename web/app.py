"""The web app's factory: ``create_app(settings)`` wires the read-only sessions, the
pages and their /api/v1 twins, the security guard and the error pages. Read-only: no
route writes, and the database connections refuse to."""

from __future__ import annotations

from collections.abc import Iterator
from urllib.parse import parse_qsl, urlencode

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, PlainTextResponse, Response
from fastapi.templating import Jinja2Templates
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError, SQLAlchemyError
from sqlalchemy.orm import Session
from starlette.types import ASGIApp, Receive, Scope, Send

from contract.settings import Settings
from db.errors import one_line
from web import api, pages
from web.errors import BadRequest, NotFound
from web.security import Guard
from web.session import read_session, timed_out
from web.templating import environment, stylesheet


def create_app(settings: Settings) -> FastAPI:
    url = settings.web_url
    app = FastAPI(
        title="explainq results",
        version="1",
        description="Read-only: batches, documents and their explanations, the corpus.",
        docs_url=None,  # the interactive docs load script from a CDN: not here
        redoc_url=None,
    )
    app.state.url = url
    app.state.timeout_ms = timeout_ms = settings.web_statement_timeout_ms

    def sessions() -> Iterator[Session]:
        with read_session(url, timeout_ms) as session:
            yield session

    app.state.sessions = sessions
    app.state.templates = Jinja2Templates(env=environment())
    css = stylesheet()

    @app.get("/static/style.css", include_in_schema=False)
    def style() -> Response:
        return Response(css, media_type="text/css", headers={"cache-control": "max-age=3600"})

    @app.get("/healthz", include_in_schema=False)
    def healthz() -> PlainTextResponse:
        try:
            with read_session(url, timeout_ms) as session:
                session.execute(text("SELECT 1"))
        except SQLAlchemyError:  # asked without credentials: says nothing of the database
            return PlainTextResponse("unavailable\n", status_code=503)
        return PlainTextResponse("ok\n")

    app.include_router(api.router)
    app.include_router(pages.router)
    _errors(app, timeout_ms)
    password = settings.web_password.get_secret_value() if settings.web_password else None
    app.add_middleware(BlankFilters)
    app.add_middleware(Guard, user=settings.web_user, password=password)
    return app


def _errors(app: FastAPI, timeout_ms: int) -> None:
    """Only the web's own errors are 4xx; a database error is a 503; anything else
    propagates: a 500 (``web.security.Guard`` gives it the headers)."""

    def problem(request: Request, status: int, detail: str) -> Response:
        if request.url.path.startswith("/api/"):
            return JSONResponse({"detail": detail}, status_code=status)
        templates = request.app.state.templates
        return templates.TemplateResponse(
            request, "error.html", {"status": status, "detail": detail}, status_code=status
        )

    @app.exception_handler(NotFound)
    def not_found(request: Request, error: NotFound) -> Response:
        return problem(request, 404, str(error))

    @app.exception_handler(BadRequest)
    def bad_request(request: Request, error: BadRequest) -> Response:
        return problem(request, 400, str(error))

    @app.exception_handler(SQLAlchemyError)
    def unavailable(request: Request, error: SQLAlchemyError) -> Response:
        if isinstance(error, DBAPIError) and timed_out(error):
            detail = (f"the read ran past {timeout_ms} ms (EXPLAINQ_WEB_STATEMENT_TIMEOUT_MS):"
                      " narrow the filters, or use `results list` / the export")  # fmt: skip
            return problem(request, 503, detail)
        return problem(request, 503, one_line(error))


class BlankFilters:
    """A form's empty fields mean "no filter": dropped before validation, so an empty
    confidence box is not a 422. A NUL anywhere in the query is a 400 (no database
    takes it in text)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope.get("query_string"):
            raw = scope["query_string"].decode("latin-1")
            pairs = parse_qsl(raw, keep_blank_values=True)
            if any("\x00" in k or "\x00" in v for k, v in pairs) or "%00" in raw:
                detail = "a NUL character in the query"
                response: Response = (
                    JSONResponse({"detail": detail}, status_code=400)
                    if scope["path"].startswith("/api/")
                    else PlainTextResponse(detail + "\n", status_code=400)
                )
                await response(scope, receive, send)
                return
            kept = [(k, v) for k, v in pairs if v != ""]
            scope = {**scope, "query_string": urlencode(kept).encode()}
        await self.app(scope, receive, send)
