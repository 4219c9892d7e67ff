"""What a digest shows besides articles: the employee's programs' upcoming sessions (in
their timezone and language), each article's partner disclosure, article images with
alt text (never a tracking pixel). Real database, real SMTP sink on loopback."""
from __future__ import annotations

from datetime import datetime, timedelta, timezone
from html.parser import HTMLParser

from shared.db import utcnow
from shared.domain import article_content, digests
from shared.domain import articles as article_domain
from shared.models import Article, Partner, SendState
from tests.digest_support import add_article, add_employees
from tests.test_programs import API

NOW = datetime(2026, 11, 23, 8, 0, tzinfo=timezone.utc)


def _program(client, tenant, name: str, employee_ids: list[int], sessions: list[dict]) -> int:  # noqa: ANN001
    program = client.post(f"{API}/programs", json={"name": name, "status": "open"}, headers=tenant.headers).get_json()
    if employee_ids:
        response = client.post(f"{API}/programs/{program['id']}/enrolments", json={"employee_ids": employee_ids}, headers=tenant.headers)
        assert response.status_code == 201
    for body in sessions:
        response = client.post(f"{API}/programs/{program['id']}/sessions", json={"duration_minutes": 45, **body}, headers=tenant.headers)
        assert response.status_code == 201, response.get_json()
    return program["id"]


def _preview(db, settings, org_id: int, employee_id: int, now: datetime = NOW) -> dict:  # noqa: ANN001
    with db.session(org_id) as session:
        return digests.preview(session, settings, employee_id, "2026-W48", now=now)


def test_upcoming_sessions_in_each_employees_timezone_and_language(db, settings, tenant, client):
    auckland, los_angeles, berlin, outsider = (
        add_employees(db, tenant.org_id, 1, prefix="akl", timezone="Pacific/Auckland")[0],
        add_employees(db, tenant.org_id, 1, prefix="la", timezone="America/Los_Angeles", locale="en-US")[0],
        add_employees(db, tenant.org_id, 1, prefix="ber", timezone="Europe/Berlin", locale="de-DE")[0],
        add_employees(db, tenant.org_id, 1, prefix="out")[0],
    )
    _program(client, tenant, "Strength", [auckland, los_angeles, berlin], [
        {"title": "Form and breathing", "starts_at": "2026-12-01T17:00:00Z", "location": "Gym, 2nd floor"},
        {"title": "Online check-in", "starts_at": "2026-11-24T07:30:00Z", "join_url": "https://meet.example.com/strength"},
        {"title": "Already over", "starts_at": "2026-11-20T17:00:00Z"},
        {"title": "Three weeks away", "starts_at": "2026-12-14T17:00:00Z"},
    ])
    _program(client, tenant, "Sleep", [], [{"title": "Not my program", "starts_at": "2026-11-25T17:00:00Z"}])

    nz = _preview(db, settings, tenant.org_id, auckland)
    us = _preview(db, settings, tenant.org_id, los_angeles)
    de = _preview(db, settings, tenant.org_id, berlin)
    for preview in (nz, us, de):
        for part in (preview["text"], preview["html"]):
            # The next 14 days only, earliest first; never a past session or another program's.
            assert part.index("Online check-in") < part.index("Form and breathing")
            assert "Already over" not in part and "Three weeks away" not in part and "Not my program" not in part
        assert "https://meet.example.com/strength" in preview["text"] and 'href="https://meet.example.com/strength"' in preview["html"]
        assert "Gym, 2nd floor" in preview["text"]
    # 17:00 UTC on 1 December is the next morning in Auckland, 09:00 in Los Angeles, 18:00 in Berlin.
    assert "Wednesday, 2 December 2026, 06:00 GMT+13:00" in nz["text"]  # en-GB (the organisation's default)
    assert "Tuesday, December 1, 2026, 9:00\u202fAM PST" in us["text"].replace("9:00 AM", "9:00\u202fAM")
    assert "Dienstag, 1. Dezember 2026, 18:00 MEZ" in de["text"]
    assert "Monday, November 23, 2026, 11:30\u202fPM PST" in us["text"].replace("11:30 PM", "11:30\u202fPM")
    assert "YOUR UPCOMING SESSIONS" in nz["text"] and "Your upcoming sessions" in nz["html"]
    outsider_preview = _preview(db, settings, tenant.org_id, outsider)
    assert "upcoming sessions" not in outsider_preview["text"].lower()
    assert outsider_preview["skip_reason"] == "nothing new"


def test_a_digest_with_only_upcoming_sessions_is_sent_not_skipped(db, settings, tenant, client, smtp_sink):
    attending, idle = add_employees(db, tenant.org_id, 2)
    soon = (utcnow() + timedelta(days=3)).replace(microsecond=0).isoformat()
    _program(client, tenant, "Strength", [attending], [{"title": "Kettlebell basics", "starts_at": soon}])
    with db.session(tenant.org_id) as session:
        _, batches = digests.start_run(session, None, "2026-W48")
    outcomes = [digests.process_batch(db, settings, tenant.org_id, batch, "test-worker") for batch in batches]
    assert (sum(o.sent for o in outcomes), sum(o.skipped for o in outcomes)) == (1, 1)
    (message,) = smtp_sink.wait_for(1)
    assert message["To"] == "e0@staff.example"
    assert "Kettlebell basics" in message.get_body(preferencelist=("plain",)).get_content()
    assert "Kettlebell basics" in message.get_body(preferencelist=("html",)).get_content()
    with db.session(tenant.org_id) as session:
        states = {s.employee_id: (s.state, s.skip_reason) for s in session.scalars(digests.sends_query())}
    assert states == {attending: (SendState.SENT, None), idle: (SendState.SKIPPED, "nothing new")}


def _with_partner(db, org_id: int, name: str) -> int:  # noqa: ANN001
    with db.session(org_id) as session:
        partner = Partner(name=name, name_key=name.lower())
        session.add(partner)
        session.flush()
        return partner.id


def test_each_article_shows_the_same_disclosure_as_the_article_page(db, settings, tenant, client):
    (employee_id,) = add_employees(db, tenant.org_id, 1)
    partnered = add_article(db, tenant.org_id, "Walk more", partner_id=_with_partner(db, tenant.org_id, "Synergy Health Ltd"))
    own = add_article(db, tenant.org_id, "Our own tips", age_days=1)
    preview = _preview(db, settings, tenant.org_id, employee_id, now=utcnow())
    written = "Written by Synergy Health Ltd. Shared by Acme Ltd from a wellbeing partner."
    for part in (preview["text"], preview["html"]):
        assert written in part and "Shared by Acme Ltd." in part
    # Each disclosure sits with its own article.
    text = preview["text"]
    assert text.index("Walk more") < text.index(written) < text.index("Our own tips")
    for article_id, wording in ((partnered, written), (own, "Shared by Acme Ltd.")):
        page = client.get(f"/a/{article_domain.article_link_token(settings.secret_key, tenant.org_id, article_id)}")
        assert page.status_code == 200 and wording in page.get_data(as_text=True)


class _Images(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.images: list[dict] = []

    def handle_starttag(self, tag, attrs):  # noqa: ANN001
        if tag == "img":
            self.images.append(dict(attrs))


def _images(html: str) -> list[dict]:
    parser = _Images()
    parser.feed(html)
    return parser.images


def test_article_images_carry_alt_text_and_no_pixel_is_added(db, settings, tenant):
    (employee_id,) = add_employees(db, tenant.org_id, 1)
    figures = {
        "Captioned": '<figure><img src="https://cdn.example.com/dawn.jpg"><figcaption>Runners at dawn</figcaption></figure><p>x</p>',
        "Described": '<p>x</p><img src="https://cdn.example.com/bike.jpg" alt="A commuter on a bike" width="600">',
        "Untitled image": '<img src="https://cdn.example.com/plain.jpg"><p>x</p>',
        "Pixel only": '<p>x</p><img src="https://track.example.com/p.gif" width="1" height="1">',
        "Caption only": "<figure><figcaption>a couple work out together</figcaption></figure><p>x</p>",
    }
    for title, body in figures.items():
        article_id = add_article(db, tenant.org_id, title)
        with db.session(tenant.org_id) as session:
            session.get(Article, article_id).body_html = body
    html = _preview(db, settings, tenant.org_id, employee_id, now=utcnow())["html"]
    images = {i["src"]: i["alt"] for i in _images(html)}
    assert images == {
        "https://cdn.example.com/dawn.jpg": "Runners at dawn",
        "https://cdn.example.com/bike.jpg": "A commuter on a bike",
        "https://cdn.example.com/plain.jpg": "Untitled image",  # no alt, no caption: the article's title
    }
    assert not any(src.startswith(settings.public_url) for src in images)  # nothing of ours loads on open


def test_lead_image_of_imported_bodies():
    assert article_content.lead_image(article_content.to_html("![Stretching at a desk](https://cdn.example.com/s.png)", "markdown")) \
        == article_content.LeadImage("https://cdn.example.com/s.png", "Stretching at a desk")
    assert article_content.lead_image(article_content.to_html("Just text.\n\nMore text.", "text")) is None
    dangerous = article_content.sanitise_html('<img src="javascript:alert(1)" alt="x"><img src="data:image/png;base64,AAAA" alt="y">')
    assert article_content.lead_image(dangerous) is None
    assert article_content.lead_image('<img src="/images/local.png" alt="means nothing in an email">') is None
