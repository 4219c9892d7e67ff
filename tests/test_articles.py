"""Partner articles through the API: import (the example article round trip, markdown,
HTML, duplicates, bad files), sanitising, optimistic concurrency, workflow,
scheduled publishing, search, employee visibility and the signed employee page."""
from __future__ import annotations

import io
import re
from datetime import date, datetime, timedelta, timezone

import pytest

from shared.domain import articles
from shared.errors import InvalidInput
from shared.models import Article, ArticleStatus, Partner, Role

EXAMPLE = articles.EXAMPLE_ARTICLE.read_bytes()


def _import(client, tenant, *files):  # noqa: ANN001
    data = {"files": [(io.BytesIO(content), name) for name, content in files]}
    return client.post("/api/v1/articles/import", data=data, headers=tenant.headers, content_type="multipart/form-data")


def _create(client, tenant, **fields):  # noqa: ANN001
    body = {"title": "An article", "body": "Some text."} | fields
    response = client.post("/api/v1/articles", json=body, headers=tenant.headers)
    assert response.status_code == 201, response.get_json()
    return response.get_json()


def _act(client, tenant, article_id, action, **body):  # noqa: ANN001
    return client.post(f"/api/v1/articles/{article_id}/{action}", json=body, headers=tenant.headers)


def _publish(client, tenant, article_id):  # noqa: ANN001
    assert _act(client, tenant, article_id, "submit").status_code == 200
    response = _act(client, tenant, article_id, "publish")
    assert response.status_code == 200
    return response.get_json()


# ---------------------------------------------------------------- import


def test_example_article_round_trip(client, tenant):
    response = _import(client, tenant, ("partner-article-example.txt", EXAMPLE))
    assert response.status_code == 201
    [report] = response.get_json()["results"]

    assert report["duplicate"] is False
    assert report["title_proposed"] is True
    assert report["title"] == "Working your muscles through exercise can be a powerful antidepressant"
    assert report["summary"].startswith("Working your muscles through exercise, especially resistance training")
    assert report["summary"].endswith("improve mental health.") is False  # only the opening paragraphs
    assert "Even small amounts of physical activity" in report["summary"]
    assert "Synergy Health Ltd" in report["attribution"]
    assert report["partner"]["name"] == "Synergy Health Ltd" and report["partner"]["created"] is True
    assert report["bio_found"] is True
    assert report["sections"] == 5
    assert report["headings_proposed"] is True
    assert "The brain is designed for movement" in report["headings"]
    assert report["captions"] == ["a couple work out together"]
    assert report["dropped_boilerplate"] == ["Doing more for your wellbeing?", "It's good for you", "Learn more", "Leave a comment"]
    assert {"exercise", "mental health"} <= set(report["suggested_topics"])

    article = client.get(f"/api/v1/articles/{report['article_id']}", headers=tenant.headers).get_json()
    assert article["status"] == "draft"
    assert article["format"] == "html"
    assert article["partner"]["name"] == "Synergy Health Ltd"
    assert {"exercise", "mental health"} <= set(article["topics"])
    html = article["body_html"]
    assert html.count("<section>") == 5 and html.count("<h2>") == 5
    assert "<figure><figcaption>a couple work out together</figcaption></figure>" in html
    assert html.index("It is easy to take our muscles") < html.index("a couple work out together") < html.index("It is becoming increasingly")
    for gone in ("Learn more", "Leave a comment", "Doing more for your wellbeing", "It's good for you", "About the author", "written by our Wellbeing Partner", "Synergy Health is the brains"):
        assert gone not in html
        assert gone not in article["body_text"]
    assert "Working your muscles through exercise, especially" not in html  # the summary is not repeated in the body
    assert "\u00a0" not in article["body_text"]
    assert article["reading_minutes"] >= 5

    partner = client.get(f"/api/v1/partners/{report['partner']['id']}", headers=tenant.headers).get_json()
    assert partner["bio"].startswith("Synergy Health is the brains behind the GoodForYou platform")
    assert "organizational culture environment for best performance." in partner["bio"]
    assert "Leave a comment" not in partner["bio"]
    assert partner["article_count"] == 1


def test_duplicate_import_creates_nothing_new(client, tenant, db):
    first = _import(client, tenant, ("example.txt", EXAMPLE)).get_json()["results"][0]
    # The same content with other line endings and a BOM is still the same article.
    again = _import(client, tenant, ("copy.txt", b"\xef\xbb\xbf" + EXAMPLE.replace(b"\n", b"\r\n")))
    assert again.status_code == 200
    second = again.get_json()["results"][0]
    assert second["duplicate"] is True and second["article_id"] == first["article_id"]
    with db.session(tenant.org_id) as session:
        assert session.query(Article).count() == 1
        assert session.query(Partner).count() == 1


def test_partner_matched_case_insensitively_per_organisation(client, tenant, other_tenant):
    existing = client.post("/api/v1/partners", json={"name": "SYNERGY health ltd", "bio": "Our own words."}, headers=tenant.headers).get_json()
    report = _import(client, tenant, ("example.txt", EXAMPLE)).get_json()["results"][0]
    assert report["partner"] == {"id": existing["id"], "name": "SYNERGY health ltd", "created": False}
    # An existing bio is not overwritten by the import.
    assert client.get(f"/api/v1/partners/{existing['id']}", headers=tenant.headers).get_json()["bio"] == "Our own words."
    # Another organisation gets its own partner and its own article.
    other = _import(client, other_tenant, ("example.txt", EXAMPLE)).get_json()["results"][0]
    assert other["duplicate"] is False and other["partner"]["created"] is True and other["partner"]["id"] != existing["id"]


MARKDOWN = """# Sleep well, work well

A good night's sleep helps your mood, focus and stress levels.

Written by our wellbeing partner Restful Nights Co. Shared with permission.

## Why sleep matters

Sleep restores the brain. Poor sleep and insomnia raise stress.

![a bedroom at night](https://example.com/bed.jpg)

## Build a bedtime routine

- Keep a regular bedtime
- No screens an hour before sleep

[Learn more](https://example.com/more)

## About the author

Restful Nights Co. helps teams sleep better.
"""


def test_markdown_import(client, tenant):
    report = _import(client, tenant, ("sleep.md", MARKDOWN.encode())).get_json()["results"][0]
    assert report["title"] == "Sleep well, work well" and report["title_proposed"] is False
    assert report["summary"] == "A good night's sleep helps your mood, focus and stress levels."
    assert report["partner"]["name"] == "Restful Nights Co"
    assert report["bio_found"] is True
    assert report["headings"] == ["Why sleep matters", "Build a bedtime routine"]
    assert report["dropped_boilerplate"] == ["Learn more"]
    assert "sleep" in report["suggested_topics"]
    article = client.get(f"/api/v1/articles/{report['article_id']}", headers=tenant.headers).get_json()
    assert article["format"] == "markdown"
    assert "<h2>Why sleep matters</h2>" in article["body_html"]
    assert "<li>Keep a regular bedtime</li>" in article["body_html"]
    assert '<img src="https://example.com/bed.jpg" alt="a bedroom at night">' in article["body_html"]
    assert "Learn more" not in article["body_html"] and "helps teams sleep better" not in article["body_html"]


HTML_DOC = """<!DOCTYPE html><html><head><title>Ignored head title</title><style>body{display:none}</style></head>
<body><h1>Money worries at work</h1>
<p>Financial stress affects many employees.</p>
<p>This article was provided by our partner Clear Money Ltd.</p>
<h2>Start with a budget</h2>
<p onclick="alert(1)" style="display:none">A simple budget and some savings help with debt.</p>
<script>alert('xss')</script>
<figure><img src="javascript:alert(1)" alt="piggy bank"><figcaption>a piggy bank</figcaption></figure>
<p><a href="https://example.com/leave">Leave a comment</a></p>
<h3>About the author</h3><p>Clear Money Ltd runs money coaching.</p>
</body></html>"""


def test_html_import_is_sanitised(client, tenant):
    report = _import(client, tenant, ("money.html", HTML_DOC.encode())).get_json()["results"][0]
    assert report["title"] == "Money worries at work" and report["title_proposed"] is False
    assert report["summary"] == "Financial stress affects many employees."
    assert report["partner"]["name"] == "Clear Money Ltd"
    assert report["bio_found"] is True
    assert report["captions"] == ["a piggy bank"]
    assert report["dropped_boilerplate"] == ["Leave a comment"]
    assert "financial wellbeing" in report["suggested_topics"]
    html = client.get(f"/api/v1/articles/{report['article_id']}", headers=tenant.headers).get_json()["body_html"]
    assert "<h2>Start with a budget</h2>" in html
    assert "A simple budget" in html
    for bad in ("<script", "alert", "onclick", "style=", "javascript:", "display:none", "Leave a comment", "money coaching"):
        assert bad not in html


def test_oversized_file_is_413_naming_the_file(client, tenant, db):
    big = b"a" * (articles.MAX_IMPORT_BYTES + 1)
    response = _import(client, tenant, ("ok.txt", b"Fine.\n\nText."), ("huge.txt", big))
    assert response.status_code == 413
    assert response.mimetype == "application/problem+json"
    assert "huge.txt" in response.get_json()["detail"]
    with db.session(tenant.org_id) as session:
        assert session.query(Article).count() == 0  # nothing from the batch was imported


def test_wrong_extension_is_415(client, tenant):
    response = _import(client, tenant, ("article.pdf", b"%PDF-1.4"))
    assert response.status_code == 415
    assert "article.pdf" in response.get_json()["detail"]


def test_wrong_encoding_is_422_naming_the_file(client, tenant):
    response = _import(client, tenant, ("latin1.txt", "Caf\u00e9 culture and wellbeing.".encode("latin-1")))
    assert response.status_code == 422
    body = response.get_json()
    assert "latin1.txt" in body["detail"] and "UTF-8" in body["detail"]
    assert body["errors"][0]["field"] == "files.latin1.txt"


def test_utf8_with_bom_is_accepted(client, tenant):
    response = _import(client, tenant, ("bom.txt", "\ufeffCalm breathing\n\nBreathing slowly lowers stress.".encode("utf-8")))
    assert response.status_code == 201
    report = response.get_json()["results"][0]
    assert report["title"] == "Calm breathing" and report["title_proposed"] is False


def test_import_without_files_is_422(client, tenant):
    response = client.post("/api/v1/articles/import", data={}, headers=tenant.headers, content_type="multipart/form-data")
    assert response.status_code == 422


def test_cli_import(db, settings, tenant, tmp_path, monkeypatch):
    from click.testing import CliRunner

    from services.cli import main

    path = tmp_path / "example.txt"
    path.write_bytes(EXAMPLE)
    monkeypatch.setenv("DATABASE_URL", settings.database_url)
    monkeypatch.setenv("WELLBEING_ENV", "testing")
    monkeypatch.setenv("SECRET_KEY", settings.secret_key)
    runner = CliRunner()
    result = runner.invoke(main, ["articles", "import", "--org", str(tenant.org_id), str(path)])
    assert result.exit_code == 0, result.output
    assert "created article" in result.output and "partner: Synergy Health Ltd" in result.output
    again = runner.invoke(main, ["articles", "import", "--org", str(tenant.org_id), str(path)])
    assert again.exit_code == 0 and "duplicate of article" in again.output
    bad = tmp_path / "bad.txt"
    bad.write_bytes(b"\xff\xfe\x00bad")
    failed = runner.invoke(main, ["articles", "import", "--org", str(tenant.org_id), str(bad)])
    assert failed.exit_code != 0 and "bad.txt" in failed.output


def test_demo_organisation_is_seeded_with_the_example_once(db):
    from shared.domain import demo

    with db.session(unscoped=True) as session:
        org = demo.ensure_demo_organisation(session)
    with db.session(unscoped=True) as session:
        assert demo.ensure_demo_organisation(session).id == org.id
    with db.session(org.id) as session:
        [article] = session.query(Article).all()
        assert article.partner.name == "Synergy Health Ltd"
        assert {"exercise", "mental health"} <= {t.name for t in article.topics}


# ---------------------------------------------------------------- bodies and sanitising


@pytest.mark.parametrize(
    ("fmt", "body", "expected"),
    [
        ("text", "First line\nsecond line\n\n<b>not bold</b>", "<p>First line<br>second line</p>\n<p>&lt;b&gt;not bold&lt;/b&gt;</p>"),
        ("markdown", "Some **bold** and [a link](https://example.com).", '<p>Some <strong>bold</strong> and <a href="https://example.com" rel="noopener noreferrer nofollow">a link</a>.</p>'),
        ("markdown", "[x](javascript:alert(1)) <script>alert(1)</script>", "<p>[x](javascript:alert(1)) &lt;script&gt;alert(1)&lt;/script&gt;</p>"),
        ("html", '<p style="display:none" onmouseover="x()">Hi<iframe src="https://evil.example"></iframe><svg onload="x()"></svg></p>', "<p>Hi</p>"),
    ],
)
def test_body_formats_are_sanitised(client, tenant, fmt, body, expected):
    article = _create(client, tenant, format=fmt, body=body)
    assert article["body_html"] == expected
    assert article["body"] == body  # the source is kept as given
    assert article["format"] == fmt


def test_unknown_topic_and_partner_are_422(client, tenant, other_tenant):
    response = client.post("/api/v1/articles", json={"title": "T", "topics": ["astrology"]}, headers=tenant.headers)
    assert response.status_code == 422 and response.get_json()["errors"][0]["field"] == "topics"
    foreign = client.post("/api/v1/partners", json={"name": "Theirs"}, headers=other_tenant.headers).get_json()
    response = client.post("/api/v1/articles", json={"title": "T", "partner_id": foreign["id"]}, headers=tenant.headers)
    assert response.status_code == 422 and response.get_json()["errors"][0]["field"] == "partner_id"


def test_topics_vocabulary_is_seeded_and_editable(client, tenant):
    names = [t["name"] for t in client.get("/api/v1/topics", headers=tenant.headers).get_json()]
    assert {"exercise", "mental health", "sleep", "nutrition", "stress", "financial wellbeing", "social connection"} <= set(names)
    created = client.post("/api/v1/topics", json={"name": "Parenting", "keywords": ["parent", "children"]}, headers=tenant.headers)
    assert created.status_code == 201
    assert client.post("/api/v1/topics", json={"name": "parenting"}, headers=tenant.headers).status_code == 409
    article = _create(client, tenant, topics=["Parenting", "sleep"])
    assert article["topics"] == ["Parenting", "sleep"]
    assert client.delete(f"/api/v1/topics/{created.get_json()['id']}", headers=tenant.headers).status_code == 204
    assert client.get(f"/api/v1/articles/{article['id']}", headers=tenant.headers).get_json()["topics"] == ["sleep"]


def test_partner_crud_and_counts(client, tenant):
    created = client.post("/api/v1/partners", json={"name": "Move More", "website": "https://move.example", "contact": "hi@move.example"}, headers=tenant.headers)
    assert created.status_code == 201
    partner = created.get_json()
    assert partner["article_count"] == 0
    _create(client, tenant, partner_id=partner["id"])
    _create(client, tenant, partner_id=partner["id"])
    listed = client.get("/api/v1/partners", headers=tenant.headers).get_json()
    assert [(p["name"], p["article_count"]) for p in listed["items"]] == [("Move More", 2)]
    assert client.post("/api/v1/partners", json={"name": "move  more"}, headers=tenant.headers).status_code == 409
    assert client.post("/api/v1/partners", json={"name": "X", "website": "javascript:alert(1)"}, headers=tenant.headers).status_code == 422
    patched = client.patch(f"/api/v1/partners/{partner['id']}", json={"bio": "We help people move."}, headers=tenant.headers)
    assert patched.get_json()["bio"] == "We help people move."
    assert client.delete(f"/api/v1/partners/{partner['id']}", headers=tenant.headers).status_code == 204
    remaining = client.get("/api/v1/articles", headers=tenant.headers).get_json()["items"]
    assert len(remaining) == 2 and all(a["partner_id"] is None for a in remaining)


# ---------------------------------------------------------------- optimistic concurrency and revisions


def test_etag_if_match_and_revisions(client, tenant):
    article = _create(client, tenant, title="Version one")
    url = f"/api/v1/articles/{article['id']}"
    got = client.get(url, headers=tenant.headers)
    assert got.headers["ETag"] == '"1"'

    missing = client.patch(url, json={"title": "No precondition"}, headers=tenant.headers)
    assert missing.status_code == 428 and missing.mimetype == "application/problem+json"

    first = client.patch(url, json={"title": "Admin A's title"}, headers=tenant.headers | {"If-Match": '"1"'})
    assert first.status_code == 200 and first.headers["ETag"] == '"2"'
    # Admin B read version 1 too: their save is refused, not silently lost.
    stale = client.patch(url, json={"title": "Admin B's title"}, headers=tenant.headers | {"If-Match": '"1"'})
    assert stale.status_code == 412 and stale.mimetype == "application/problem+json"
    assert client.get(url, headers=tenant.headers).get_json()["title"] == "Admin A's title"

    body = client.patch(url, json={"body": "# Heading", "format": "markdown"}, headers=tenant.headers | {"If-Match": 'W/"2"'})
    assert body.status_code == 200 and body.get_json()["body_html"] == "<h2>Heading</h2>"  # the page's title is the only h1
    history = client.get(f"{url}/history", headers=tenant.headers).get_json()
    assert [r["version"] for r in history["revisions"]] == [3, 2, 1]
    assert [r["title"] for r in history["revisions"]] == ["Admin A's title", "Admin A's title", "Version one"]
    assert history["revisions"][0]["body"] == "# Heading" and history["revisions"][2]["body"] == "Some text."
    assert all(r["author_user_id"] == tenant.admin_id for r in history["revisions"])
    assert history["revisions"][1]["change"] == "updated: title"


def test_concurrent_flush_with_same_version_is_refused(db, tenant):
    """Two admins both pass the If-Match check on version 1; the version column stops the second write."""
    with db.session(tenant.org_id) as session:
        article_id = articles.create_article(session, None, {"title": "Race", "body": "x"}).id
    a, b = db.open(tenant.org_id), db.open(tenant.org_id)
    try:
        assert a.get(Article, article_id).version == 1
        assert b.get(Article, article_id).version == 1
        articles.update_article(a, None, article_id, {"title": "A"}, 1)
        a.commit()
        with pytest.raises(articles.PreconditionFailed):
            articles.update_article(b, None, article_id, {"title": "B"}, 1)
        b.rollback()
    finally:
        a.close()
        b.close()
    with db.session(tenant.org_id) as session:
        article = session.get(Article, article_id)
        assert (article.title, article.version) == ("A", 2)


# ---------------------------------------------------------------- workflow


def test_workflow_rules_and_who_when(client, tenant):
    article = _create(client, tenant)
    aid = article["id"]
    assert _act(client, tenant, aid, "publish").status_code == 409  # draft cannot skip review
    assert _act(client, tenant, aid, "archive").status_code == 409
    assert _act(client, tenant, aid, "submit", note="please check").get_json()["status"] == "review"
    assert _act(client, tenant, aid, "submit").status_code == 409
    assert _act(client, tenant, aid, "reject").get_json()["status"] == "draft"
    assert _act(client, tenant, aid, "submit").status_code == 200
    published = _act(client, tenant, aid, "publish")
    assert published.status_code == 200 and published.get_json()["status"] == "published"
    assert published.get_json()["published_at"] is not None
    conflict = _act(client, tenant, aid, "reject")
    assert conflict.status_code == 409 and conflict.mimetype == "application/problem+json"
    assert _act(client, tenant, aid, "archive").get_json()["status"] == "archived"
    assert _act(client, tenant, aid, "restore").get_json()["status"] == "draft"
    steps = client.get(f"/api/v1/articles/{aid}/history", headers=tenant.headers).get_json()["transitions"]
    assert [(s["from_status"], s["to_status"]) for s in steps] == [
        ("draft", "review"), ("review", "draft"), ("draft", "review"), ("review", "published"), ("published", "archived"), ("archived", "draft"),
    ]
    assert steps[0]["note"] == "please check"
    assert all(s["actor_user_id"] == tenant.admin_id and s["at"] for s in steps)


def test_transition_with_stale_if_match_is_412(client, tenant):
    aid = _create(client, tenant)["id"]
    assert client.post(f"/api/v1/articles/{aid}/submit", json={}, headers=tenant.headers | {"If-Match": '"7"'}).status_code == 412


def test_managers_cannot_touch_articles(client, tenant, make_user):
    manager = make_user(tenant, Role.MANAGER)
    assert client.get("/api/v1/articles", headers=manager.headers).status_code == 403
    assert _import(client, manager, ("example.txt", EXAMPLE)).status_code == 403


def test_scheduled_publishing_is_idempotent(client, tenant, db):
    aid = _create(client, tenant)["id"]
    _act(client, tenant, aid, "submit")
    when = datetime.now(timezone.utc) + timedelta(hours=1)
    scheduled = _act(client, tenant, aid, "publish", publish_at=when.isoformat())
    assert scheduled.status_code == 200
    assert scheduled.get_json()["status"] == "review" and scheduled.get_json()["publish_at"] is not None

    with db.session(tenant.org_id) as session:
        assert articles.publish_due(session) == []  # not due yet
    later = when + timedelta(minutes=1)
    with db.session(unscoped=True) as session:
        assert articles.orgs_with_due_articles(session, later) == [tenant.org_id]
    with db.session(tenant.org_id) as session:
        assert articles.publish_due(session, later) == [aid]
    with db.session(tenant.org_id) as session:
        assert articles.publish_due(session, later) == []  # a rerun publishes nothing twice
    article = client.get(f"/api/v1/articles/{aid}", headers=tenant.headers).get_json()
    assert article["status"] == "published"
    steps = client.get(f"/api/v1/articles/{aid}/history", headers=tenant.headers).get_json()["transitions"]
    assert steps[-1]["to_status"] == "published" and steps[-1]["actor_label"] == "system"


def test_publish_due_articles_task_runs_on_the_worker(client, tenant, db, celery_worker):
    from workers.celery_app import celery_app
    from workers.tasks.articles import publish_due_articles

    assert celery_app.conf.beat_schedule["publish-due-articles"]["task"] == publish_due_articles.name
    aid = _create(client, tenant)["id"]
    _act(client, tenant, aid, "submit")
    with db.session(tenant.org_id) as session:
        session.get(Article, aid).publish_at = datetime.now(timezone.utc) - timedelta(seconds=5)
    publish_due_articles.delay()
    deadline = datetime.now() + timedelta(seconds=20)
    status = None
    while datetime.now() < deadline:
        status = client.get(f"/api/v1/articles/{aid}", headers=tenant.headers).get_json()["status"]
        if status == "published":
            break
        import time

        time.sleep(0.2)
    assert status == "published"


# ---------------------------------------------------------------- search and what employees see


def test_search_ranking_filters_and_pagination(client, tenant):
    partner = client.post("/api/v1/partners", json={"name": "Sleep Co"}, headers=tenant.headers).get_json()
    body_only = _create(client, tenant, title="Evening habits", body="Some thoughts on insomnia among other things.")
    title_hit = _create(client, tenant, title="Beating insomnia", summary="Insomnia, explained.", body="Insomnia is common.", topics=["sleep"], partner_id=partner["id"])
    _create(client, tenant, title="Eat your greens", body="Vegetables and fruit.", topics=["nutrition"])

    found = client.get("/api/v1/articles?q=insomnia", headers=tenant.headers).get_json()
    assert [a["id"] for a in found["items"]] == [title_hit["id"], body_only["id"]]
    assert found["total"] == 2

    assert [a["id"] for a in client.get("/api/v1/articles?q=insomnia&topic=sleep", headers=tenant.headers).get_json()["items"]] == [title_hit["id"]]
    assert client.get(f"/api/v1/articles?partner_id={partner['id']}", headers=tenant.headers).get_json()["total"] == 1
    _publish(client, tenant, title_hit["id"])
    assert [a["id"] for a in client.get("/api/v1/articles?status=published", headers=tenant.headers).get_json()["items"]] == [title_hit["id"]]
    today = date.today().isoformat()
    assert client.get(f"/api/v1/articles?date_from={today}&date_to={today}", headers=tenant.headers).get_json()["total"] == 3
    assert client.get("/api/v1/articles?date_to=2000-01-01", headers=tenant.headers).get_json()["total"] == 0
    paged = client.get("/api/v1/articles?per_page=2&page=2", headers=tenant.headers).get_json()
    assert paged["total"] == 3 and paged["pages"] == 2 and len(paged["items"]) == 1
    # Stemming and user input that looks like query syntax
    assert client.get("/api/v1/articles?q=vegetable", headers=tenant.headers).get_json()["total"] == 1
    assert client.get("/api/v1/articles?q=%22%29%28*%20OR%20NEAR", headers=tenant.headers).status_code == 200
    # A query without a searchable word (punctuation, unassigned code points) finds nothing
    for q in ("%21%3F%20-", "%F1%9E%BF%B7%C2%9D"):
        answer = client.get(f"/api/v1/articles?q={q}", headers=tenant.headers)
        assert answer.status_code == 200 and answer.get_json()["total"] == 0, answer.get_json()


def test_search_never_crosses_tenants(client, tenant, other_tenant):
    _create(client, other_tenant, title="Globex insomnia guide")
    assert client.get("/api/v1/articles?q=insomnia", headers=tenant.headers).get_json()["total"] == 0
    assert client.get("/api/v1/articles?q=insomnia", headers=other_tenant.headers).get_json()["total"] == 1


def test_search_follows_edits(client, tenant):
    article = _create(client, tenant, title="Hydration basics", body="Drink water.")
    client.patch(f"/api/v1/articles/{article['id']}", json={"title": "Walking basics"}, headers=tenant.headers | {"If-Match": '"1"'})
    assert client.get("/api/v1/articles?q=hydration", headers=tenant.headers).get_json()["total"] == 0
    assert client.get("/api/v1/articles?q=walking", headers=tenant.headers).get_json()["total"] == 1
    client.delete(f"/api/v1/articles/{article['id']}", headers=tenant.headers)
    assert client.get("/api/v1/articles?q=walking", headers=tenant.headers).get_json()["total"] == 0


def insert_articles(db, org_id: int, count: int, word: str) -> None:  # noqa: ANN001
    """``count`` draft articles about ``word``, written straight to the table (the
    full-text triggers index them) so a broad search can be set up quickly."""
    start = datetime(2025, 1, 1, tzinfo=timezone.utc)
    rows = [
        {"org_id": org_id, "title": f"Note {n} on {word}", "summary": "", "source_format": "text", "body_source": word,
         "body_html": f"<p>{word}</p>", "body_text": word, "status": "draft", "version": 1, "updated_at": start + timedelta(minutes=n)}
        for n in range(count)
    ]
    with db.engine.begin() as connection:
        connection.execute(Article.__table__.insert(), rows)


def _dated_article(session, title: str, body: str, updated_at: datetime) -> int:  # noqa: ANN001
    article = articles.create_article(session, None, {"title": title, "body": body})
    article.updated_at = updated_at
    session.flush()
    return article.id


def test_broad_search_ranks_only_the_newest_matches(db, tenant):
    day = datetime(2026, 1, 1, tzinfo=timezone.utc)
    with db.session(tenant.org_id) as session:
        oldest_best = _dated_article(session, "Insomnia, insomnia", "Insomnia and more insomnia.", day)
        newer = [_dated_article(session, f"Evening {n}", "A word on insomnia.", day + timedelta(days=n)) for n in range(1, 4)]
        newest_best = _dated_article(session, "Insomnia explained", "Insomnia.", day + timedelta(days=4))
        _dated_article(session, "Eat your greens", "Vegetables.", day + timedelta(days=5))

    with db.session(tenant.org_id) as session:
        # Within the cap: every match, exact relevance order (the strongest match is the oldest).
        exact = articles.search_articles(session, "insomnia", cap=5)
        assert exact.total == 5 and exact.total_is_exact
        assert [a.id for a in exact.items][:2] == [oldest_best, newest_best]
        # Over the cap: only the 3 most recently updated matches, ranked among themselves.
        capped = articles.search_articles(session, "insomnia", cap=3)
        assert capped.total == 3 and not capped.total_is_exact and capped.pages == 1
        assert [a.id for a in capped.items] == [newest_best, newer[2], newer[1]]
        # Without a query the same rule, newest first.
        listed = articles.search_articles(session, None, cap=4)
        assert not listed.total_is_exact and [a.title for a in listed.items][0] == "Eat your greens" and len(listed.items) == 4


def test_windows_of_newest_articles_widen_until_they_hold_more_than_the_cap(db, tenant):
    # A library larger than the first window (4 x cap newest articles), so search
    # starts from a window of the newest articles instead of the whole library.
    cap = 2
    day = datetime(2026, 1, 1, tzinfo=timezone.utc)
    with db.session(tenant.org_id) as session:
        matching = {0: "Insomnia, insomnia", 1: "On insomnia", 2: "Insomnia explained", 35: "Evening notes"}
        ids = {
            n: _dated_article(session, matching.get(n, f"Greens {n}"), "Insomnia." if n in matching else "Vegetables.", day + timedelta(days=n))
            for n in range(40)
        }
        recent_matches = {n: _dated_article(session, "Evening walk", "A word on walking.", day + timedelta(days=40 + n)) for n in range(3)}

    with db.session(tenant.org_id) as session:
        # One match among the 8 newest and still one among the 36 newest: widened to
        # the whole library, where the 2 newest of 4 matches are ranked (title first).
        sparse = articles.search_articles(session, "insomnia", cap=cap)
        assert sparse.total == cap and not sparse.total_is_exact
        assert [a.id for a in sparse.items] == [ids[2], ids[35]]
        assert articles.search_articles(session, "insomnia", cap=4).total_is_exact
        # The first window holds more than the cap: its newest matches, ranked.
        dense = articles.search_articles(session, "walking", cap=cap)
        assert dense.total == cap and not dense.total_is_exact
        assert {a.id for a in dense.items} == {recent_matches[1], recent_matches[2]}
        # Pages are cut from the same ranked list; past the cap they are refused.
        assert [a.id for a in articles.search_articles(session, "insomnia", page=2, per_page=1, cap=cap).items] == [ids[35]]
        with pytest.raises(InvalidInput):
            articles.search_articles(session, "insomnia", page=3, per_page=1, cap=cap)
        # An exact list past its end is an empty page that still knows its total.
        past_end = articles.search_articles(session, "insomnia", page=9, per_page=1, cap=4)
        assert past_end.items == [] and past_end.total == 4 and past_end.total_is_exact


def test_pages_stop_at_the_cap(db, tenant):
    day = datetime(2026, 1, 1, tzinfo=timezone.utc)
    with db.session(tenant.org_id) as session:
        for n in range(5):
            _dated_article(session, f"Sleep note {n}", "Sleep.", day + timedelta(days=n))
    with db.session(tenant.org_id) as session:
        last = articles.search_articles(session, "sleep", page=2, per_page=2, cap=3)
        assert [a.title for a in last.items] == ["Sleep note 2"] and last.pages == 2
        with pytest.raises(InvalidInput) as refused:
            articles.search_articles(session, "sleep", page=3, per_page=2, cap=3)
        assert "page" in refused.value.errors
        # An exact result list past its end is just an empty page.
        assert articles.search_articles(session, "sleep", page=4, per_page=2, cap=5).items == []


def test_api_caps_broad_searches(client, db, tenant, other_tenant):
    cap = articles.SEARCH_RESULT_CAP
    insert_articles(db, tenant.org_id, cap + 1, "hydration")
    insert_articles(db, other_tenant.org_id, 3, "hydration")
    _create(client, tenant, title="Rare words", body="Hydration for marathon runners.")

    broad = client.get("/api/v1/articles?q=hydration&per_page=100", headers=tenant.headers).get_json()
    assert broad["total"] == cap and broad["total_is_exact"] is False and broad["pages"] == cap // 100
    assert len(broad["items"]) == 100
    last = client.get(f"/api/v1/articles?q=hydration&per_page=100&page={cap // 100}", headers=tenant.headers).get_json()
    assert len(last["items"]) == 100
    past = client.get(f"/api/v1/articles?q=hydration&per_page=100&page={cap // 100 + 1}", headers=tenant.headers)
    assert past.status_code == 422 and [e["field"] for e in past.get_json()["errors"]] == ["page"]
    assert client.get("/api/v1/articles", headers=tenant.headers).get_json()["total_is_exact"] is False

    narrow = client.get("/api/v1/articles?q=marathon", headers=tenant.headers).get_json()
    assert narrow["total"] == 1 and narrow["total_is_exact"] is True
    assert client.get("/api/v1/articles?q=hydration", headers=other_tenant.headers).get_json() | {"items": []} == {
        "items": [], "page": 1, "per_page": 20, "total": 3, "total_is_exact": True, "pages": 1
    }


def test_articles_for_employees_respects_status_and_review_by(client, tenant, db):
    fresh = _create(client, tenant, title="Fresh", topics=["sleep"])
    stale = _create(client, tenant, title="Stale", review_by="2020-01-01")
    due_today = _create(client, tenant, title="Due today", review_by=date.today().isoformat())
    _create(client, tenant, title="Draft only")
    for a in (fresh, stale, due_today):
        _publish(client, tenant, a["id"])
    with db.session(tenant.org_id) as session:
        titles = [a.title for a in articles.articles_for_employees(session)]
        assert sorted(titles) == ["Due today", "Fresh"]
        assert [a.title for a in articles.articles_for_employees(session, topics=["sleep"])] == ["Fresh"]
        assert [a.title for a in articles.articles_for_employees(session, today=date.today() + timedelta(days=1))] == ["Fresh"]
    # Re-approval: a new review_by date brings it back.
    current = client.get(f"/api/v1/articles/{stale['id']}", headers=tenant.headers)
    client.patch(f"/api/v1/articles/{stale['id']}", json={"review_by": "2099-01-01"}, headers=tenant.headers | {"If-Match": current.headers["ETag"]})
    with db.session(tenant.org_id) as session:
        assert "Stale" in [a.title for a in articles.articles_for_employees(session)]


def test_employee_page_shows_published_article_with_disclosure(client, tenant, settings):
    report = _import(client, tenant, ("example.txt", EXAMPLE)).get_json()["results"][0]
    aid = report["article_id"]
    assert client.get(f"/api/v1/articles/{aid}/link", headers=tenant.headers).status_code == 404  # not published yet
    token = articles.article_link_token(settings.secret_key, tenant.org_id, aid)
    assert client.get(f"/a/{token}").status_code == 404  # drafts never reach employees
    _publish(client, tenant, aid)
    url = client.get(f"/api/v1/articles/{aid}/link", headers=tenant.headers).get_json()["url"]
    assert url.startswith(settings.public_url + "/a/")
    page = client.get(url.removeprefix(settings.public_url))
    assert page.status_code == 200
    html = page.get_data(as_text=True)
    assert "Written by Synergy Health Ltd. Shared by Acme Ltd from a wellbeing partner." in html
    assert "a couple work out together" in html and "About Synergy Health Ltd" in html
    assert "script-src" not in page.headers["Content-Security-Policy"] and "default-src 'none'" in page.headers["Content-Security-Policy"]
    # Employee id travels in the link for later tracking; the page is the same.
    with_employee = articles.article_link_token(settings.secret_key, tenant.org_id, aid, employee_id=42)
    assert articles.read_article_link(settings.secret_key, with_employee).employee_id == 42
    assert client.get(f"/a/{with_employee}").status_code == 200


def test_employee_page_rejects_forged_and_foreign_links(client, tenant, other_tenant, settings):
    aid = _create(client, tenant)["id"]
    _publish(client, tenant, aid)
    token = articles.article_link_token(settings.secret_key, tenant.org_id, aid)
    assert client.get(f"/a/{token[:-2]}xx").status_code == 404
    assert client.get(f"/a/{articles.article_link_token('another-secret-key-0123456789', tenant.org_id, aid)}").status_code == 404
    # A link naming another organisation with this article's id finds nothing there.
    assert client.get(f"/a/{articles.article_link_token(settings.secret_key, other_tenant.org_id, aid)}").status_code == 404
    # Archived articles disappear from employee pages.
    _act(client, tenant, aid, "archive")
    assert client.get(f"/a/{token}").status_code == 404


def test_importer_recognises_attribution_wordings():
    from shared.domain.article_import import find_partner

    assert find_partner("It's written by our Wellbeing Partner Synergy Health Ltd and we've re-produced it") == "Synergy Health Ltd"
    assert find_partner("Written by Mind & Body Partners.") == "Mind & Body Partners"
    assert find_partner("This article was provided by our partner, Acme Health.") == "Acme Health"
    assert find_partner("Courtesy of The Sleep Council") == "The Sleep Council"
    assert find_partner("Brought to you by our wellness partner FitLife Inc.") == "FitLife Inc"
    assert find_partner("We wrote this ourselves.") is None
    assert re.match(r"^[a-f0-9]{64}$", articles.article_import.fingerprint("x"))
