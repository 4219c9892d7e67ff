"""The one place configuration is read: environment variables with documented defaults.

Every process (API, worker, beat, CLI) calls :func:`load_settings`; a bad or missing
value raises :class:`ConfigError` naming the variable, and the entry points turn that
into a clean exit instead of a traceback.
"""
from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError

from shared import security

DEFAULT_SECRET_KEY = "dev-only-insecure-secret-key-change-me"
ENVIRONMENTS = ("development", "testing", "production")


class ConfigError(Exception):
    """A configuration variable is missing or malformed."""

    def __init__(self, variable: str, problem: str):
        self.variable = variable
        super().__init__(f"configuration error: {variable} {problem}")


def _data_dir(env: Mapping[str, str]) -> Path:
    return Path(env.get("WELLBEING_DATA_DIR", "var")).resolve()


def _defaults(env: Mapping[str, str]) -> dict[str, str]:
    data = _data_dir(env)
    return {
        "DATABASE_URL": f"sqlite:///{data / 'wellbeing.db'}",
        "BROKER_URL": f"sqla+sqlite:///{data / 'broker.db'}",
        "SMTP_URL": "smtp://127.0.0.1:8025",
        "MAIL_FROM": "Wellbeing <wellbeing@localhost>",
        "PUBLIC_URL": "http://127.0.0.1:8000",
        "SECRET_KEY": DEFAULT_SECRET_KEY,
        "WELLBEING_ENV": "development",
        "TOKEN_TTL_HOURS": "12",
        "LOGIN_RATE_LIMIT": "10 per minute",
        "RATELIMIT_STORAGE_URL": "",
        "LOG_LEVEL": "INFO",
        "WEB_CONCURRENCY": "2",
        "WEB_THREADS": "4",
        "METRICS_TOKEN": "",
        "MAX_REQUEST_MB": "25",
        "WELLBEING_DIGEST_RETRY_BASE_SECONDS": "30",
        "WELLBEING_DIGEST_RETRY_MAX_SECONDS": "3600",
        "MAIL_INBOUND_DOMAIN": "",
        "MAIL_INBOUND_BIND": "127.0.0.1:2525",
        "WORKER_METRICS_BIND": "",
        "SECRET_KEY_FALLBACKS": "",
    }


@dataclass(frozen=True)
class SmtpSettings:
    host: str
    port: int
    use_ssl: bool
    username: str | None
    password: str | None
    starttls: bool


@dataclass(frozen=True)
class Settings:
    database_url: str
    broker_url: str
    smtp_url: str
    mail_from: str
    public_url: str
    secret_key: str
    environment: str
    token_ttl_hours: int
    login_rate_limit: str
    ratelimit_storage_url: str
    log_level: str
    web_concurrency: int
    web_threads: int
    metrics_token: str
    max_request_bytes: int
    digest_retry_base_seconds: float
    digest_retry_max_seconds: float
    data_dir: Path
    smtp: SmtpSettings = field(repr=False)
    # Domain of the List-Unsubscribe mailto: addresses (default: MAIL_FROM's domain) and
    # where ``wellbeing mail-inbound`` listens for mail to them.
    mail_inbound_domain: str = ""
    mail_inbound_host: str = "127.0.0.1"
    mail_inbound_port: int = 2525
    # Retired secret keys, still accepted when checking signed links and sessions.
    secret_key_fallbacks: tuple[str, ...] = ()
    # Where ``wellbeing worker`` serves its pool's Prometheus metrics (None: not served).
    worker_metrics_bind: tuple[str, int] | None = None

    @property
    def is_production(self) -> bool:
        return self.environment == "production"

    @property
    def is_development(self) -> bool:
        return self.environment == "development"

    @property
    def mailbox_dir(self) -> Path:
        """Maildir of the development SMTP sink (dev mode only)."""
        return self.data_dir / "mailbox"


def _parse_smtp(url: str) -> SmtpSettings:
    parts = urlsplit(url)
    if parts.scheme not in ("smtp", "smtps") or not parts.hostname:
        raise ConfigError("SMTP_URL", f"must look like smtp://[user:pass@]host:port or smtps://..., got {url!r}")
    try:
        port = parts.port or (465 if parts.scheme == "smtps" else 25)
    except ValueError as exc:
        raise ConfigError("SMTP_URL", f"has a bad port: {exc}") from None
    query = dict(p.split("=", 1) for p in parts.query.split("&") if "=" in p)
    return SmtpSettings(
        host=parts.hostname,
        port=port,
        use_ssl=parts.scheme == "smtps",
        username=parts.username,
        password=parts.password,
        starttls=query.get("starttls", "auto") != "off" and parts.scheme == "smtp",
    )


def _check_url(variable: str, value: str, schemes: tuple[str, ...]) -> None:
    scheme = urlsplit(value).scheme
    if not scheme or not scheme.startswith(schemes):
        raise ConfigError(variable, f"must start with one of {', '.join(schemes)}, got {value!r}")


def _positive_int(variable: str, value: str) -> int:
    try:
        number = int(value)
    except ValueError:
        number = 0
    if number < 1:
        raise ConfigError(variable, f"must be a positive whole number, got {value!r}")
    return number


def _positive_float(variable: str, value: str) -> float:
    try:
        number = float(value)
    except ValueError:
        number = 0.0
    if number <= 0:
        raise ConfigError(variable, f"must be a positive number of seconds, got {value!r}")
    return number


def _parse_bind(variable: str, value: str) -> tuple[str, int]:
    host, _, port = value.rpartition(":")
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ConfigError(variable, f"must look like HOST:PORT, e.g. 127.0.0.1:2525, got {value!r}")
    return host.strip("[]"), int(port)


def load_settings(env: Mapping[str, str] | None = None, *, environment: str | None = None) -> Settings:
    """Read and validate every setting; ``environment`` overrides ``WELLBEING_ENV``."""
    env = os.environ if env is None else env
    raw = _defaults(env)
    raw.update({k: v for k, v in env.items() if k in raw and v != ""})
    if environment:
        raw["WELLBEING_ENV"] = environment

    if raw["WELLBEING_ENV"] not in ENVIRONMENTS:
        raise ConfigError("WELLBEING_ENV", f"must be one of {', '.join(ENVIRONMENTS)}")
    try:
        db_url = make_url(raw["DATABASE_URL"])
    except ArgumentError:
        raise ConfigError("DATABASE_URL", f"is not a SQLAlchemy URL: {raw['DATABASE_URL']!r}") from None
    if db_url.get_backend_name() not in ("sqlite", "postgresql"):
        raise ConfigError("DATABASE_URL", "must be a sqlite:// or postgresql+psycopg:// URL")
    _check_url("BROKER_URL", raw["BROKER_URL"], ("redis", "rediss", "sqla+", "memory", "filesystem"))
    _check_url("PUBLIC_URL", raw["PUBLIC_URL"], ("http",))
    if "@" not in raw["MAIL_FROM"]:
        raise ConfigError("MAIL_FROM", f"must contain an email address, got {raw['MAIL_FROM']!r}")
    if len(raw["SECRET_KEY"]) < 16:
        raise ConfigError("SECRET_KEY", "must be at least 16 characters long")
    if raw["WELLBEING_ENV"] == "production" and raw["SECRET_KEY"] == DEFAULT_SECRET_KEY:
        raise ConfigError("SECRET_KEY", "is the development default; set a random value in production")
    fallbacks = tuple(key.strip() for key in raw["SECRET_KEY_FALLBACKS"].split(",") if key.strip())
    if any(len(key) < 16 for key in fallbacks):
        raise ConfigError("SECRET_KEY_FALLBACKS", "each key (comma-separated) must be at least 16 characters long")
    # Every process loads its settings here, so every signer and verifier sees them.
    security.accept_fallback_keys(raw["SECRET_KEY"], fallbacks)
    ttl = _positive_int("TOKEN_TTL_HOURS", raw["TOKEN_TTL_HOURS"])
    if raw["LOG_LEVEL"].upper() not in ("DEBUG", "INFO", "WARNING", "ERROR"):
        raise ConfigError("LOG_LEVEL", "must be DEBUG, INFO, WARNING or ERROR")

    web = {name: _positive_int(name, raw[name]) for name in ("WEB_CONCURRENCY", "WEB_THREADS")}

    ratelimit_storage = raw["RATELIMIT_STORAGE_URL"]
    if not ratelimit_storage:
        # Limits must hold across every API process: share them through Redis when
        # there is one, otherwise (embedded default, one process) keep them in memory.
        ratelimit_storage = raw["BROKER_URL"] if raw["BROKER_URL"].startswith("redis") else "memory://"

    inbound_host, inbound_port = _parse_bind("MAIL_INBOUND_BIND", raw["MAIL_INBOUND_BIND"])
    worker_metrics_bind = _parse_bind("WORKER_METRICS_BIND", raw["WORKER_METRICS_BIND"]) if raw["WORKER_METRICS_BIND"] else None
    inbound_domain = raw["MAIL_INBOUND_DOMAIN"].strip().lower()
    if inbound_domain and not re.fullmatch(r"[a-z0-9]([a-z0-9.-]*[a-z0-9])?", inbound_domain):
        raise ConfigError("MAIL_INBOUND_DOMAIN", f"must be a domain name, got {raw['MAIL_INBOUND_DOMAIN']!r}")

    return Settings(
        database_url=raw["DATABASE_URL"],
        broker_url=raw["BROKER_URL"],
        smtp_url=raw["SMTP_URL"],
        mail_from=raw["MAIL_FROM"],
        public_url=raw["PUBLIC_URL"].rstrip("/"),
        secret_key=raw["SECRET_KEY"],
        environment=raw["WELLBEING_ENV"],
        token_ttl_hours=ttl,
        login_rate_limit=raw["LOGIN_RATE_LIMIT"],
        ratelimit_storage_url=ratelimit_storage,
        log_level=raw["LOG_LEVEL"].upper(),
        web_concurrency=web["WEB_CONCURRENCY"],
        web_threads=web["WEB_THREADS"],
        metrics_token=raw["METRICS_TOKEN"],
        max_request_bytes=_positive_int("MAX_REQUEST_MB", raw["MAX_REQUEST_MB"]) * 1024 * 1024,
        digest_retry_base_seconds=_positive_float("WELLBEING_DIGEST_RETRY_BASE_SECONDS", raw["WELLBEING_DIGEST_RETRY_BASE_SECONDS"]),
        digest_retry_max_seconds=_positive_float("WELLBEING_DIGEST_RETRY_MAX_SECONDS", raw["WELLBEING_DIGEST_RETRY_MAX_SECONDS"]),
        data_dir=_data_dir(env),
        smtp=_parse_smtp(raw["SMTP_URL"]),
        mail_inbound_domain=inbound_domain,
        mail_inbound_host=inbound_host,
        mail_inbound_port=inbound_port,
        worker_metrics_bind=worker_metrics_bind,
        secret_key_fallbacks=fallbacks,
    )
