"""API throughput: a database-backed list endpoint against GET /healthz, same gunicorn
server, same run. Prints req/s and p99 of both and the ratios.

Target (issue 3): the list endpoint at >= 40% of /healthz throughput, p99 < 5x /healthz's.
The two endpoints are loaded in alternating rounds, so that other work on the machine
weighs on both alike.

    .venv/bin/python bench/api.py                      # SQLite (embedded default)
    .venv/bin/python bench/api.py --database-url postgresql+psycopg://postgres@127.0.0.1:55432/postgres
"""
from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench._load import LoadResult, run_load  # noqa: E402
from bench._support import cpu_seconds, create_org_with_token, free_port, prepare_database  # noqa: E402
from shared.config import load_settings  # noqa: E402


def _process_tree(root: int) -> set[int]:
    parents: dict[int, int] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            parents[int(stat.parent.name)] = int(stat.read_text().rsplit(")", 1)[1].split()[1])
        except (FileNotFoundError, ProcessLookupError):
            continue
    tree = {root}
    while grown := {pid for pid, parent in parents.items() if parent in tree} - tree:
        tree |= grown
    return tree


class CpuMeter:
    """CPU time the server's processes and the database's backends spend per request:
    unlike requests/s it does not change with what else the machine runs."""

    def __init__(self, server_pid: int, database_url: str):
        self._server_pid = server_pid
        self._database = None
        if not database_url.startswith("sqlite"):
            from sqlalchemy import create_engine
            from sqlalchemy.pool import NullPool

            self._database = create_engine(database_url, poolclass=NullPool)
        # path -> [requests, server CPU seconds, database CPU seconds]
        self._totals: dict[str, list[float]] = {}

    def _backends(self) -> set[int]:
        if self._database is None:
            return set()
        from sqlalchemy import text

        with self._database.connect() as c:
            return set(c.execute(text("SELECT pid FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid()")).scalars())

    def measure(self, run) -> LoadResult:  # noqa: ANN001
        server, backends = _process_tree(self._server_pid), self._backends()
        server_before, backends_before = cpu_seconds(server), cpu_seconds(backends)
        result = run()
        backends |= self._backends()
        server_after, backends_after = cpu_seconds(server), cpu_seconds(backends)
        # Backends that opened during the run count from zero.
        totals = self._totals.setdefault(result.path, [0, 0.0, 0.0])
        totals[0] += result.requests
        totals[1] += server_after - server_before
        totals[2] += backends_after - backends_before
        return result

    def line(self, path: str) -> str:
        requests, server, database = self._totals[path]
        return f"{path:<40} CPU per request: server {server * 1000 / requests:5.2f} ms  database {database * 1000 / requests:5.2f} ms"

    def total_ms(self, path: str) -> float:
        requests, server, database = self._totals[path]
        return (server + database) * 1000 / requests


def seed(database_url: str, users: int) -> str:
    from shared.db import Database
    from shared.models import Role, User

    org_id, token = create_org_with_token(database_url, "Bench Ltd", "bench-admin@example.com")
    db = Database(database_url)
    with db.session(org_id) as session:
        session.add_all(User(email=f"user{i}@example.com", full_name=f"User {i}", role=Role.MANAGER) for i in range(users))
    if not db.is_sqlite:
        # Planner statistics, as autovacuum would have gathered them on a live system
        # long before anyone lists these users.
        with db.engine.begin() as connection:
            connection.exec_driver_sql("ANALYZE")
    db.dispose()
    return token


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--database-url", help="PostgreSQL admin URL (a fresh database is created); SQLite when omitted")
    parser.add_argument("--seconds", type=float, default=10, help="load time per endpoint, split over the rounds")
    parser.add_argument("--rounds", type=int, default=4, help="alternations of the two endpoints")
    parser.add_argument("--users", type=int, default=500)
    args = parser.parse_args()

    workdir = Path(tempfile.mkdtemp(prefix="wellbeing-bench-"))
    database_url, drop = prepare_database(args.database_url, workdir)
    token = seed(database_url, args.users)
    port = free_port()
    # The server runs with the product's defaults (WEB_CONCURRENCY, WEB_THREADS) unless
    # the caller's environment sets them.
    env = dict(
        os.environ,
        DATABASE_URL=database_url,
        BROKER_URL="memory://",
        WELLBEING_ENV="production",
        SECRET_KEY="bench-secret-key-0123456789abcdef",
        WELLBEING_DATA_DIR=str(workdir),
        LOG_LEVEL="WARNING",
    )
    settings = load_settings(env)
    server = subprocess.Popen([sys.executable, "-m", "services.cli", "api", "--port", str(port)], env=env, start_new_session=True)
    base = f"http://127.0.0.1:{port}"
    health_runs: list[LoadResult] = []
    list_runs: list[LoadResult] = []
    try:
        for _ in range(100):
            try:
                urllib.request.urlopen(f"{base}/healthz", timeout=1)
                break
            except OSError:
                time.sleep(0.2)
        headers = {"Authorization": f"Bearer {token}"}
        list_path = "/api/v1/users?per_page=20&page=3"
        body = json.loads(urllib.request.urlopen(urllib.request.Request(base + list_path, headers=headers)).read())
        assert body["total"] == args.users + 1, body
        run_load(base, "/healthz", seconds=2)  # warm-up
        run_load(base, list_path, headers, seconds=2)
        # Alternating short rounds: load from other processes on the machine then
        # falls on both endpoints alike instead of on whichever ran second.
        cpu = CpuMeter(server.pid, database_url)
        for _ in range(args.rounds):
            health_runs.append(cpu.measure(lambda: run_load(base, "/healthz", seconds=args.seconds / args.rounds)))
            list_runs.append(cpu.measure(lambda: run_load(base, list_path, headers, seconds=args.seconds / args.rounds)))
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(timeout=30)
        drop()
    health, listing = LoadResult.combine(health_runs), LoadResult.combine(list_runs)
    backend = "postgresql" if args.database_url else "sqlite"
    print(
        f"backend: {backend}, gunicorn {settings.web_concurrency} workers x {settings.web_threads} threads, "
        f"load: 2 processes x 4 threads, {args.seconds:.0f}s per endpoint in {args.rounds} alternating rounds"
    )
    print(health.line())
    print(listing.line())
    throughput = listing.rps / health.rps
    p99 = listing.percentile(99) / health.percentile(99)
    print(f"ratio list/healthz throughput: {throughput:.2f} (target >= 0.40)  p99: {p99:.2f}x (target < 5x)")
    print("per round list/healthz:", " ".join(f"{lr.rps / hr.rps:.2f}" for hr, lr in zip(health_runs, list_runs)))
    print(cpu.line(health.path))
    print(cpu.line(listing.path))
    print(f"ratio of CPU per request healthz/list: {cpu.total_ms(health.path) / cpu.total_ms(listing.path):.2f} (the throughput ratio on a machine where the server and database have the CPU)")
    if health.errors or listing.errors:
        sys.exit("errors during the run")


if __name__ == "__main__":
    main()
