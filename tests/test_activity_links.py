"""Activity the product records itself: following a digest link ("digest clicked") and
opening an article from the digest ("article read"), only with analytics consent, once per
digest / article however often the page is reloaded, and the links work the same without
consent."""
from __future__ import annotations

import re

from sqlalchemy import select

from shared.domain import activity, articles, digest_render
from shared.models import ActivityEvent, DigestItem, DigestSend, Employee, SendState
from tests.digest_support import add_article
from tests.test_reports import WEEK, add_employee


def _events(db, tenant) -> list[tuple[str, str | None, int | None]]:  # noqa: ANN001
    with db.session(tenant.org_id) as s:
        return sorted((e.kind, e.topic, e.article_id) for e in s.scalars(select(ActivityEvent)))


def _person(db, tenant, consent: bool, article_id: int | None = None) -> int:  # noqa: ANN001
    """An employee who was sent the digest of WEEK (holding ``article_id``)."""
    with db.session(tenant.org_id) as s:
        e = add_employee(s, consent=consent)
        send = DigestSend(employee_id=e.id, iso_week=WEEK, state=SendState.SENT)
        s.add(send)
        s.flush()
        if article_id is not None:
            s.add(DigestItem(send_id=send.id, employee_id=e.id, article_id=article_id, position=0))
        return e.id


def _pulse_url(db, tenant, settings, employee_id: int, score: int, preview: bool = False) -> str:  # noqa: ANN001
    with db.session(tenant.org_id) as s:
        return f"/pulse/{digest_render.pulse_token(settings.secret_key, s.get(Employee, employee_id), WEEK, preview)}/{score}"


def test_digest_link_records_one_click_per_digest_only_with_consent(client, db, tenant, settings):
    yes, no = _person(db, tenant, True), _person(db, tenant, False)
    for employee_id in (yes, no):
        for score in (4, 4, 2):  # a reload and a changed answer: still one click
            assert client.get(_pulse_url(db, tenant, settings, employee_id, score)).status_code == 200
    assert client.get(_pulse_url(db, tenant, settings, yes, 3, preview=True)).status_code == 200
    assert _events(db, tenant) == [("digest_clicked", None, None)]
    with db.session(tenant.org_id) as s:
        event = s.scalar(select(ActivityEvent))
        assert event.pseudonym == activity.pseudonym(s, yes)
        assert re.fullmatch(r"digest-[0-9a-f]{48}", event.event_id)  # no send or employee id in it


def test_article_page_records_a_read_and_the_digest_click_only_with_consent(client, db, tenant, settings):
    aid = add_article(db, tenant.org_id, "Sleep better", topics=("sleep", "stress"))
    yes, no = _person(db, tenant, True, aid), _person(db, tenant, False, aid)
    pages = {}
    for employee_id in (yes, no):
        url = f"/a/{articles.article_link_token(settings.secret_key, tenant.org_id, aid, employee_id)}"
        responses = [client.get(url) for _ in range(2)]  # reloading does not count twice
        assert [r.status_code for r in responses] == [200, 200]
        pages[employee_id] = responses[0].get_data(as_text=True)
    anonymous = client.get(f"/a/{articles.article_link_token(settings.secret_key, tenant.org_id, aid)}")
    assert pages[yes] == pages[no] == anonymous.get_data(as_text=True)  # the same page with or without consent
    assert _events(db, tenant) == [("article_read", "sleep", aid), ("digest_clicked", None, None)]
    # the pulse link of the same digest is the same click
    assert client.get(_pulse_url(db, tenant, settings, yes, 5)).status_code == 200
    assert _events(db, tenant) == [("article_read", "sleep", aid), ("digest_clicked", None, None)]
    with db.session(tenant.org_id) as s:
        assert s.scalars(select(ActivityEvent.iso_week).distinct()).all() == [activity.iso_week_of(activity.utcnow().date())]


def test_article_link_of_an_employee_who_is_gone_still_shows_the_page(client, db, tenant, settings):
    aid = add_article(db, tenant.org_id, "Breathe")
    url = f"/a/{articles.article_link_token(settings.secret_key, tenant.org_id, aid, 987654)}"
    assert client.get(url).status_code == 200
    assert _events(db, tenant) == []
