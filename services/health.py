"""Liveness and readiness probes."""
from __future__ import annotations

from flask import Blueprint, Response, jsonify, request
from sqlalchemy import text

from services import context
from services.auth import public
from shared.metrics import OperationalState, render as render_metrics
from shared.security import constant_time_equal

bp = Blueprint("health", __name__)


@bp.get("/healthz")
@public
def healthz():
    return jsonify(status="ok")


@bp.get("/readyz")
@public
def readyz():
    checks = {"database": _check_database(), "broker": _check_broker()}
    ready = all(v == "ok" for v in checks.values())
    return jsonify(status="ok" if ready else "unavailable", checks=checks), 200 if ready else 503


@bp.get("/metrics")
@public
def metrics():
    """Prometheus exposition; guarded by METRICS_TOKEN when one is configured."""
    expected = context.settings().metrics_token
    if expected and not constant_time_equal(request.headers.get("Authorization", ""), f"Bearer {expected}"):
        return Response("metrics token required\n", status=401, mimetype="text/plain", headers={"WWW-Authenticate": "Bearer"})
    from workers.celery_app import QUEUES, celery_app

    body, content_type = render_metrics(OperationalState(context.database(), celery_app, QUEUES))
    return Response(body, mimetype=content_type.split(";")[0], content_type=content_type)


def _check_database() -> str:
    try:
        with context.database().engine.connect() as connection:
            connection.execute(text("SELECT 1"))
        return "ok"
    except Exception as exc:  # noqa: BLE001 - any failure means not ready
        return f"error: {type(exc).__name__}"


def _check_broker() -> str:
    from workers.celery_app import celery_app

    try:
        with celery_app.connection_for_write() as connection:
            connection.ensure_connection(max_retries=1, timeout=2)
        return "ok"
    except Exception as exc:  # noqa: BLE001
        return f"error: {type(exc).__name__}"
