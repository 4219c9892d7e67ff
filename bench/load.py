"""Load test (issue 8): the main API reads and the employee CSV import, driven at once
while a digest run is sending, against the production processes on loopback.

Starts, on this machine only: PostgreSQL (a scratch database on the given server), the
API under gunicorn (`wellbeing api`, the product's worker/thread defaults), one Celery
worker (`wellbeing worker`) on the given Redis database, and an SMTP sink. Sets up a
demo-sized organisation through the API (employees by CSV import, published articles,
programs), starts a digest run (POST /api/v1/digests/runs), and while it sends drives
for a bounded time, each with its own keep-alive connections:

    GET  /api/v1/articles?per_page=20             article list
    GET  /api/v1/articles?q=...                   article search
    GET  /api/v1/employees?per_page=20            employee list
    GET  /api/v1/programs                         program list
    GET  /api/v1/reports                          the report dashboard's data
    POST /api/v1/employees/import                 a 50-row HRIS re-import (text/csv)

Prints requests/s, p50, p99 and errors per endpoint and the digest run's progress,
and exits non-zero on any error (HTTP status other than the expected one, a failed
send, or a run that did not progress during the load).

    .venv/bin/python bench/load.py --database-url postgresql+psycopg://postgres@127.0.0.1:55432/postgres \\
        --broker-url redis://127.0.0.1:56379/1
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench._load import Call, LoadRun  # noqa: E402
from bench._support import create_org_with_token, free_port, prepare_database  # noqa: E402
from services.dev import _stop as stop_children  # noqa: E402
from services.dev import _wait_ready as wait_ready  # noqa: E402

DEPARTMENTS = ["Sales", "Engineering", "Operations", "Finance", "People"]
IMPORT_COLUMNS = "external_id,email,first_name,last_name,department,team,manager_external_id,timezone,digest_opt_in"


def employees_csv(rows: range) -> bytes:
    """HRIS rows: ten managers at the top, everyone else reporting to one of them."""
    lines = [IMPORT_COLUMNS]
    for i in rows:
        manager = "" if i < 10 else f"E{i % 10:05d}"
        department = DEPARTMENTS[i % len(DEPARTMENTS)]
        lines.append(f"E{i:05d},person{i}@staff.example,First{i},Last{i},{department},{department} {i % 3 + 1},{manager},Europe/London,true")
    return ("\n".join(lines) + "\n").encode()


class Api:
    def __init__(self, base: str, token: str):
        self.base = base
        self.headers = {"Authorization": f"Bearer {token}"}

    def call(self, method: str, path: str, body: bytes | dict | None = None, content_type: str = "application/json", expect: int = 200) -> Any:
        data = json.dumps(body).encode() if isinstance(body, dict) else body
        headers = dict(self.headers, **({"Content-Type": content_type} if data is not None else {}))
        request = urllib.request.Request(self.base + path, data=data, method=method, headers=headers)
        try:
            with urllib.request.urlopen(request, timeout=120) as response:
                status, payload = response.status, response.read()
        except urllib.error.HTTPError as error:
            status, payload = error.code, error.read()
        if status != expect:
            raise SystemExit(f"set-up failed: {method} {path} answered {status}: {payload[:500]!r}")
        return json.loads(payload) if payload else {}


def set_up_organisation(api: Api, employees: int, articles: int, programs: int) -> None:
    report = api.call("POST", "/api/v1/employees/import", employees_csv(range(employees)), "text/csv", expect=201)
    if report.get("errors"):
        raise SystemExit(f"set-up import reported errors: {report['errors'][:3]}")
    topics = [t["name"] for t in api.call("GET", "/api/v1/topics")]
    for k in range(articles):
        topic = topics[k % len(topics)]
        article = api.call("POST", "/api/v1/articles", {
            "title": f"Better {topic}, week {k}",
            "summary": f"Small steps for {topic} that fit a working day.",
            "body": f"Practical advice about {topic}. " * 40,
            "topics": [topic],
        }, expect=201)
        api.call("POST", f"/api/v1/articles/{article['id']}/submit", {})
        api.call("POST", f"/api/v1/articles/{article['id']}/publish", {})
    for k in range(programs):
        api.call("POST", "/api/v1/programs", {"name": f"Programme {k}", "topics": [topics[k % len(topics)]], "capacity": 50, "status": "open"}, expect=201)


def spawn(name: str, args: list[str], env: dict, workdir: Path) -> tuple[str, subprocess.Popen]:
    log = (workdir / f"{name}.log").open("ab")
    return name, subprocess.Popen([sys.executable, *args], env=env, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--database-url", default="postgresql+psycopg://postgres@127.0.0.1:55432/postgres",
                        help="PostgreSQL admin URL (a scratch database is created and dropped)")
    parser.add_argument("--broker-url", default="redis://127.0.0.1:56379/1", help="Redis database for Celery (flushed first)")
    parser.add_argument("--seconds", type=float, default=20, help="how long the load runs")
    parser.add_argument("--employees", type=int, default=1500)
    parser.add_argument("--articles", type=int, default=30)
    parser.add_argument("--programs", type=int, default=6)
    args = parser.parse_args()

    import redis

    redis.Redis.from_url(args.broker_url).flushdb()
    workdir = Path(tempfile.mkdtemp(prefix="wellbeing-load-"))
    database_url, drop = prepare_database(args.database_url, workdir)
    port, smtp_port = free_port(), free_port()
    base = f"http://127.0.0.1:{port}"
    env = dict(
        os.environ,
        DATABASE_URL=database_url,
        BROKER_URL=args.broker_url,
        SMTP_URL=f"smtp://127.0.0.1:{smtp_port}",
        PUBLIC_URL=base,
        WELLBEING_ENV="production",
        SECRET_KEY="load-test-secret-key-0123456789abcdef",
        WELLBEING_DATA_DIR=str(workdir),
        LOG_LEVEL="WARNING",
    )
    children: list[tuple[str, subprocess.Popen]] = []
    failures: list[str] = []
    try:
        _org_id, token = create_org_with_token(database_url, "Load Test Ltd", "hr@load.example")
        smtp = ["-m", "services.smtp_sink", "--host", "127.0.0.1", "--port", str(smtp_port), "--maildir", str(workdir / "mail")]
        children.append(spawn("smtp-sink", smtp, env, workdir))
        children.append(spawn("api", ["-m", "services.cli", "api", "--port", str(port)], env, workdir))
        worker = ["-m", "services.cli", "worker", "--concurrency=1", "--loglevel=WARNING", "-n", f"load{port}@%h"]
        children.append(spawn("worker", worker, env, workdir))
        wait_ready(base, children)
        api = Api(base, token)
        started = time.monotonic()
        set_up_organisation(api, args.employees, args.articles, args.programs)
        print(f"organisation: {args.employees} employees, {args.articles} published articles, {args.programs} programs "
              f"(set up through the API in {time.monotonic() - started:.1f}s)", flush=True)

        run = api.call("POST", "/api/v1/digests/runs", {}, expect=201)
        print(f"digest run {run['id']} started: {json.dumps(run.get('counts', run))}", flush=True)

        reimport = employees_csv(range(100, 150))
        calls = [
            Call("/api/v1/articles?per_page=20", api.headers),
            Call("/api/v1/articles?q=practical%20advice&per_page=20", api.headers),
            Call("/api/v1/employees?per_page=20", api.headers),
            Call("/api/v1/programs", api.headers),
            Call("/api/v1/reports", api.headers),
            Call("/api/v1/employees/import", dict(api.headers, **{"Content-Type": "text/csv"}), "POST", reimport, 201),
        ]
        runs = [LoadRun(base, call, args.seconds, processes=1, threads=1 if call.method == "POST" else 2) for call in calls]
        results = [(r, r.result()) for r in runs]
        during = api.call("GET", f"/api/v1/digests/runs/{run['id']}")

        print(f"\nload: {args.seconds:.0f}s, 2 keep-alive connections per read endpoint, 1 for the import, all at once")
        for load_run, result in results:
            method = load_run.call.method
            print(f"{method:<4} {result.line()}")
            if result.errors:
                failures.append(f"{method} {result.path}: {result.errors} errors, e.g. {load_run.error_samples[:2]}")
        total = sum(r.requests for _, r in results)
        print(f"all endpoints: {total / args.seconds:.1f} req/s")
        print(f"digest run {run['id']} at the end of the load: {json.dumps(during.get('counts', during))}")

        deadline = time.monotonic() + 180
        final = during
        while final.get("status") != "done" and time.monotonic() < deadline:
            time.sleep(1)
            final = api.call("GET", f"/api/v1/digests/runs/{run['id']}")
        print(f"digest run {run['id']} final: {json.dumps(final.get('counts', final))} ({final.get('status')})")
        counts = final.get("counts", {})
        if final.get("status") != "done":
            failures.append("the digest run did not finish within 180 s after the load")
        if counts.get("failed"):
            failures.append(f"{counts['failed']} digest sends failed")
        if during.get("status") == "done":
            failures.append("the digest run was over before the load ended: raise --employees or lower --seconds")
    finally:
        stop_children(children)
        drop()
    if failures:
        sys.exit("LOAD TEST FAILED:\n  " + "\n  ".join(failures) + f"\n(logs in {workdir})")
    print("no errors")


if __name__ == "__main__":
    main()
