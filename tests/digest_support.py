"""Helpers for the digest tests: employees and published articles straight into the
database (fast, so fault tests can create thousands), and SMTP sinks that misbehave."""
from __future__ import annotations

import threading
from collections import Counter
from dataclasses import dataclass, field
from datetime import timedelta
from email import message_from_bytes, policy

from aiosmtpd.controller import Controller
from sqlalchemy import insert, select

from shared.db import Database, utcnow
from shared.domain import articles as article_domain
from shared.models import Article, ArticleStatus, Employee, SourceFormat, Topic


def add_employees(db: Database, org_id: int, count: int, *, prefix: str = "e", timezone: str = "UTC", weekday: int = 0,
                  hour: int = 9, **extra) -> list[int]:  # noqa: ANN003
    now = utcnow()
    rows = [
        {
            "org_id": org_id, "external_id": f"{prefix}{i}", "email": f"{prefix}{i}@staff.example", "first_name": f"First{i}",
            "last_name": f"Last{i}", "timezone": timezone, "digest_weekday": weekday, "digest_hour": hour, "digest_topics": [],
            "created_at": now, "updated_at": now, **extra,
        }
        for i in range(count)
    ]
    with db.session(org_id) as session:
        for start in range(0, len(rows), 1000):
            session.execute(insert(Employee), rows[start:start + 1000])
        return list(session.scalars(select(Employee.id).where(Employee.external_id.like(f"{prefix}%")).order_by(Employee.id)))


def add_article(db: Database, org_id: int, title: str, topics: tuple[str, ...] = (), age_days: int = 0, **extra) -> int:  # noqa: ANN003
    with db.session(org_id) as session:
        article_domain.ensure_topics(session)
        found = []
        for name in topics:
            slug = article_domain.slugify_topic(name)
            topic = session.scalar(select(Topic).where(Topic.slug == slug))
            if topic is None:
                topic = Topic(name=name, slug=slug, keywords=[])
                session.add(topic)
                session.flush()
            found.append(topic)
        article = Article(title=title, summary=f"Summary of {title}.", source_format=SourceFormat.TEXT, body_source=title,
                          body_html=f"<p>{title}</p>", body_text=title, status=ArticleStatus.PUBLISHED,
                          published_at=utcnow() - timedelta(days=age_days), **extra)
        article.topics = found
        session.add(article)
        session.flush()
        return article.id


@dataclass
class FlakySink:
    """A real SMTP server on loopback that can answer temporary (4xx) or permanent (5xx)
    errors per recipient and attempt, and drop connections, before accepting."""

    port: int
    decide: object = None  # callable(recipient, attempt_number) -> None | "4xx ..." | "5xx ..." | "drop"
    messages: list = field(default_factory=list)
    attempts: Counter = field(default_factory=Counter)
    lock: threading.Condition = field(default_factory=threading.Condition)

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):  # noqa: ANN001, N802
        with self.lock:
            self.attempts[address] += 1
            attempt = self.attempts[address]
        answer = self.decide(address, attempt) if self.decide else None
        if answer == "drop":
            server.transport.close()
            return "421 closing"
        if answer:
            return answer
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server, session, envelope):  # noqa: ANN001, N802
        with self.lock:
            self.messages.append(message_from_bytes(envelope.content, policy=policy.default))
            self.lock.notify_all()
        return "250 OK"

    def wait_for(self, count: int, timeout: float = 30) -> list:
        with self.lock:
            self.lock.wait_for(lambda: len(self.messages) >= count, timeout=timeout)
            return list(self.messages)


def start_sink(sink: FlakySink) -> Controller:
    controller = Controller(sink, hostname="127.0.0.1", port=sink.port)
    controller.start()
    return controller


def per_recipient(messages: list) -> tuple[Counter, Counter]:
    """(messages per recipient, distinct Message-IDs per recipient)."""
    raw = Counter(m["To"] for m in messages)
    ids: dict[str, set] = {}
    for m in messages:
        ids.setdefault(m["To"], set()).add(m["Message-ID"])
    return raw, Counter({k: len(v) for k, v in ids.items()})


def use_broker(settings) -> None:  # noqa: ANN001
    """Point the in-process Celery app (publishing) at ``settings``' broker. Celery caches
    its connection and producer pools, so they are dropped when the URL changes."""
    from workers.celery_app import celery_app, configure

    changed = celery_app.conf.broker_url != settings.broker_url
    configure(settings)
    if changed:
        # Dropped, not closed: kombu keeps pools per URL and hands them out again.
        celery_app._pool = None
        celery_app.amqp._producer_pool = None
