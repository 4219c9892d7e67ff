"""The server-rendered web console for HR admins and managers."""
from __future__ import annotations

from flask import Flask

from services import context
from services.extensions import login_manager
from services.web import views
from services.web import articles as _article_pages  # noqa: F401  (registers routes on views.bp)
from services.web import reader
from services.web import preferences
from services.web import employees as _employee_pages  # noqa: F401  (registers routes on views.bp)
from services.web import program_session_pages as _program_session_pages  # noqa: F401  (registers routes on views.bp)
from services.web import digest_links
from services.web import digests as _digest_pages  # noqa: F401  (registers routes on views.bp)
from services.web import privacy
from services.web import reports as _report_pages  # noqa: F401  (registers routes on views.bp)
from services.extensions import csrf
from services.web.session import load_user_from_session


def init_web(app: Flask) -> None:
    login_manager.login_view = "console.login"
    login_manager.login_message = "Please sign in to continue."
    login_manager.session_protection = "strong"
    login_manager.user_loader(load_user_from_session)
    app.register_blueprint(views.bp)
    app.register_blueprint(reader.bp)
    app.register_blueprint(preferences.bp)
    app.register_blueprint(digest_links.bp)
    app.register_blueprint(privacy.bp)
    # Signed-token links: the RFC 8058 one-click POST comes from mail clients, without a CSRF token.
    csrf.exempt(digest_links.bp)

    @app.context_processor
    def _console_globals():
        return {"config_is_dev": context.settings().is_development}
