"""A small closed-loop HTTP load generator for the benchmarks (loopback only, bounded in time)."""
from __future__ import annotations

import http.client
import multiprocessing
import time
from collections.abc import Sequence
from dataclasses import dataclass
from threading import Thread
from urllib.parse import urlsplit


@dataclass(frozen=True)
class Call:
    """One request a load thread sends over and over."""

    path: str
    headers: dict
    method: str = "GET"
    body: bytes | None = None
    expect: int = 200


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

    @staticmethod
    def combine(results: Sequence[LoadResult]) -> LoadResult:
        """Several runs of one endpoint as one (requests over the summed run time)."""
        return LoadResult(
            results[0].path,
            sum(r.requests for r in results),
            sum(r.errors for r in results),
            sum(r.seconds for r in results),
            [x for r in results for x in r.latencies_ms],
        )


def _worker(base: str, call: Call, seconds: float, threads: int, queue) -> None:  # noqa: ANN001
    parts = urlsplit(base)
    results: list[tuple[int, int, list[float], list[str]]] = []

    def loop() -> None:
        conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=30)
        done = errors = 0
        lat: list[float] = []
        samples: list[str] = []
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            start = time.perf_counter()
            try:
                conn.request(call.method, call.path, body=call.body, headers=call.headers)
                response = conn.getresponse()
                payload = response.read()
                if response.status != call.expect:
                    errors += 1
                    if len(samples) < 3:
                        samples.append(f"{response.status} {payload[:300]!r}")
            except OSError as exc:
                errors += 1
                if len(samples) < 3:
                    samples.append(repr(exc))
                conn.close()
                conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=30)
            lat.append((time.perf_counter() - start) * 1000)
            done += 1
        conn.close()
        results.append((done, errors, lat, samples))

    pool = [Thread(target=loop) for _ in range(threads)]
    for t in pool:
        t.start()
    for t in pool:
        t.join()
    queue.put(
        (
            sum(r[0] for r in results),
            sum(r[1] for r in results),
            [x for r in results for x in r[2]],
            [s for r in results for s in r[3]],
        )
    )


class LoadRun:
    """Load on one endpoint, started in the background: ``processes`` x ``threads``
    keep-alive connections sending ``call`` back to back for ``seconds``."""

    def __init__(self, base: str, call: Call, seconds: float, processes: int = 2, threads: int = 4):
        self.call = call
        self._queue: multiprocessing.Queue = multiprocessing.Queue()
        self._procs = [
            multiprocessing.Process(target=_worker, args=(base, call, seconds, threads, self._queue)) for _ in range(processes)
        ]
        self._started = time.monotonic()
        for p in self._procs:
            p.start()

    def result(self) -> LoadResult:
        """Wait for the run to end; error samples (status and body) are in ``error_samples``."""
        parts = [self._queue.get() for _ in self._procs]
        for p in self._procs:
            p.join()
        elapsed = time.monotonic() - self._started
        self.error_samples = [s for p in parts for s in p[3]]
        return LoadResult(self.call.path, sum(p[0] for p in parts), sum(p[1] for p in parts), elapsed, [x for p in parts for x in p[2]])


def run_load(base: str, path: str, headers: dict | None = None, seconds: float = 10, processes: int = 2, threads: int = 4) -> LoadResult:
    return LoadRun(base, Call(path, headers or {}), seconds, processes, threads).result()
