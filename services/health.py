"""Liveness and readiness probes."""
from __future__ import annotations

from flask import Blueprint, jsonify
from sqlalchemy import text

from services import context
from services.auth import public

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
