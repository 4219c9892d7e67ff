"""Interactive API docs served from the vendored Swagger UI (no CDN, no inline script)."""
from __future__ import annotations

from flask import Blueprint, render_template, send_from_directory
from swagger_ui_bundle import swagger_ui_path

from services.auth import public

bp = Blueprint("api_docs", __name__, template_folder="templates", static_folder="static")


@bp.get("/docs")
@public
def docs():
    return render_template("api_docs.html")


@bp.get("/docs/assets/<path:filename>")
@public
def swagger_assets(filename: str):
    return send_from_directory(swagger_ui_path, filename, max_age=86400)
