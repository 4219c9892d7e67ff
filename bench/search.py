"""Benchmark: article full-text search against a plain indexed look-up by id.

    .venv/bin/python bench/search.py --database-url postgresql+psycopg://postgres@127.0.0.1:55432/postgres [--articles 50000] [--queries 400]
    .venv/bin/python bench/search.py                  # SQLite (FTS5), the embedded default

Creates (and afterwards drops) its own database (``bench._support.prepare_database``),
migrates it, and fills one organisation with ``--articles`` articles (plus a second
organisation with 10% as many, so the tenant guard has something to filter out).
Bodies are ~250 words drawn from a Zipf-distributed vocabulary of 6,000 words, so terms
range from very common to rare, like real text. Articles are dated over five years
(creation, publication and last update), so "most recent" means something. Then, in
one run and on the same connection pool:

  1. the product path: ``shared.domain.articles.search_articles(session, q, filters, 1, 20)``
     in a fresh tenant-scoped session per query: the ranked full-text query, the capped
     total, ORM loading of 20 articles with their partner and topics;
  2. the baseline: ``shared.domain.articles.get_article(session, id)`` for random ids in a
     fresh tenant-scoped session (primary-key look-up with partner and topics).

Queries are two-word searches over mid-frequency terms (each term in ~0.5-10% of
articles), the search an HR admin types; the same number of one-word searches of
common terms (in 20-60% of articles) is reported separately as the worst case.
Prints p50/p99 of each and the ratios.
"""
from __future__ import annotations

import argparse
import random
import statistics
import sys
import tempfile
import time
from collections import Counter
from datetime import datetime, timedelta, timezone
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from sqlalchemy import create_engine, insert, text  # noqa: E402

from bench._support import prepare_database  # noqa: E402

VOCABULARY_SIZE = 6000
BODY_WORDS = 250
HISTORY = timedelta(days=5 * 365)


def make_vocabulary(rng: random.Random) -> list[str]:
    syllables = ["ba", "ko", "ri", "mu", "te", "sa", "lo", "ne", "vi", "da", "pu", "ge", "fo", "zi", "ha", "ly", "qu", "or", "en", "st"]
    words: set[str] = set()
    while len(words) < VOCABULARY_SIZE:
        words.add("".join(rng.choice(syllables) for _ in range(rng.randint(2, 4))))
    return sorted(words)


def zipf_weights(n: int, s: float = 1.05) -> list[float]:
    return [1 / (rank**s) for rank in range(1, n + 1)]


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * p / 100))]


def summarise(label: str, values: list[float]) -> str:
    return f"{label:<44} n={len(values):<5} p50 {percentile(values, 50):7.2f} ms  p99 {percentile(values, 99):7.2f} ms  mean {statistics.fmean(values):7.2f} ms"


def fill(database, org_id: int, count: int, rng: random.Random, vocab: list[str], weights: list[float], document_frequency: Counter) -> None:  # noqa: ANN001
    """``count`` articles, oldest first, created evenly over ``HISTORY``; published ones
    a few days after creation, some edited later. Counts each word's documents."""
    from shared.domain import articles
    from shared.models import Article, ArticleStatus, SourceFormat, Topic
    from shared.models.articles import article_topics

    with database.session(org_id) as session:
        articles.ensure_topics(session)
        partner = articles.create_partner(session, None, {"name": f"Bench partner {org_id}"})
        topic_ids = [t.id for t in session.query(Topic).all()]
        partner_id = partner.id
    statuses = [ArticleStatus.PUBLISHED] * 6 + [ArticleStatus.DRAFT, ArticleStatus.REVIEW, ArticleStatus.ARCHIVED]
    start_time = datetime.now(timezone.utc) - HISTORY
    batch = 2000
    with database.engine.begin() as connection:
        for start in range(0, count, batch):
            rows = []
            for n in range(start, min(start + batch, count)):
                words = rng.choices(vocab, weights=weights, k=BODY_WORDS + 30)
                document_frequency.update(set(words))
                body = " ".join(words[:BODY_WORDS]) + "."
                status = rng.choice(statuses)
                created = start_time + HISTORY * n / count
                published = created + timedelta(days=rng.uniform(0, 10)) if status in (ArticleStatus.PUBLISHED, ArticleStatus.ARCHIVED) else None
                updated = max(created, published or created) + timedelta(days=rng.expovariate(1 / 30))
                rows.append(
                    {
                        "org_id": org_id,
                        "title": " ".join(words[BODY_WORDS : BODY_WORDS + 6]).capitalize(),
                        "summary": " ".join(words[BODY_WORDS + 6 :]).capitalize() + ".",
                        "source_format": SourceFormat.TEXT.value,
                        "body_source": body,
                        "body_html": f"<p>{body}</p>",
                        "body_text": body,
                        "reading_minutes": 2,
                        "partner_id": partner_id if rng.random() < 0.5 else None,
                        "status": status.value,
                        "version": 1,
                        "created_at": created,
                        "published_at": published,
                        "updated_at": updated,
                    }
                )
            ids = connection.execute(insert(Article.__table__).returning(Article.__table__.c.id), rows).scalars().all()
            connection.execute(
                insert(article_topics), [{"article_id": i, "topic_id": t} for i in ids for t in rng.sample(topic_ids, 2)]
            )


def analyse(database_url: str) -> None:
    engine = create_engine(database_url, isolation_level="AUTOCOMMIT")
    with engine.connect() as connection:
        if engine.dialect.name == "postgresql":
            connection.execute(text("VACUUM ANALYZE articles"))
            connection.execute(text("VACUUM ANALYZE article_topics"))
        else:
            connection.execute(text("ANALYZE"))
    engine.dispose()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--database-url", default=None, help="PostgreSQL admin URL (a database is created and dropped); default SQLite")
    parser.add_argument("--articles", type=int, default=50_000)
    parser.add_argument("--queries", type=int, default=400)
    args = parser.parse_args()

    from shared.db import Database
    from shared.domain import accounts, articles

    rng = random.Random(20261125)
    database_url, drop = prepare_database(args.database_url, Path(tempfile.mkdtemp(prefix="wellbeing-bench-search-")))
    database = None
    try:
        database = Database(database_url)
        with database.session(unscoped=True) as session:
            org_id = accounts.create_organisation(session, "Bench org", "bench@example.com", "bench-password-123").id
            other_id = accounts.create_organisation(session, "Other org", "other@example.com", "bench-password-123").id
        vocab = make_vocabulary(rng)
        weights = zipf_weights(len(vocab))
        document_frequency: Counter = Counter()
        others = max(1, args.articles // 10)
        started = time.perf_counter()
        fill(database, org_id, args.articles, rng, vocab, weights, document_frequency)
        fill(database, other_id, others, rng, vocab, weights, Counter())
        analyse(database_url)
        print(f"{database.engine.dialect.name}: loaded {args.articles} + {others} articles in {time.perf_counter() - started:.1f} s")

        share = {word: n / args.articles for word, n in document_frequency.items()}
        mid = sorted(w for w in vocab if 0.005 <= share.get(w, 0) <= 0.10)
        common = sorted(w for w in vocab if 0.20 <= share.get(w, 0) <= 0.60)
        two_word = [f"{rng.choice(mid)} {rng.choice(mid)}" for _ in range(args.queries)]
        one_word_common = [rng.choice(common) for _ in range(args.queries)] if common else []
        with database.session(org_id) as session:
            ids = [a for (a,) in session.execute(text("SELECT id FROM articles WHERE org_id = :o"), {"o": org_id})]

        def timed_search(q: str) -> float:
            t0 = time.perf_counter()
            with database.session(org_id) as session:
                page = articles.search_articles(session, q, articles.SearchFilters(), 1, 20)
                for item in page.items:
                    _ = item.partner, [t.name for t in item.topics]
            return (time.perf_counter() - t0) * 1000

        def timed_get(article_id: int) -> float:
            t0 = time.perf_counter()
            with database.session(org_id) as session:
                item = articles.get_article(session, article_id)
                _ = item.partner, [t.name for t in item.topics]
            return (time.perf_counter() - t0) * 1000

        for q in two_word[:30] + one_word_common[:30]:  # warm caches and the pool
            timed_search(q)
            timed_get(rng.choice(ids))
        search_ms, get_ms, common_ms = [], [], []
        for n, q in enumerate(two_word):  # interleaved, so all three see the same machine state
            get_ms.append(timed_get(rng.choice(ids)))
            search_ms.append(timed_search(q))
            if n < len(one_word_common):
                common_ms.append(timed_search(one_word_common[n]))

        print(summarise("id look-up (baseline)", get_ms))
        print(summarise("search, two mid-frequency terms (product)", search_ms))
        if common_ms:
            print(summarise("search, one common term (worst case)", common_ms))
        p99_search, p99_get = percentile(search_ms, 99), percentile(get_ms, 99)
        print(
            f"ratio search/id p50: {percentile(search_ms, 50) / percentile(get_ms, 50):.1f}x  "
            f"p99: {p99_search / p99_get:.1f}x (target <= 10x)  search p99 {p99_search:.1f} ms (target < 50 ms)"
        )
        if common_ms:
            p99_common = percentile(common_ms, 99)
            print(f"common-term search p99 {p99_common:.1f} ms ({p99_common / p99_get:.1f}x the id look-up p99; target < 50 ms and <= 10x)")
    finally:
        if database is not None:
            database.dispose()
        drop()


if __name__ == "__main__":
    main()
