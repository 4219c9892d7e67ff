"""Scale-out proof (slow; PostgreSQL + Redis pass): two "hosts", each running a digest
worker and a report worker (separate ``wellbeing worker`` processes, each in a session
and process group of its own, with its own node name), share one PostgreSQL and one
Redis. Digest runs for several organisations and then their report builds are split
between the hosts, and nothing is lost or repeated: one message per employee in the
SMTP sink (by Message-ID), every batch and every build run exactly once.

Two variants: the hosts as process groups on loopback, and, where ``ip netns`` works
(root), as two network namespaces joined to this one by veth pairs, reaching
PostgreSQL, Redis and the SMTP sink through relays on the host side of each link, as
separate machines would. Each host hands its mail to the sink on a port of its own, so
the sink tells who sent what."""
from __future__ import annotations

import asyncio
import os
import subprocess
import threading
from collections import Counter
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from urllib.parse import urlsplit, urlunsplit

import pytest
from aiosmtpd.controller import Controller
from sqlalchemy import func, select
from sqlalchemy.engine import make_url

from shared.domain import digests
from shared.models import ActivityEvent, ReportCell, ReportDirtyWeek
from tests.conftest import TEST_DB, SmtpSink, free_port, make_settings
from tests.digest_support import add_article, add_employees, per_recipient
from tests.worker_support import Publisher, send_counts, shared_broker, start_worker, stop_group, wait_for, worker_env

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(TEST_DB != "postgresql", reason="scale-out needs a PostgreSQL and a Redis that several processes share (PostgreSQL pass)"),
]

ORGS = 6
EMPLOYEES_PER_ORG = 200
SEND_TASK = "workers.tasks.digests.send_digest_batch"
BUILD_TASK = "workers.tasks.reports.build_reports"


@dataclass
class PortTaggingSink(SmtpSink):
    """The conftest sink, listening on several ports and noting which one each message came in on."""

    arrived_on: list[int] = field(default_factory=list)

    async def handle_DATA(self, server, session, envelope):  # noqa: ANN001, N802
        with self.received:
            self.arrived_on.append(server.transport.get_extra_info("sockname")[1])
        return await super().handle_DATA(server, session, envelope)


class Relay:
    """TCP relays (asyncio, one thread): listen on an address of this namespace and
    forward to a loopback port, so another namespace reaches our loopback servers."""

    def __init__(self):
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.servers = []

    def forward(self, host: str, port: int, target_port: int) -> None:
        async def pipe(reader, writer):  # noqa: ANN001
            try:
                while data := await reader.read(65536):
                    writer.write(data)
                    await writer.drain()
            except (ConnectionError, OSError):
                pass
            finally:
                writer.close()

        async def handle(reader, writer):  # noqa: ANN001
            try:
                target_reader, target_writer = await asyncio.open_connection("127.0.0.1", target_port)
            except OSError:
                writer.close()
                return
            await asyncio.gather(pipe(reader, target_writer), pipe(target_reader, writer))

        server = asyncio.run_coroutine_threadsafe(asyncio.start_server(handle, host, port), self.loop).result(10)
        self.servers.append(server)

    def close(self) -> None:
        for server in self.servers:
            self.loop.call_soon_threadsafe(server.close)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)


def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, text=True)


@contextmanager
def network_namespace(index: int):
    """A namespace joined to this one by a veth pair: (namespace name, our side's address)."""
    tag = f"{os.getpid() % 100000}{'ab'[index]}"
    name, here, there = f"wb-scale-{tag}", f"wbh{tag}", f"wbn{tag}"
    subnet = f"10.{200 + (os.getpid() % 50)}.{index}"
    _ip("netns", "add", name)
    try:
        _ip("link", "add", here, "type", "veth", "peer", "name", there)
        _ip("link", "set", there, "netns", name)
        _ip("addr", "add", f"{subnet}.1/30", "dev", here)
        _ip("link", "set", here, "up")
        _ip("netns", "exec", name, "ip", "addr", "add", f"{subnet}.2/30", "dev", there)
        _ip("netns", "exec", name, "ip", "link", "set", there, "up")
        _ip("netns", "exec", name, "ip", "link", "set", "lo", "up")
        yield name, f"{subnet}.1"
    finally:
        subprocess.run(["ip", "link", "del", here], capture_output=True)
        subprocess.run(["ip", "netns", "del", name], capture_output=True)


def _netns_unavailable() -> str | None:
    if os.geteuid() != 0:
        return "ip netns needs root"
    probe = f"wb-probe-{os.getpid()}"
    result = subprocess.run(["ip", "netns", "add", probe], capture_output=True, text=True)
    if result.returncode != 0:
        return f"`ip netns add` does not work here: {result.stderr.strip() or result.returncode}"
    subprocess.run(["ip", "netns", "del", probe], capture_output=True)
    return None


@dataclass
class Host:
    name: str
    env: dict[str, str]
    smtp_port: int
    prefix: tuple[str, ...] = ()


def _with_address(url: str, host: str, port: int) -> str:
    if url.startswith("redis"):
        parts = urlsplit(url)
        return urlunsplit(parts._replace(netloc=f"{host}:{port}"))
    return make_url(url).set(host=host, port=port).render_as_string(hide_password=False)


def _prepare(db, make_tenant) -> tuple[list[int], list[tuple[int, list[int]]]]:  # noqa: ANN001
    orgs, batches = [], []
    for n in range(ORGS):
        org_id = make_tenant(f"Scale {n}").org_id
        add_employees(db, org_id, EMPLOYEES_PER_ORG, prefix=f"s{n}-", analytics_consent=True)
        add_article(db, org_id, "Breathe out slowly")
        with db.session(org_id) as session:
            _, org_batches = digests.start_run(session, None)
        orgs.append(org_id)
        batches += [(org_id, batch) for batch in org_batches]
    return orgs, batches


def _reports_built(db, orgs: list[int]) -> bool:  # noqa: ANN001
    for org_id in orgs:
        with db.session(org_id) as session:
            events = session.scalar(select(func.count()).select_from(ActivityEvent))
            cells = session.scalar(select(func.count()).select_from(ReportCell))
            dirty = session.scalar(select(func.count()).select_from(ReportDirtyWeek))
        if events != EMPLOYEES_PER_ORG or not cells or dirty:
            return False
    return True


def _task_totals(publisher: Publisher, nodes: list[str]) -> dict[str, Counter]:
    stats = publisher.app.control.inspect(destination=nodes, timeout=5).stats() or {}
    return {node: Counter(stats.get(node, {}).get("total", {})) for node in nodes}


@pytest.mark.prints_counts
@pytest.mark.parametrize("topology", ["process-groups", "network-namespaces"])
def test_digest_and_report_work_splits_across_two_hosts(topology, db, settings, make_tenant, tmp_path):
    if topology == "network-namespaces" and (reason := _netns_unavailable()):
        pytest.skip(reason)
    broker_url = shared_broker(settings, tmp_path)
    sink = PortTaggingSink(port=free_port())
    sink_ports = [sink.port, free_port()]
    publisher = Publisher(broker_url)
    workers: list[tuple[str, subprocess.Popen]] = []
    with ExitStack() as stack:
        for port in sink_ports:
            controller = Controller(sink, hostname="127.0.0.1", port=port)
            controller.start()
            stack.callback(controller.stop)
        stack.callback(publisher.close)

        hosts = []
        if topology == "network-namespaces":
            relay = Relay()
            stack.callback(relay.close)
            pg, redis = make_url(settings.database_url), urlsplit(broker_url)
            for index, name in enumerate(("host-a", "host-b")):
                namespace, address = stack.enter_context(network_namespace(index))
                for target in (pg.port, redis.port, sink_ports[index]):
                    relay.forward(address, target, target)
                run_settings = make_settings(_with_address(settings.database_url, address, pg.port),
                                             _with_address(broker_url, address, redis.port), sink_ports[index])
                hosts.append(Host(name, worker_env(run_settings, SMTP_URL=f"smtp://{address}:{sink_ports[index]}"),
                                  sink_ports[index], ("ip", "netns", "exec", namespace)))
        else:
            for index, name in enumerate(("host-a", "host-b")):
                hosts.append(Host(name, worker_env(make_settings(settings.database_url, broker_url, sink_ports[index])), sink_ports[index]))

        orgs, batches = _prepare(db, make_tenant)
        for host in hosts:
            for queue, concurrency in (("digests", "2"), ("reports", "1")):
                node = f"{queue}@{host.name}"
                process = start_worker(host.env, tmp_path / f"{node}.log", "--queues", queue, "--hostname", node,
                                       "--concurrency", concurrency, prefix=host.prefix)
                workers.append((node, process))
                stack.callback(stop_group, process)
        nodes = [node for node, _ in workers]
        wait_for(lambda: {n for reply in publisher.app.control.ping(timeout=1) for n in reply} >= set(nodes), 60, 0.5,
                 "all four workers to answer a ping")

        for org_id, batch in batches:
            publisher.send(SEND_TASK, org_id, batch)
        employees = ORGS * EMPLOYEES_PER_ORG
        wait_for(lambda: send_counts(db, orgs)["sent"] == employees, 180, 0.5, "every digest to be sent")
        for org_id in orgs:
            publisher.send(BUILD_TASK, org_id)
        wait_for(lambda: _reports_built(db, orgs), 120, 0.5, "every organisation's reports to be built")
        totals = _task_totals(publisher, nodes)
        alive = {node: process.poll() is None for node, process in workers}

    messages = sink.wait_for(employees, timeout=5)
    raw, distinct = per_recipient(messages)
    by_port = Counter(sink.arrived_on)
    mail_per_host = {host.name: by_port[host.smtp_port] for host in hosts}
    batches_per_node = {node: totals[node][SEND_TASK] for node in nodes if node.startswith("digests@")}
    builds_per_node = {node: totals[node][BUILD_TASK] for node in nodes if node.startswith("reports@")}
    print(f"\n[scale-out {topology}] organisations={ORGS} employees={employees} messages={len(messages)} "
          f"recipients={len(raw)} messages per host={mail_per_host} digest batches per worker={batches_per_node} "
          f"(published {len(batches)}) report builds per worker={builds_per_node} (published {len(orgs)})")
    assert all(alive.values()), alive
    assert send_counts(db, orgs) == {"queued": 0, "sending": 0, "sent": employees, "failed": 0, "skipped": 0}
    # Nothing lost or repeated: one message per employee, each with its own Message-ID...
    assert len(messages) == len(raw) == employees and set(distinct.values()) == {1}
    assert len({m["Message-ID"] for m in messages}) == employees
    # ...every batch and every build ran exactly once, somewhere...
    assert sum(batches_per_node.values()) == len(batches)
    assert sum(builds_per_node.values()) == len(orgs)
    # ...each worker ran only its own queue's tasks...
    assert all(set(totals[node]) == {SEND_TASK} for node in batches_per_node), totals
    assert all(set(totals[node]) == {BUILD_TASK} for node in builds_per_node), totals
    # ...and both hosts took a share of each kind of work.
    assert all(mail_per_host.values()) and sum(mail_per_host.values()) == employees, mail_per_host
    assert all(batches_per_node.values()), batches_per_node
    assert all(builds_per_node.values()), builds_per_node
