"""Start-up validation: bad configuration stops the process and names the variable."""
import os
import subprocess
import sys

import pytest

from shared.config import DEFAULT_SECRET_KEY, ConfigError, load_settings


def test_embedded_defaults_are_valid(tmp_path):
    settings = load_settings({"WELLBEING_DATA_DIR": str(tmp_path)})
    assert settings.database_url == f"sqlite:///{tmp_path / 'wellbeing.db'}"
    assert settings.broker_url.startswith("sqla+sqlite:///")
    assert settings.smtp.host == "127.0.0.1" and settings.smtp.port == 8025
    assert settings.environment == "development"
    assert settings.ratelimit_storage_url == "memory://"


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("DATABASE_URL", "not a url"),
        ("DATABASE_URL", "mysql://u@h/db"),
        ("BROKER_URL", "amqp://guest@localhost//"),
        ("SMTP_URL", "http://mail.example.com"),
        ("SMTP_URL", "smtp://mail.example.com:notaport"),
        ("MAIL_FROM", "no address here"),
        ("PUBLIC_URL", "ftp://example.com"),
        ("SECRET_KEY", "short"),
        ("WELLBEING_ENV", "staging"),
        ("TOKEN_TTL_HOURS", "0"),
        ("WEB_CONCURRENCY", "many"),
        ("LOG_LEVEL", "LOUD"),
        ("SECRET_KEY_FALLBACKS", "an-old-key-long-enough-0123,short"),
        ("WORKER_METRICS_BIND", "9808"),
    ],
)
def test_bad_value_names_the_variable(variable, value):
    with pytest.raises(ConfigError) as error:
        load_settings({variable: value})
    assert error.value.variable == variable
    assert variable in str(error.value)


def test_production_refuses_the_default_secret_key():
    with pytest.raises(ConfigError) as error:
        load_settings({"WELLBEING_ENV": "production"})
    assert error.value.variable == "SECRET_KEY"
    assert load_settings({"WELLBEING_ENV": "production", "SECRET_KEY": "x" * 40}).is_production


def test_smtp_url_forms():
    tls = load_settings({"SMTP_URL": "smtps://user:p%40ss@mail.example.com"}).smtp
    assert (tls.host, tls.port, tls.use_ssl, tls.username) == ("mail.example.com", 465, True, "user")
    plain = load_settings({"SMTP_URL": "smtp://relay:2525"}).smtp
    assert (plain.port, plain.use_ssl, plain.starttls) == (2525, False, True)


def test_redis_broker_shares_rate_limits():
    settings = load_settings({"BROKER_URL": "redis://cache:6379/0"})
    assert settings.ratelimit_storage_url == "redis://cache:6379/0"


@pytest.mark.parametrize("command", ["api", "worker", "beat"])
def test_production_processes_exit_cleanly_on_default_secret(command, tmp_path):
    env = {k: v for k, v in os.environ.items() if k not in ("SECRET_KEY", "WELLBEING_ENV")}
    env["WELLBEING_DATA_DIR"] = str(tmp_path)
    result = subprocess.run(
        [sys.executable, "-m", "services.cli", command], env=env, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 2
    assert "SECRET_KEY" in result.stderr
    assert "Traceback" not in result.stderr
    assert DEFAULT_SECRET_KEY not in result.stderr


def test_cli_names_bad_database_url(tmp_path):
    env = dict(os.environ, DATABASE_URL="oracle://nope", WELLBEING_DATA_DIR=str(tmp_path))
    result = subprocess.run([sys.executable, "-m", "services.cli", "db", "upgrade"], env=env, capture_output=True, text=True, timeout=60)
    assert result.returncode == 2
    assert "DATABASE_URL" in result.stderr
