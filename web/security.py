"""What every response carries and every request must show: security headers (no inline
script, no framing, no sniffing) and, when credentials are set, HTTP Basic auth checked
in constant time."""

from __future__ import annotations

import base64
import binascii
import hmac

from starlette.types import ASGIApp, Message, Receive, Scope, Send

# Inline style attributes are not needed either: colours are classes (static/style.css).
CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "form-action 'self'; base-uri 'none'; frame-ancestors 'none'"
)
HEADERS = [
    (b"content-security-policy", CSP.encode()),
    (b"x-content-type-options", b"nosniff"),
    (b"x-frame-options", b"DENY"),
    (b"referrer-policy", b"no-referrer"),
]
OPEN_PATHS = ("/healthz",)  # the container's healthcheck asks without credentials


class Guard:
    """ASGI middleware: the headers on every response, a 500 included; Basic auth when
    ``user`` is set."""

    def __init__(self, app: ASGIApp, user: str | None, password: str | None) -> None:
        self.app = app
        self.expected = None
        if user is not None and password is not None:
            self.expected = (user.encode(), password.encode())

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", []), *HEADERS]
            await send(message)

        if self.expected and scope["path"] not in OPEN_PATHS and not self._allowed(scope):
            await with_headers({"type": "http.response.start", "status": 401, "headers": [
                (b"www-authenticate", b'Basic realm="explainq", charset="UTF-8"'),
                (b"content-type", b"text/plain; charset=utf-8")]})  # fmt: skip
            await send({"type": "http.response.body", "body": b"credentials required\n"})
            return
        started = False

        async def tracked(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await with_headers(message)

        try:
            await self.app(scope, receive, tracked)
        except Exception:
            # Starlette's ServerErrorMiddleware, outside this one, would answer without
            # the headers: answer here, then let it log the error (it sends nothing more)
            if not started:
                await with_headers({"type": "http.response.start", "status": 500, "headers": [
                    (b"content-type", b"text/plain; charset=utf-8")]})  # fmt: skip
                await send({"type": "http.response.body", "body": b"internal server error\n"})
            raise

    def _allowed(self, scope: Scope) -> bool:
        header = dict(scope["headers"]).get(b"authorization", b"")
        scheme, _, value = header.partition(b" ")
        if scheme.lower() != b"basic" or self.expected is None:
            return False
        try:
            user, sep, password = base64.b64decode(value, validate=True).partition(b":")
        except (binascii.Error, ValueError):
            return False
        # both compared, always: the time does not say which one was wrong
        ok_user = hmac.compare_digest(user, self.expected[0])
        ok_password = hmac.compare_digest(password, self.expected[1])
        return bool(sep) and ok_user and ok_password
