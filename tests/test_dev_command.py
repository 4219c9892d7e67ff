"""`wellbeing dev` runs the whole product on the embedded default and stops cleanly."""
import json
import os
import signal
import subprocess
import sys
import time
import urllib.request

import pytest

from shared.domain.demo import DEMO_ADMIN_EMAIL, DEMO_ADMIN_PASSWORD
from tests.conftest import TEST_DB, free_port

pytestmark = pytest.mark.skipif(TEST_DB != "sqlite", reason="the embedded default is SQLite; run once, in the SQLite pass")


def _get(url: str, timeout: float = 2):
    with urllib.request.urlopen(url, timeout=timeout) as response:
        return response.status, json.loads(response.read())


def _post_json(url: str, body: dict):
    request = urllib.request.Request(url, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=10) as response:
        return response.status, json.loads(response.read())


def test_dev_runs_everything_and_stops_on_ctrl_c(tmp_path):
    port, smtp_port = free_port(), free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DATABASE_URL", "BROKER_URL", "SMTP_URL", "PUBLIC_URL", "SECRET_KEY", "WELLBEING_ENV"))}
    env.update(WELLBEING_DATA_DIR=str(tmp_path / "var"), SMTP_URL=f"smtp://127.0.0.1:{smtp_port}")
    proc = subprocess.Popen(
        [sys.executable, "-m", "services.cli", "dev", "--port", str(port)],
        cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 90
        while True:
            assert proc.poll() is None, proc.stdout.read()
            try:
                status, body = _get(f"{base}/readyz")
                if status == 200:
                    break
            except OSError:
                pass
            assert time.monotonic() < deadline, "wellbeing dev did not become ready"
            time.sleep(0.5)
        assert body["checks"] == {"database": "ok", "broker": "ok"}
        status, token = _post_json(f"{base}/api/v1/auth/token", {"email": DEMO_ADMIN_EMAIL, "password": DEMO_ADMIN_PASSWORD})
        assert status == 201 and token["access_token"]
        request = urllib.request.Request(f"{base}/api/v1/me", headers={"Authorization": f"Bearer {token['access_token']}"})
        with urllib.request.urlopen(request, timeout=5) as response:
            assert json.loads(response.read())["organisation"]["name"] == "Demo Organisation"
        assert (tmp_path / "var" / "wellbeing.db").exists()
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            output, _ = proc.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            raise
    assert proc.returncode == 0, output
    assert f"Console:  {base}/console/" in output
    assert f"Login:    {DEMO_ADMIN_EMAIL} / {DEMO_ADMIN_PASSWORD}" in output
    assert "stopped" in output
    with pytest.raises(OSError):
        _get(f"{base}/healthz", timeout=1)
    leftovers = subprocess.run(["pgrep", "-f", f"--maildir {tmp_path}"], capture_output=True, text=True).stdout.split()
    assert leftovers == []


def test_production_api_serves_under_gunicorn(tmp_path):
    """`wellbeing api` is the production process: gunicorn, production settings."""
    from shared.migrate import upgrade

    database_url = f"sqlite:///{tmp_path / 'prod.db'}"
    upgrade(database_url)
    port = free_port()
    env = dict(os.environ, DATABASE_URL=database_url, BROKER_URL="memory://", SECRET_KEY="a-real-production-secret-0123456789", WELLBEING_DATA_DIR=str(tmp_path))
    env.pop("WELLBEING_ENV", None)
    proc = subprocess.Popen(
        [sys.executable, "-m", "services.cli", "api", "--port", str(port)], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True
    )
    try:
        deadline = time.monotonic() + 60
        while True:
            assert proc.poll() is None, proc.stdout.read()
            try:
                status, body = _get(f"http://127.0.0.1:{port}/readyz")
                break
            except OSError:
                assert time.monotonic() < deadline
                time.sleep(0.3)
        assert status == 200 and body["status"] == "ok"
        for _ in range(20):
            _get(f"http://127.0.0.1:{port}/healthz")
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
            metrics = response.read().decode()
        # Summed across gunicorn's worker processes through the multiprocess directory.
        line = next(x for x in metrics.splitlines() if x.startswith("wellbeing_http_request_duration_seconds_count") and 'endpoint="health.healthz"' in x)
        assert float(line.rsplit(" ", 1)[1]) >= 20
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        output, _ = proc.communicate(timeout=30)
    assert "gunicorn" in output.lower() and "Booting worker" in output
