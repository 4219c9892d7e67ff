"""schemathesis over every operation of /api/v1/openapi.json, authenticated as the HR
admin of a seeded organisation (articles, partners, employees, programs, digests,
report data), so generated requests hit real ids as well as made-up ones.

Every response must be documented: its status code, its content type and its body
schema; and none may be a 5xx. The test prints requests per operation, the total
and the failures, and needs at least MIN_REQUESTS requests in all."""
from __future__ import annotations

import uuid
from collections import Counter
from datetime import timedelta

import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from schemathesis.checks import not_a_server_error
from schemathesis.core.failures import FailureGroup
from schemathesis.generation import GenerationMode
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from shared.domain import accounts, activity, reports
from shared.models import Employee, SuppressedAddress

MIN_REQUESTS = 2000
CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance]
# Examples per operation: with the seeded ids (valid data, then invalid data) and with
# generated path parameters (mostly other ids: 404).
REAL_POSITIVE, REAL_NEGATIVE, GENERATED = 16, 10, 4

EXAMPLE_ARTICLE = (
    "Sleep well this winter\n\nShort days make rest harder. Here is what helps.\n\n"
    "This article was written by our Wellbeing Partner Restful Co.\n\n\n"
    "Keep a rhythm\nGo to bed and get up at the same time every day.\n\n\n"
    "About the author\nRestful Co. helps people sleep better.\n"
)


def _ok(response, status=(200, 201, 202)):  # noqa: ANN001
    assert response.status_code in status, response.get_data(as_text=True)
    return response.get_json()


def _seed(client, db, tenant) -> dict[str, int]:  # noqa: ANN001
    """An organisation with some of everything; the id to use for each path parameter."""
    h = tenant.headers
    post = lambda path, body: _ok(client.post(path, json=body, headers=h))  # noqa: E731
    partner = post("/api/v1/partners", {"name": "Calm Partners", "website": "https://calm.example"})
    topic = post("/api/v1/topics", {"name": "Resilience", "keywords": ["resilience", "coping"]})
    articles = []
    for n in range(3):
        body = {"title": f"Breathing {n}", "summary": "Breathe.", "body": "Breathe *slowly* and sleep.", "format": "markdown",
                "partner_id": partner["id"], "topics": ["sleep"]}
        articles.append(post("/api/v1/articles", body)["id"])
    for article_id in articles[:2]:
        post(f"/api/v1/articles/{article_id}/submit", {})
        post(f"/api/v1/articles/{article_id}/publish", {})
    imported = client.post("/api/v1/articles/import", headers=h, data={"files": [(__import__("io").BytesIO(EXAMPLE_ARTICLE.encode()), "sleep.txt")]},
                           content_type="multipart/form-data")
    _ok(imported)
    employees = []
    for n in range(6):
        key = uuid.uuid4().hex[:6]
        body = {"external_id": f"E{n}-{key}", "email": f"e{n}-{key}@example.com", "first_name": "Emp", "last_name": f"N{n}",
                "department": "Sales", "team": "Blue", "timezone": "Europe/London", "digest_consent": True, "analytics_consent": True}
        employees.append(post("/api/v1/employees", body)["id"])
    program = post("/api/v1/programs", {"name": "Sleep better", "status": "open", "capacity": 3, "topics": ["sleep"]})
    enrolments = post(f"/api/v1/programs/{program['id']}/enrolments", {"employee_ids": employees[:4]})["items"]
    started = (activity.utcnow() - timedelta(days=1)).isoformat()
    program_session = post(f"/api/v1/programs/{program['id']}/sessions", {"title": "Wind down", "starts_at": started, "duration_minutes": 45})
    post(f"/api/v1/programs/{program['id']}/sessions/{program_session['id']}/attendance", {"employee_id": employees[0]})
    csv = b"external_id,email,first_name,last_name,department,team,manager_external_id,timezone\nI1,i1@example.com,Imp,One,Ops,Red,,UTC\n"
    job = _ok(client.post("/api/v1/employees/import", data=csv, headers={**h, "Content-Type": "text/csv"}))
    run = post("/api/v1/digests/runs", {"week": "2026-W48"})
    sends = _ok(client.get("/api/v1/digests/sends?per_page=5", headers=h))["items"]
    manager = post("/api/v1/users", {"email": f"m-{uuid.uuid4().hex[:6]}@example.com", "role": "manager"})
    with db.session(tenant.org_id) as session:
        suppression = SuppressedAddress(email="bounced@example.com", hard_failures=3, suppressed_at=activity.utcnow())
        session.add(suppression)
        for employee in session.query(Employee).filter(Employee.id.in_(employees)):
            for day in range(3):
                activity.record_event(session, employee, "pulse_answered", score=3 + day % 2,
                                      occurred_at=activity.utcnow() - timedelta(days=7 * day))
        session.flush()
        reports.build(session)
        admin = session.get(accounts.User, tenant.admin_id)
        spare_token = accounts.issue_token(session, admin, timedelta(hours=1)).record.id
        suppression_id = suppression.id
    return {
        "token_id": spare_token, "user_id": manager["id"], "partner_id": partner["id"], "topic_id": topic["id"],
        "article_id": articles[0], "employee_id": employees[0], "job_id": job["id"], "program_id": program["id"],
        "enrolment_id": enrolments[0]["id"], "session_id": program_session["id"], "run_id": run["id"], "send_id": sends[0]["id"], "suppression_id": suppression_id,
    }


def _fresh_token(db, tenant) -> str:  # noqa: ANN001
    with db.session(tenant.org_id) as session:
        return accounts.issue_token(session, session.get(accounts.User, tenant.admin_id), timedelta(hours=1)).token


@pytest.mark.prints_counts
def test_every_operation_answers_as_documented(app, client, db, tenant):
    ids = _seed(client, db, tenant)
    schema = schemathesis.openapi.from_wsgi("/api/v1/openapi.json", app)
    operations = [result.ok() for result in schema.get_all_operations()]
    # Deletions last, so the other operations still find the seeded records.
    operations.sort(key=lambda op: op.method.upper() == "DELETE")
    requests: Counter[str] = Counter()
    # operation -> failure (title and message) -> how many, and one request that caused it
    failures: dict[str, dict[str, list]] = {}

    def exercise(operation, mode: GenerationMode, path_parameters: dict | None, examples: int) -> None:  # noqa: ANN001
        @given(case=operation.as_strategy(generation_mode=mode, path_parameters=path_parameters))
        @settings(max_examples=examples, deadline=None, phases=[Phase.explicit, Phase.generate], database=None, derandomize=True,
                  suppress_health_check=list(HealthCheck))
        def run(case):  # noqa: ANN001
            # Logging out revokes the token in use: give that operation a token of its own.
            token = _fresh_token(db, tenant) if operation.label == "DELETE /api/v1/auth/token" else tenant.token
            headers = {"Authorization": f"Bearer {token}"}
            response = case.call(headers=headers)
            requests[operation.label] += 1
            try:
                case.validate_response(response, checks=CHECKS, headers=headers)
            except FailureGroup as group:
                for failure in group.exceptions:
                    key = f"{failure.title}: {' '.join(failure.message.split())[:300]}"
                    seen = failures.setdefault(operation.label, {}).setdefault(key, [0, case.as_curl_command()[:400]])
                    seen[0] += 1

        run()

    for operation in operations:
        own_ids = {p.name: ids[p.name] for p in operation.path_parameters}
        exercise(operation, GenerationMode.POSITIVE, own_ids, REAL_POSITIVE)
        exercise(operation, GenerationMode.NEGATIVE, own_ids, REAL_NEGATIVE)
        if own_ids:
            exercise(operation, GenerationMode.POSITIVE, None, GENERATED)

    total = sum(requests.values())
    failed = {label: sum(count for count, _ in found.values()) for label, found in failures.items()}
    print(f"\nschemathesis: {len(operations)} operations, {total} requests, {sum(failed.values())} failures")
    for label in sorted(requests):
        print(f"  {requests[label]:4d} requests  {failed.get(label, 0):4d} failures  {label}")
    for label, found in failures.items():
        print(f"FAIL {label}")
        for key, (count, curl) in found.items():
            print(f"  {count}x {key}\n     e.g. {curl}")
    assert total >= MIN_REQUESTS
    assert not failures, f"{sum(failed.values())} responses broke the documented schema; see the output"
