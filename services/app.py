"""The one app factory."""
from __future__ import annotations

import re
import time
import uuid

from flask import Flask, g, redirect, request, url_for
from werkzeug.routing import IntegerConverter

from shared.config import Settings, load_settings
from shared.db import Database
from shared.logging import configure_logging, request_id_var
from shared.metrics import HTTP_REQUEST_SECONDS
from shared.schemas.common import MAX_ID
from services.limits import DepthLimitedJSONProvider

_REQUEST_ID = re.compile(r"^[A-Za-z0-9._-]{8,64}$")


# Scripts only from our own origin: injected markup can never run. Images may come
# from partners' sites over https; nothing may frame our pages.
CONTENT_SECURITY_POLICY = "; ".join(
    [
        "default-src 'self'",
        "script-src 'self'",
        "style-src 'self' 'unsafe-inline'",
        "img-src 'self' data: https:",
        "object-src 'none'",
        "base-uri 'none'",
        "form-action 'self'",
        "frame-ancestors 'none'",
    ]
)


def _set_security_headers(headers, settings: Settings) -> None:  # noqa: ANN001
    headers.setdefault("Content-Security-Policy", CONTENT_SECURITY_POLICY)
    headers["X-Content-Type-Options"] = "nosniff"
    headers["X-Frame-Options"] = "DENY"
    # Signed employee links carry their token in the path: never leak it to other sites.
    headers["Referrer-Policy"] = "no-referrer"
    headers["Permissions-Policy"] = "camera=(), microphone=(), geolocation=()"
    headers["Cross-Origin-Opener-Policy"] = "same-origin"
    if settings.public_url.startswith("https://"):
        headers["Strict-Transport-Security"] = "max-age=31536000; includeSubDomains"


class IdConverter(IntegerConverter):
    """``<int:...>`` in routes: an id beyond the id columns' range matches no route (404),
    instead of overflowing the database driver."""

    def __init__(self, map, *args, **kwargs):  # noqa: A002, ANN001
        kwargs.setdefault("max", MAX_ID)
        super().__init__(map, *args, **kwargs)


def create_app(settings: Settings | None = None) -> Flask:
    settings = settings or load_settings()
    configure_logging(settings.log_level)
    # Cookies only over TLS, except on a developer's plain-http machine (and in tests).
    secure_cookies = settings.is_production or settings.public_url.startswith("https://")
    app = Flask(__name__)
    app.url_map.converters["int"] = IdConverter
    app.json = DepthLimitedJSONProvider(app)
    app.config.update(
        SECRET_KEY=settings.secret_key,
        SECRET_KEY_FALLBACKS=list(settings.secret_key_fallbacks),  # console sessions survive a key rotation
        MAX_CONTENT_LENGTH=settings.max_request_bytes,
        SESSION_COOKIE_HTTPONLY=True,
        SESSION_COOKIE_SAMESITE="Lax",
        SESSION_COOKIE_SECURE=secure_cookies,
        REMEMBER_COOKIE_HTTPONLY=True,
        REMEMBER_COOKIE_SECURE=secure_cookies,
        RATELIMIT_STORAGE_URI=settings.ratelimit_storage_url,
        WTF_CSRF_TIME_LIMIT=None,
        TESTING=settings.environment == "testing",
    )
    app.extensions["wellbeing.settings"] = settings
    app.extensions["wellbeing.db"] = Database(settings.database_url)

    from workers.celery_app import configure as configure_celery

    configure_celery(settings)

    from services import context, health, web
    from services.api import init_api
    from services.extensions import csrf, limiter, login_manager

    limiter.init_app(app)
    csrf.init_app(app)
    login_manager.init_app(app)

    @app.before_request
    def _assign_request_id():
        g.started_at = time.perf_counter()
        incoming = request.headers.get("X-Request-ID", "")
        g.request_id = incoming if _REQUEST_ID.match(incoming) else uuid.uuid4().hex
        request_id_var.set(g.request_id)

    @app.after_request
    def _finish(response):
        context.finish_request(success=response.status_code < 400)
        response.headers["X-Request-ID"] = g.get("request_id", "")
        _set_security_headers(response.headers, settings)
        if "started_at" in g:
            # The route pattern, not the path: ids must not explode the label set.
            HTTP_REQUEST_SECONDS.labels(request.method, request.endpoint or "unmatched", str(response.status_code)).observe(
                time.perf_counter() - g.started_at
            )
        return response

    @app.teardown_request
    def _cleanup(_exc):
        context.finish_request(success=False)
        request_id_var.set(None)

    init_api(app)
    for blueprint in (health.bp,):
        app.register_blueprint(blueprint)
    web.init_web(app)

    @app.get("/")
    def index():
        return redirect(url_for("console.home"))

    return app
