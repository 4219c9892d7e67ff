"""Weekly digests against a real database, a real SMTP server on loopback and (where a
task is involved) a real Celery worker: due-check, exactly-once, re-checks before SMTP,
headers and parts, signed links, retries, failures, recovery, the HR admin API."""
from __future__ import annotations

import html
import re
import time
from datetime import date, datetime, timedelta, timezone

import pytest
from sqlalchemy import func, select

from shared.db import utcnow
from shared.domain import digest_render, digests, employees
from shared.models import DigestItem, DigestSend, Employee, EmployeeStatus, PulseResponse, Role, SendState, SuppressedAddress
from tests.conftest import TEST_DB, free_port
from tests.digest_support import FlakySink, add_article, add_employees, per_recipient, start_sink


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=timezone.utc)


def _sends(db, org_id: int) -> list[DigestSend]:  # noqa: ANN001
    with db.session(org_id) as session:
        return list(session.scalars(select(DigestSend).order_by(DigestSend.id)))


def _process(db, settings, org_id: int, batches: list[list[int]], worker: str = "test-worker", **kw):  # noqa: ANN001, ANN003
    outcomes = [digests.process_batch(db, settings, org_id, batch, worker, **kw) for batch in batches]
    return outcomes


def _start(db, org_id: int, week: str = "2026-W48") -> list[list[int]]:  # noqa: ANN001
    with db.session(org_id) as session:
        _, batches = digests.start_run(session, None, week)
    return batches


# ---- due-check -------------------------------------------------------------------------

def test_due_check_follows_each_timezone_and_creates_one_send_per_employee(db, tenant):
    auckland = add_employees(db, tenant.org_id, 2, prefix="akl", timezone="Pacific/Auckland")
    la = add_employees(db, tenant.org_id, 1, prefix="la", timezone="America/Los_Angeles")
    london = add_employees(db, tenant.org_id, 1, prefix="ldn", timezone="Europe/London")

    # Sunday 20:30 UTC: Monday 09:30 in Auckland only.
    with db.session(tenant.org_id) as session:
        first = digests.due_check(session, utc(2026, 11, 22, 20, 30))
    assert first.created == 2 and sum(len(b) for b in first.batches) == 2
    with db.session(tenant.org_id) as session:
        again = digests.due_check(session, utc(2026, 11, 22, 20, 35))
    assert again.created == 0 and again.batches == []
    assert {(s.employee_id, s.iso_week) for s in _sends(db, tenant.org_id)} == {(e, "2026-W48") for e in auckland}

    # Monday 17:05 UTC: 09:05 in Los Angeles, long past 09:00 in London.
    with db.session(tenant.org_id) as session:
        later = digests.due_check(session, utc(2026, 11, 23, 17, 5))
    assert later.created == 2
    rows = _sends(db, tenant.org_id)
    assert sorted(s.employee_id for s in rows) == sorted(auckland + la + london)
    assert all(s.iso_week == "2026-W48" and s.state == SendState.QUEUED for s in rows)
    # All scheduled sends of a week belong to one scheduled run.
    assert len({s.run_id for s in rows}) == 1


def test_due_check_on_a_dst_switch_week(db, tenant):
    # 2026-W13: London springs forward on Sunday 29 March; 01:00 local does not exist that day.
    ids = add_employees(db, tenant.org_id, 1, prefix="dst", timezone="Europe/London", weekday=6, hour=1)
    with db.session(tenant.org_id) as session:
        assert digests.due_check(session, utc(2026, 3, 29, 0, 59)).created == 0
    with db.session(tenant.org_id) as session:
        assert digests.due_check(session, utc(2026, 3, 29, 1, 0)).created == 1
    assert [(s.employee_id, s.iso_week) for s in _sends(db, tenant.org_id)] == [(ids[0], "2026-W13")]


def test_due_check_skips_ineligible_employees_and_respects_window_and_pause(db, tenant, make_tenant):
    add_employees(db, tenant.org_id, 1, prefix="ok")
    add_employees(db, tenant.org_id, 1, prefix="noconsent", digest_consent=False)
    add_employees(db, tenant.org_id, 1, prefix="left", status=EmployeeStatus.LEFT.value)
    add_employees(db, tenant.org_id, 1, prefix="paused", paused_until=date(2026, 12, 31))
    add_employees(db, tenant.org_id, 1, prefix="saturday", weekday=5, hour=10)
    with db.session(tenant.org_id) as session:
        row = digests.get_settings(session)
        row.send_weekdays = [0, 1, 2, 3, 4]
        row.window_start_hour, row.window_end_hour = 8, 18
    # Monday 09:30: "ok" for week 48, and "saturday"'s week-47 digest, which the window moved to Monday 08:00.
    with db.session(tenant.org_id) as session:
        assert digests.due_check(session, utc(2026, 11, 23, 9, 30)).created == 2
    # Saturday 10:30: the Saturday preference is outside the window: nothing.
    with db.session(tenant.org_id) as session:
        assert digests.due_check(session, utc(2026, 11, 28, 10, 30)).created == 0
    with db.session(tenant.org_id) as session:
        assert digests.due_check(session, utc(2026, 11, 30, 7, 59)).created == 0
    with db.session(tenant.org_id) as session:
        # Monday 08:00: "saturday" gets week 48's digest; "ok" is not due for 49 until 09:00.
        assert digests.due_check(session, utc(2026, 11, 30, 8, 0)).created == 1
    rows = _sends(db, tenant.org_id)
    with db.session(tenant.org_id) as session:
        names = {e.id: e.external_id for e in session.scalars(select(Employee))}
    assert sorted((names[s.employee_id], s.iso_week) for s in rows) == [("ok0", "2026-W48"), ("saturday0", "2026-W47"), ("saturday0", "2026-W48")]

    other = make_tenant()
    add_employees(db, other.org_id, 3, prefix="p")
    with db.session(other.org_id) as session:
        digests.set_paused(session, None, True)
    with db.session(other.org_id) as session:
        assert digests.due_check(session, utc(2026, 11, 23, 12)).created == 0
        with pytest.raises(digests.Conflict):
            digests.start_run(session, None, "2026-W48")
    assert other.org_id not in digests.orgs_for_due_check(db)


def test_manual_run_is_exactly_once_per_employee_and_week(db, tenant, other_tenant):
    add_employees(db, tenant.org_id, 5)
    add_employees(db, other_tenant.org_id, 4, prefix="o")
    first = _start(db, tenant.org_id)
    second = _start(db, tenant.org_id)
    assert sum(map(len, first)) == 5 and second == []
    assert len(_sends(db, tenant.org_id)) == 5
    assert len(_sends(db, other_tenant.org_id)) == 0  # never another organisation's employees
    assert len(_start(db, tenant.org_id, "2026-W49")[0]) == 5


# ---- sending ---------------------------------------------------------------------------

def test_batch_sends_multipart_digest_with_headers_and_records_items(db, settings, tenant, smtp_sink):
    ids = add_employees(db, tenant.org_id, 2)
    for n in range(7):
        add_article(db, tenant.org_id, f"Article {n}", age_days=n)
    batches = _start(db, tenant.org_id)
    (outcome,) = _process(db, settings, tenant.org_id, batches)
    assert (outcome.sent, outcome.failed, outcome.skipped) == (2, 0, 0)
    messages = smtp_sink.wait_for(2)
    assert len(messages) == 2
    rows = {s.employee_id: s for s in _sends(db, tenant.org_id)}
    message = next(m for m in messages if m["To"] == "e0@staff.example")
    send = rows[ids[0]]
    assert send.state == SendState.SENT and send.sent_at is not None and send.attempts == 1
    assert message["Message-ID"] == f"<digest-{send.id}-2026-W48@test.example>" == send.message_id
    assert message["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    unsubscribe = message["List-Unsubscribe"]
    assert re.match(r"^<http://wellbeing\.test/u/[^>]+>, <mailto:unsubscribe\+[0-9a-z-]+@test\.example\?subject=unsubscribe>$", unsubscribe)
    text = message.get_body(preferencelist=("plain",)).get_content()
    html = message.get_body(preferencelist=("html",)).get_content()
    assert "Hi First0" in text and "Article 0" in text and "Article 5" not in text  # newest five
    assert "How are you this week?" in text.replace("HOW ARE YOU THIS WEEK?", "How are you this week?")
    assert "<style" not in html and 'style="' in html  # CSS inlined for mail clients
    assert "Acme Ltd" in html and "23 November 2026" in html
    assert "/pulse/" in html and "/u/" in html and "/p/" in html
    with db.session(tenant.org_id) as session:
        assert session.scalar(select(func.count()).select_from(DigestItem).where(DigestItem.employee_id == ids[0])) == 5


def test_parts_go_7bit_when_ascii_and_quoted_printable_otherwise_and_read_the_same(db, settings, tenant, smtp_sink):
    add_employees(db, tenant.org_id, 1, prefix="ascii")
    add_employees(db, tenant.org_id, 1, prefix="accent", first_name="Zoë")
    add_article(db, tenant.org_id, "Sleep, a primer")
    _process(db, settings, tenant.org_id, _start(db, tenant.org_id))
    messages = {m["To"]: m for m in smtp_sink.wait_for(2)}

    def parts(message) -> dict:  # noqa: ANN001
        return {p.get_content_subtype(): (p["Content-Transfer-Encoding"], p.get_content().replace("\r\n", "\n"))
                for p in message.walk() if p.get_content_maintype() == "text"}

    ascii_only, accented = parts(messages["ascii0@staff.example"]), parts(messages["accent0@staff.example"])
    assert ascii_only["plain"][0] == ascii_only["html"][0] == "7bit" and "Hi First0," in ascii_only["plain"][1]
    # Non-ASCII text: quoted-printable, read back as the characters.
    assert accented["plain"][0] == "quoted-printable" and "Hi Zoë," in accented["plain"][1]
    # HTML: made ASCII with character references (the pulse links each end their own line), so 7bit.
    assert accented["html"][0] == "7bit" and accented["html"][1].isascii() and "Hi Zo&#235;," in accented["html"][1]
    assert "preferences</a> &#183;" in accented["html"][1] and "preferences</a> ·" in html.unescape(accented["html"][1])
    assert max(len(line) for line in accented["html"][1].split("\n")) <= 998
    # A line over 998 characters (RFC 5322's limit) is not 7bit: quoted-printable wraps it.
    rendered = digest_render.RenderedDigest("Subject", "<p>" + "long " * 250 + "</p>", "short", [1])
    raw = digest_render.build_raw(settings, "a@staff.example", rendered, "<m@test.example>")
    assert b"Content-Transfer-Encoding: quoted-printable" in raw and b"Content-Transfer-Encoding: 7bit" in raw
    assert max(len(line) for line in raw.split(b"\r\n")) <= 998


def test_digests_of_one_shape_each_carry_their_own_name_and_links_escaped_in_html(db, settings, tenant, smtp_sink):
    # Same articles and language: one rendered shape, the names and signed links filled in per message.
    ids = add_employees(db, tenant.org_id, 1, prefix="amp", first_name="Ann & <Bo>")
    ids += add_employees(db, tenant.org_id, 1, prefix="plain", first_name="Cy", analytics_consent=True)
    add_article(db, tenant.org_id, "Sleep & rest <basics>")
    _process(db, settings, tenant.org_id, _start(db, tenant.org_id))
    messages = {m["To"]: m for m in smtp_sink.wait_for(2)}
    for address, employee_id, name in (("amp0@staff.example", ids[0], "Ann & <Bo>"), ("plain0@staff.example", ids[1], "Cy")):
        message = messages[address]
        text = message.get_body(preferencelist=("plain",)).get_content()
        body = message.get_body(preferencelist=("html",)).get_content()
        assert f"Hi {name}," in text and f"Hi {html.escape(name, quote=True)}," in body
        assert "Sleep & rest <basics>" in text and "Sleep &amp; rest &lt;basics&gt;" in body
        for part in (text, body):
            (unsubscribe,) = set(re.findall(r"http://wellbeing\.test/u/([\w.-]+)", part))
            assert f"/u/{unsubscribe}>" in message["List-Unsubscribe"]
            assert digest_render.read_unsubscribe_token(settings.secret_key, unsubscribe).employee_id == employee_id
            (pulse,) = set(re.findall(r"http://wellbeing\.test/pulse/([\w.-]+)/\d", part))
            assert digest_render.read_pulse_token(settings.secret_key, pulse, 3).employee_id == employee_id
            (preferences,) = set(re.findall(r"http://wellbeing\.test/p/([\w.-]+)", part))
            assert employees.read_preference_token(settings.secret_key, preferences)[1] == employee_id


def test_css_inlined_once_at_load_styles_every_element_like_inlining_each_message(db, settings, tenant, monkeypatch):
    (employee_id,) = add_employees(db, tenant.org_id, 1)
    for n in range(3):
        add_article(db, tenant.org_id, f"Article {n}", age_days=n)
    template, inline_per_message = digest_render._html_template()
    assert not inline_per_message and "<style" not in template.render({})

    def styled(html: str) -> list[tuple[str, str]]:
        return re.findall(r'<(\w+)[^>]*?style="([^"]*)"', html)

    with db.session(tenant.org_id) as session:
        at_load = digests.preview(session, settings, employee_id, "2026-W48")["html"]
        environment = digest_render._environment()
        monkeypatch.setattr(digest_render, "_html_template", lambda: (environment.get_template("digest.html"), True))
        per_message = digests.preview(session, settings, employee_id, "2026-W48")["html"]
    assert styled(at_load) == styled(per_message)
    assert sum(1 for tag, _ in styled(at_load) if tag == "a") == 3 + 5 + 2  # articles, pulse, footer
    assert re.sub(r"<[^>]+>|\s+", " ", at_load).split() == re.sub(r"<[^>]+>|\s+", " ", per_message).split()


def test_next_week_never_repeats_an_article_and_empty_digest_is_skipped(db, settings, tenant, smtp_sink):
    add_employees(db, tenant.org_id, 1)
    for n in range(6):
        add_article(db, tenant.org_id, f"Article {n}", age_days=n)
    _process(db, settings, tenant.org_id, _start(db, tenant.org_id, "2026-W48"))
    _process(db, settings, tenant.org_id, _start(db, tenant.org_id, "2026-W49"))
    _process(db, settings, tenant.org_id, _start(db, tenant.org_id, "2026-W50"))
    messages = smtp_sink.wait_for(2)
    time.sleep(0.2)
    assert len(smtp_sink.messages) == 2
    second = messages[1].get_body(preferencelist=("plain",)).get_content()
    assert "Article 5" in second and "Article 0" not in second
    rows = _sends(db, tenant.org_id)
    assert [(r.iso_week, r.state, r.skip_reason) for r in rows] == [
        ("2026-W48", SendState.SENT, None), ("2026-W49", SendState.SENT, None), ("2026-W50", SendState.SKIPPED, "nothing new")]


def test_topics_and_programs_come_first(db, settings, tenant, client):
    (employee_id,) = add_employees(db, tenant.org_id, 1, digest_topics=["Sleep"])
    add_article(db, tenant.org_id, "Newest on nutrition", topics=("Nutrition",), age_days=0)
    add_article(db, tenant.org_id, "Old sleep article", topics=("Sleep",), age_days=30)
    program = client.post("/api/v1/programs", json={"name": "Strength", "status": "open", "topics": ["Exercise"]}, headers=tenant.headers)
    assert program.status_code == 201, program.get_json()
    add_article(db, tenant.org_id, "Old exercise article", topics=("Exercise",), age_days=20)
    enrol = client.post(f"/api/v1/programs/{program.get_json()['id']}/enrolments", json={"employee_id": employee_id}, headers=tenant.headers)
    assert enrol.status_code == 201
    preview = client.get(f"/api/v1/digests/preview?employee_id={employee_id}&week=2026-W48", headers=tenant.headers).get_json()
    text = preview["text"]
    assert text.index("Old exercise article") < text.index("Newest on nutrition")
    assert text.index("Old sleep article") < text.index("Newest on nutrition")
    assert "YOUR PROGRAMS" in text and "Strength" in text


def test_running_a_batch_twice_sends_once(db, settings, tenant, smtp_sink):
    add_employees(db, tenant.org_id, 3)
    add_article(db, tenant.org_id, "Something")
    batches = _start(db, tenant.org_id)
    _process(db, settings, tenant.org_id, batches, worker="w1")
    _process(db, settings, tenant.org_id, batches, worker="w2")
    smtp_sink.wait_for(3)
    time.sleep(0.3)
    raw, distinct = per_recipient(smtp_sink.messages)
    assert set(raw.values()) == {1} and len(raw) == 3


def test_consent_withdrawal_and_unsubscribe_between_enqueue_and_send(db, settings, tenant, client, smtp_sink):
    withdrawn, unsubscribed, left, stays = add_employees(db, tenant.org_id, 4)
    add_article(db, tenant.org_id, "Something")
    batches = _start(db, tenant.org_id)
    assert client.patch(f"/api/v1/employees/{withdrawn}", json={"digest_consent": False}, headers=tenant.headers).status_code == 200
    assert client.patch(f"/api/v1/employees/{left}", json={"status": "left"}, headers=tenant.headers).status_code == 200
    with db.session(tenant.org_id) as session:
        token = digest_render.unsubscribe_token(settings.secret_key, session.get(Employee, unsubscribed))
    assert client.post(f"/u/{token}", data={"List-Unsubscribe": "One-Click"}).status_code == 200
    (outcome,) = _process(db, settings, tenant.org_id, batches)
    assert (outcome.sent, outcome.skipped) == (1, 3)
    smtp_sink.wait_for(1)
    time.sleep(0.2)
    assert [m["To"] for m in smtp_sink.messages] == ["e3@staff.example"]
    reasons = {s.employee_id: s.skip_reason for s in _sends(db, tenant.org_id)}
    assert reasons == {withdrawn: "no digest consent", unsubscribed: "no digest consent", left: "employee left", stays: None}


def test_rfc8058_one_click_post_and_confirm_page(db, settings, tenant, client):
    (employee_id,) = add_employees(db, tenant.org_id, 1)
    with db.session(tenant.org_id) as session:
        token = digest_render.unsubscribe_token(settings.secret_key, session.get(Employee, employee_id))
    page = client.get(f"/u/{token}")
    assert page.status_code == 200 and "Unsubscribe" in page.get_data(as_text=True)
    with db.session(tenant.org_id) as session:
        assert session.get(Employee, employee_id).digest_consent is True  # a GET changes nothing
    # What a mail client sends (RFC 8058): a POST with this body, no cookie, no CSRF token.
    response = client.post(f"/u/{token}", data="List-Unsubscribe=One-Click", content_type="application/x-www-form-urlencoded")
    assert response.status_code == 200 and "unsubscribed" in response.get_data(as_text=True)
    with db.session(tenant.org_id) as session:
        employee = session.get(Employee, employee_id)
        assert employee.digest_consent is False
        assert any(c.kind.value == "digest_emails" and not c.granted and c.source.value == "employee_link"
                   for c in employees.consents_of(session, employee_id))
    assert client.post(f"/u/{token[:-2]}xx", data="List-Unsubscribe=One-Click").status_code == 404


def test_signed_links_are_tamper_proof_and_pulse_needs_analytics_consent(db, settings, tenant, client):
    consenting, private = add_employees(db, tenant.org_id, 2)
    with db.session(tenant.org_id) as session:
        session.get(Employee, consenting).analytics_consent = True
    with db.session(tenant.org_id) as session:
        a, b = session.get(Employee, consenting), session.get(Employee, private)
        token_a = digest_render.pulse_token(settings.secret_key, a, "2026-W48")
        token_b = digest_render.pulse_token(settings.secret_key, b, "2026-W48")
        preview_a = digest_render.pulse_token(settings.secret_key, a, "2026-W48", preview=True)
        # A link sent before the score moved from the signed payload to the path.
        earlier_a = digest_render._sign(settings.secret_key, digest_render.PULSE_PURPOSE, a, False, w="2026-W47", s=3)
    # Changing the week or the employee (or anything) in the payload breaks the signature.
    payload, rest = token_a.split(".", 1)
    import base64
    import json

    decoded = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    decoded["w"] = "2026-W49"
    forged = base64.urlsafe_b64encode(json.dumps(decoded, separators=(",", ":")).encode()).decode().rstrip("=") + "." + rest
    assert client.get(f"/pulse/{forged}/4").status_code == 404
    assert client.get(f"/pulse/{token_a[:-3]}abc/4").status_code == 404
    # The score is one of the five answers, and an earlier link's signed score cannot be changed.
    assert client.get(f"/pulse/{token_a}/6").status_code == 404
    assert client.get(f"/pulse/{token_a}").status_code == 404
    assert client.get(f"/pulse/{earlier_a}/5").status_code == 404
    # An unsubscribe link is not a pulse link (and vice versa): purposes are separate.
    assert client.post(f"/u/{token_a}").status_code == 404

    thanks = client.get(f"/pulse/{token_a}/4")
    assert thanks.status_code == 200 and "4 of 5" in thanks.get_data(as_text=True)
    assert client.get(f"/pulse/{token_b}/2").status_code == 200  # works without consent, stores nothing
    assert client.get(f"/pulse/{preview_a}/1").status_code == 200  # preview links record nothing
    assert client.get(f"/pulse/{earlier_a}").status_code == 200
    with db.session(tenant.org_id) as session:
        rows = sorted((r.employee_id, r.iso_week, r.score) for r in session.scalars(select(PulseResponse)))
    assert rows == [(consenting, "2026-W47", 3), (consenting, "2026-W48", 4)]
    # A revoked link (epoch bumped) stops working.
    with db.session(tenant.org_id) as session:
        employees.revoke_links(session, None, consenting)
    assert client.get(f"/pulse/{token_a}/4").status_code == 404


def test_article_links_carry_the_employee_only_with_analytics_consent(db, settings, tenant, smtp_sink):
    consenting, private = add_employees(db, tenant.org_id, 2)
    with db.session(tenant.org_id) as session:
        session.get(Employee, consenting).analytics_consent = True
    add_article(db, tenant.org_id, "Something")
    _process(db, settings, tenant.org_id, _start(db, tenant.org_id))
    messages = {m["To"]: m.get_body(preferencelist=("plain",)).get_content() for m in smtp_sink.wait_for(2)}
    from shared.domain import articles as article_domain

    def link_of(text: str):
        token = re.search(r"http://wellbeing\.test/a/(\S+)", text).group(1)
        return article_domain.read_article_link(settings.secret_key, token)

    assert link_of(messages["e0@staff.example"]).employee_id == consenting
    assert link_of(messages["e1@staff.example"]).employee_id is None


def _flaky(decide) -> tuple[FlakySink, object]:  # noqa: ANN001
    sink = FlakySink(port=free_port(), decide=decide)
    return sink, start_sink(sink)


def test_temporary_errors_retry_with_backoff_then_succeed(db, settings, tenant, celery_worker):
    from tests.conftest import make_settings
    from tests.digest_support import use_broker as configure

    sink, controller = _flaky(lambda rcpt, attempt: "451 4.3.0 try again later" if attempt == 1 else None)
    try:
        flaky_settings = make_settings(settings.database_url, settings.broker_url, sink.port, WELLBEING_DIGEST_RETRY_BASE_SECONDS="0.2")
        configure(flaky_settings)
        add_employees(db, tenant.org_id, 3)
        add_article(db, tenant.org_id, "Something")
        from workers.tasks.digests import enqueue_batches

        enqueue_batches(tenant.org_id, _start(db, tenant.org_id))
        sink.wait_for(3, timeout=30)
        deadline = time.time() + 20
        while time.time() < deadline and any(s.state != SendState.SENT for s in _sends(db, tenant.org_id)):
            time.sleep(0.1)
        rows = _sends(db, tenant.org_id)
        assert [s.state for s in rows] == [SendState.SENT] * 3
        assert all(s.attempts == 2 and s.last_error is None for s in rows)
        raw, distinct = per_recipient(sink.messages)
        assert set(raw.values()) == {1} and len(raw) == 3
    finally:
        controller.stop()
        configure(settings)


def test_permanent_error_fails_and_repeated_failures_suppress_the_address(db, settings, tenant, client):
    sink, controller = _flaky(lambda rcpt, attempt: "550 5.1.1 no such user" if rcpt.startswith("e0@") else None)
    try:
        from tests.conftest import make_settings

        flaky_settings = make_settings(settings.database_url, settings.broker_url, sink.port)
        add_employees(db, tenant.org_id, 2)
        add_article(db, tenant.org_id, "Something")
        _process(db, flaky_settings, tenant.org_id, _start(db, tenant.org_id))
        rows = _sends(db, tenant.org_id)
        assert rows[0].state == SendState.FAILED and rows[0].last_error.startswith("550 5.1.1 no such user")
        assert rows[1].state == SendState.SENT
        # The HR admin sees the error and retries; it keeps failing until the address is suppressed.
        for _ in range(digests.HARD_FAILURE_LIMIT - 1):
            retried = client.post(f"/api/v1/digests/sends/{rows[0].id}/retry", headers=tenant.headers)
            assert retried.status_code == 200 and retried.get_json()["state"] == "queued"
            _process(db, flaky_settings, tenant.org_id, [[rows[0].id]])
        assert client.post(f"/api/v1/digests/sends/{rows[1].id}/retry", headers=tenant.headers).status_code == 409
        suppressed = client.get("/api/v1/digests/suppressions", headers=tenant.headers).get_json()
        assert [s["email"] for s in suppressed["items"]] == ["e0@staff.example"]
        client.post(f"/api/v1/digests/sends/{rows[0].id}/retry", headers=tenant.headers)
        _process(db, flaky_settings, tenant.org_id, [[rows[0].id]])
        assert _sends(db, tenant.org_id)[0].skip_reason == "address suppressed"
        assert client.delete(f"/api/v1/digests/suppressions/{suppressed['items'][0]['id']}", headers=tenant.headers).status_code == 204
        assert sink.attempts["e0@staff.example"] == digests.HARD_FAILURE_LIMIT
    finally:
        controller.stop()


def test_dropped_connection_is_retried_on_a_new_connection(db, settings, tenant):
    sink, controller = _flaky(lambda rcpt, attempt: "drop" if rcpt.startswith("e1@") and attempt == 1 else None)
    try:
        from tests.conftest import make_settings

        flaky_settings = make_settings(settings.database_url, settings.broker_url, sink.port)
        add_employees(db, tenant.org_id, 3)
        add_article(db, tenant.org_id, "Something")
        (outcome,) = _process(db, flaky_settings, tenant.org_id, _start(db, tenant.org_id), retry_base=0.01)
        assert outcome.sent == 2 and len(outcome.retry_ids) == 1
        time.sleep(0.05)
        _process(db, flaky_settings, tenant.org_id, [outcome.retry_ids])
        assert [s.state for s in _sends(db, tenant.org_id)] == [SendState.SENT] * 3
        raw, _ = per_recipient(sink.wait_for(3))
        assert set(raw.values()) == {1}
    finally:
        controller.stop()


def test_crashed_worker_claims_are_recovered_and_sent_once(db, settings, tenant, smtp_sink):
    add_employees(db, tenant.org_id, 3)
    add_article(db, tenant.org_id, "Something")
    batches = _start(db, tenant.org_id)
    with db.session(tenant.org_id) as session:
        digests.claim(session, batches[0], "dead-worker", utcnow() - timedelta(minutes=10))
    # The dead worker's task comes back (redelivery): the rows are not queued, so nothing is sent.
    assert _process(db, settings, tenant.org_id, batches)[0].sent == 0
    # Recovery returns stale claims to the queue and enqueues them again.
    found = digests.recover(db)
    assert found == {tenant.org_id: [batches[0]]}
    assert digests.recover(db) == {}  # just enqueued: not again until REQUEUE_AFTER
    assert _process(db, settings, tenant.org_id, found[tenant.org_id])[0].sent == 3
    smtp_sink.wait_for(3)
    rows = _sends(db, tenant.org_id)
    assert all(r.state == SendState.SENT and r.claimed_by is None for r in rows)
    # Queued rows whose task was lost are enqueued again after REQUEUE_AFTER.
    add_employees(db, tenant.org_id, 1, prefix="late")
    lost = _start(db, tenant.org_id)
    assert digests.recover(db) == {}
    assert digests.recover(db, now=utcnow() + digests.REQUEUE_AFTER + timedelta(seconds=1)) == {tenant.org_id: lost}


def test_pause_keeps_sends_queued_and_resume_sends_them_once(db, settings, tenant, client, smtp_sink):
    add_employees(db, tenant.org_id, 2)
    add_article(db, tenant.org_id, "Something")
    batches = _start(db, tenant.org_id)
    paused = client.post("/api/v1/digests/pause", headers=tenant.headers)
    assert paused.status_code == 200 and paused.get_json()["paused"] is True
    assert _process(db, settings, tenant.org_id, batches)[0].paused
    assert {s.state for s in _sends(db, tenant.org_id)} == {SendState.QUEUED}
    assert client.post("/api/v1/digests/runs", json={}, headers=tenant.headers).status_code == 409
    assert client.post("/api/v1/digests/resume", headers=tenant.headers).get_json()["paused"] is False
    _process(db, settings, tenant.org_id, batches)
    _process(db, settings, tenant.org_id, batches)
    smtp_sink.wait_for(2)
    time.sleep(0.2)
    assert len(smtp_sink.messages) == 2


@pytest.mark.skipif(TEST_DB != "postgresql", reason="the shared rate limit lives in Redis (PostgreSQL pass)")
def test_rate_limit_holds_across_limiters(settings):
    import threading
    import uuid

    limiters = [digests.RateLimiter(settings.broker_url) for _ in range(2)]
    org = int(uuid.uuid4().int % 1_000_000) + 1_000_000
    stamps: list[float] = []

    def take(limiter):  # noqa: ANN001
        for _ in range(10):
            limiter.acquire(org, 5)
            stamps.append(time.time())

    threads = [threading.Thread(target=take, args=(lim,)) for lim in limiters]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    per_second: dict[int, int] = {}
    for s in stamps:
        per_second[int(s)] = per_second.get(int(s), 0) + 1
    assert max(per_second.values()) <= 5 and len(stamps) == 20 and len(per_second) >= 4


# ---- API and CLI -----------------------------------------------------------------------

def test_api_runs_sends_preview_and_test_send(db, settings, tenant, client, celery_worker, smtp_sink):
    ids = add_employees(db, tenant.org_id, 3)
    add_article(db, tenant.org_id, "Something good")
    preview = client.get(f"/api/v1/digests/preview?employee_id={ids[0]}&week=2026-W48", headers=tenant.headers)
    assert preview.status_code == 200
    body = preview.get_json()
    assert body["article_ids"] and body["skip_reason"] is None and "Something good" in body["text"] and "<html" in body["html"]
    assert client.get("/api/v1/digests/preview?employee_id=999999", headers=tenant.headers).status_code == 404
    assert client.get(f"/api/v1/digests/preview?employee_id={ids[0]}&week=2026-48", headers=tenant.headers).status_code == 422

    test = client.post("/api/v1/digests/test", json={"employee_id": ids[0]}, headers=tenant.headers)
    assert test.status_code == 202 and test.get_json()["to"] == tenant.admin_email
    (mail,) = smtp_sink.wait_for(1)
    assert mail["To"] == tenant.admin_email and mail["Subject"].startswith("[Test] ")

    started = client.post("/api/v1/digests/runs", json={"week": "2026-W48"}, headers=tenant.headers)
    assert started.status_code == 201
    run = started.get_json()
    assert run["counts"]["total"] == 3 and run["trigger"] == "manual"
    deadline = time.time() + 20
    while time.time() < deadline:
        run = client.get(f"/api/v1/digests/runs/{run['id']}", headers=tenant.headers).get_json()
        if run["status"] == "done":
            break
        time.sleep(0.1)
    assert run["status"] == "done" and run["counts"]["sent"] == 3
    smtp_sink.wait_for(4)
    listed = client.get(f"/api/v1/digests/sends?run_id={run['id']}&state=sent", headers=tenant.headers).get_json()
    assert listed["total"] == 3 and all(s["message_id"].startswith("<digest-") for s in listed["items"])
    assert client.get("/api/v1/digests/runs", headers=tenant.headers).get_json()["items"][0]["id"] == run["id"]
    # Settings: window validation is a field-level 422.
    bad = client.patch("/api/v1/digests/settings", json={"window_start_hour": 20, "window_end_hour": 8}, headers=tenant.headers)
    assert bad.status_code == 422 and bad.mimetype == "application/problem+json"
    good = client.patch("/api/v1/digests/settings", json={"send_weekdays": [0, 1, 2, 3, 4], "quiet_days": ["2026-12-25"]}, headers=tenant.headers)
    assert good.status_code == 200 and good.get_json()["quiet_days"] == ["2026-12-25"]


def test_api_is_hr_admin_only_and_tenant_scoped(db, tenant, other_tenant, client, make_user):
    add_employees(db, other_tenant.org_id, 1)
    run = client.post("/api/v1/digests/runs", json={}, headers=other_tenant.headers).get_json()
    manager = make_user(tenant, Role.MANAGER)
    assert client.get("/api/v1/digests/runs", headers=manager.headers).status_code == 403
    assert client.get(f"/api/v1/digests/runs/{run['id']}", headers=tenant.headers).status_code == 404
    assert client.get("/api/v1/digests/sends", headers=tenant.headers).get_json()["total"] == 0


def test_cli_digest_run(db, settings, tenant, smtp_sink, monkeypatch):
    from click.testing import CliRunner

    from services.cli import main

    add_employees(db, tenant.org_id, 2)
    add_article(db, tenant.org_id, "Something")
    for key, value in {"DATABASE_URL": settings.database_url, "BROKER_URL": settings.broker_url, "SMTP_URL": settings.smtp_url,
                       "MAIL_FROM": settings.mail_from, "PUBLIC_URL": settings.public_url, "SECRET_KEY": settings.secret_key,
                       "WELLBEING_ENV": "testing"}.items():
        monkeypatch.setenv(key, value)
    result = CliRunner().invoke(main, ["digest", "run", "--org", str(tenant.org_id), "--week", "2026-W48", "--inline"])
    assert result.exit_code == 0, result.output
    assert "2 sends created" in result.output and "sent 2" in result.output
    assert len(smtp_sink.wait_for(2)) == 2
    again = CliRunner().invoke(main, ["digest", "run", "--org", str(tenant.org_id), "--week", "2026-W48", "--inline"])
    assert "0 sends created" in again.output
    bad = CliRunner().invoke(main, ["digest", "run", "--org", str(tenant.org_id), "--week", "2026-48"])
    assert bad.exit_code != 0 and "week" in bad.output.lower()


def test_erasure_removes_digest_rows(db, settings, tenant, client, smtp_sink):
    (employee_id,) = add_employees(db, tenant.org_id, 1)
    add_article(db, tenant.org_id, "Something")
    _process(db, settings, tenant.org_id, _start(db, tenant.org_id))
    with db.session(tenant.org_id) as session:
        session.add(SuppressedAddress(email="e0@staff.example", hard_failures=1))
    with db.session(tenant.org_id) as session:
        employees.erase_employee(session, None, employee_id)
    with db.session(tenant.org_id) as session:
        for model in (DigestSend, DigestItem, SuppressedAddress):
            assert session.scalar(select(func.count()).select_from(model)) == 0



