"""A small closed-loop HTTP load generator for the benchmarks (loopback only, bounded in time)."""
from __future__ import annotations

import http.client
import multiprocessing
import statistics
import time
from dataclasses import dataclass
from threading import Thread
from urllib.parse import urlsplit


@dataclass(frozen=True)
class LoadResult:
    path: str
    requests: int
    errors: int
    seconds: float
    latencies_ms: list[float]

    @property
    def rps(self) -> float:
        return self.requests / self.seconds

    def percentile(self, p: float) -> float:
        ordered = sorted(self.latencies_ms)
        return ordered[min(len(ordered) - 1, int(len(ordered) * p / 100))] if ordered else float("nan")

    def line(self) -> str:
        return (
            f"{self.path:<40} {self.rps:8.1f} req/s  p50 {self.percentile(50):7.2f} ms  "
            f"p99 {self.percentile(99):7.2f} ms  errors {self.errors}"
        )


def _worker(base: str, path: str, headers: dict, seconds: float, threads: int, queue) -> None:  # noqa: ANN001
    parts = urlsplit(base)
    results: list[tuple[int, int, list[float]]] = []

    def loop() -> None:
        conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=30)
        done = errors = 0
        lat: list[float] = []
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            start = time.perf_counter()
            try:
                conn.request("GET", path, headers=headers)
                response = conn.getresponse()
                response.read()
                if response.status != 200:
                    errors += 1
            except OSError:
                errors += 1
                conn.close()
                conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=30)
            lat.append((time.perf_counter() - start) * 1000)
            done += 1
        results.append((done, errors, lat))

    pool = [Thread(target=loop) for _ in range(threads)]
    for t in pool:
        t.start()
    for t in pool:
        t.join()
    queue.put((sum(r[0] for r in results), sum(r[1] for r in results), [x for r in results for x in r[2]]))


def run_load(base: str, path: str, headers: dict | None = None, seconds: float = 10, processes: int = 2, threads: int = 4) -> LoadResult:
    queue: multiprocessing.Queue = multiprocessing.Queue()
    procs = [multiprocessing.Process(target=_worker, args=(base, path, headers or {}, seconds, threads, queue)) for _ in range(processes)]
    started = time.monotonic()
    for p in procs:
        p.start()
    parts = [queue.get() for _ in procs]
    for p in procs:
        p.join()
    elapsed = time.monotonic() - started
    return LoadResult(path, sum(p[0] for p in parts), sum(p[1] for p in parts), elapsed, [x for p in parts for x in p[2]])


def median(values: list[float]) -> float:
    return statistics.median(values)
