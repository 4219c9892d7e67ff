"""Attacks through the reports API: try to recover one person's pulse score from what the
API shows (parent minus children, two overlapping filters, this week minus last week, a
team that gained one member). After each attack the test takes every cell the API showed,
looks up its member set in the database, and checks with linear algebra that the target's
indicator vector is not in the span of the shown sets, i.e. no combination of shown sums
isolates them."""
from __future__ import annotations

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from shared.domain import activity, reports
from shared.domain.digest_schedule import shift_week
from tests.test_reports import WEEK, add_employee, build, record


class Attacker:
    def __init__(self, client, db, tenant):  # noqa: ANN001
        self.client, self.db, self.tenant = client, db, tenant
        self.shown: list[tuple[int, str, str]] = []  # (window, week, group id)

    def ask(self, week: str, group: str | None = None, window: int = 1) -> dict:
        query = f"/api/v1/reports?period={week}&window={window}&measure=pulse" + (f"&group={group}" if group else "")
        response = self.client.get(query, headers=self.tenant.headers)
        assert response.status_code == 200, response.get_json()
        cells = {}
        for c in response.get_json()["cells"]:
            cells[c["group"]] = c
            if not c["suppressed"]:
                self.shown.append((window, week, c["group"]))
        return cells

    def _members(self, session, window, week, gid):  # noqa: ANN001
        if gid == "org":
            kind, key = "org", ""
        else:
            kind, _, key = gid.partition(":")
            if kind == "line":
                key = activity.pseudonym(session, int(key))
        sets = reports.member_sets(session, window, week, lambda name: name == "pulse")
        return sets[(kind, key, "pulse")]

    def can_isolate(self, employee_id: int) -> bool:
        with self.db.session(self.tenant.org_id) as s:
            target = activity.pseudonym(s, employee_id)
            sets = [self._members(s, *shown) for shown in set(self.shown)]
        return isolates(sets, target)


def isolates(sets: list[set[str]], target: str) -> bool:
    """True when some linear combination of the sets' indicator vectors is the target alone."""
    if not sets:
        return False
    people = sorted(set().union(*sets) | {target})
    matrix = np.array([[1.0 if p in members else 0.0 for p in people] for members in sets])
    unit = np.array([1.0 if p == target else 0.0 for p in people])
    return np.linalg.matrix_rank(np.vstack([matrix, unit])) == np.linalg.matrix_rank(matrix)


def _people(db, tenant, **teams):  # noqa: ANN001
    with db.session(tenant.org_id) as s:
        return {team: [add_employee(s, dept=dept, team=team).id for _ in range(n)] for team, (dept, n) in teams.items()}


def test_parent_minus_children(client, db, tenant):
    p = _people(db, tenant, Blue=("Sales", 6), Green=("Sales", 1), Red=("Ops", 6))
    record(db, tenant, p["Blue"], score=4)
    record(db, tenant, p["Green"], score=1)  # the target
    record(db, tenant, p["Red"], score=3)
    build(db, tenant)
    attacker = Attacker(client, db, tenant)
    cells = attacker.ask(WEEK)
    assert cells["team:Sales/Green"]["suppressed"]
    # asking for each piece separately does not help either
    for group in ("department:Sales", "team:Sales/Blue", "org", "department:Ops"):
        attacker.ask(WEEK, group)
    assert not attacker.can_isolate(p["Green"][0])


def test_two_overlapping_filters(client, db, tenant):
    """A reporting line that is a team plus one person from another team."""
    with db.session(tenant.org_id) as s:
        boss = add_employee(s, dept="Sales", team="")
        blue = [add_employee(s, dept="Sales", team="Blue", manager=boss).id for _ in range(6)]
        target = add_employee(s, dept="Sales", team="Green", manager=boss).id
        green = [add_employee(s, dept="Sales", team="Green").id for _ in range(6)]
    record(db, tenant, blue, score=4)
    record(db, tenant, green, score=3)
    record(db, tenant, [target], score=1)
    build(db, tenant)
    attacker = Attacker(client, db, tenant)
    attacker.ask(WEEK, "team:Sales/Blue")
    attacker.ask(WEEK, f"line:{boss.id}")
    attacker.ask(WEEK, "team:Sales/Green")
    attacker.ask(WEEK)
    assert not attacker.can_isolate(target)


def test_this_week_minus_last_week(client, db, tenant):
    p = _people(db, tenant, Blue=("Sales", 7), Red=("Ops", 6))
    target = p["Blue"][0]
    last = shift_week(WEEK, -1)
    record(db, tenant, p["Blue"], week=last, score=3)
    record(db, tenant, p["Blue"][1:], week=WEEK, score=3)  # the target did not answer this week
    record(db, tenant, p["Red"], week=last, score=2)
    record(db, tenant, p["Red"], week=WEEK, score=2)
    build(db, tenant)
    attacker = Attacker(client, db, tenant)
    attacker.ask(last)
    attacker.ask(WEEK)
    attacker.ask(WEEK, window=4)
    assert not attacker.can_isolate(target)


def test_team_that_gained_one_member(client, db, tenant):
    p = _people(db, tenant, Blue=("Sales", 6), Red=("Ops", 6))
    last = shift_week(WEEK, -1)
    record(db, tenant, p["Blue"] + p["Red"], week=last, score=3)
    with db.session(tenant.org_id) as s:
        newcomer = add_employee(s, dept="Sales", team="Blue").id
    record(db, tenant, p["Blue"] + p["Red"] + [newcomer], week=WEEK, score=3)
    build(db, tenant)
    attacker = Attacker(client, db, tenant)
    attacker.ask(last, "team:Sales/Blue")
    cells = attacker.ask(WEEK, "team:Sales/Blue")
    assert cells["team:Sales/Blue"]["suppressed"]
    for week in (last, WEEK):
        attacker.ask(week)
        attacker.ask(week, window=4)
    assert not attacker.can_isolate(newcomer)


def test_the_check_itself_finds_a_leak():
    """The linear-algebra check is not vacuous: a parent and its child shown together isolate the rest."""
    assert isolates([{"a", "b", "c", "d", "e", "t"}, {"a", "b", "c", "d", "e"}], "t")
    assert not isolates([{"a", "b", "c", "d", "e", "t"}], "t")
    assert isolates([{"a", "t"}, {"a", "b"}, {"b", "t"}], "t")


# ---- property: random organisations, random answers, every view the API allows ------------------

org_shapes = st.lists(  # departments -> teams -> (size, manager index 0/1)
    st.lists(st.tuples(st.integers(0, 8), st.integers(0, 1)), min_size=1, max_size=3), min_size=1, max_size=3)


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(shape=org_shapes, answer_rate=st.floats(0.3, 1.0), seed=st.integers(0, 10_000))
def test_no_shown_cells_isolate_anyone_in_random_organisations(client, db, make_tenant, shape, answer_rate, seed):
    import random

    rng = random.Random(seed)
    tenant = make_tenant()
    weeks = [shift_week(WEEK, -1), WEEK]
    with db.session(tenant.org_id) as s:
        boss = add_employee(s, dept="Board", team="")
        managers = [add_employee(s, dept="Board", team="", manager=boss) for _ in range(2)]
        everyone = []
        for d, teams in enumerate(shape):
            for t, (size, m) in enumerate(teams):
                everyone += [add_employee(s, dept=f"D{d}", team=f"T{t}", manager=managers[m]).id for _ in range(size)]
    for week in weeks:
        for eid in everyone:
            if rng.random() < answer_rate:
                record(db, tenant, [eid], week=week, score=rng.randint(1, 5))
    build(db, tenant)
    attacker = Attacker(client, db, tenant)
    groups = [None, "department", "team", "line"] + [f"department:D{d}" for d in range(len(shape))]
    for week in weeks:
        for window in (1, 4):
            for group in groups:
                response = client.get(f"/api/v1/reports?period={week}&window={window}&measure=pulse" + (f"&group={group}" if group else ""),
                                      headers=tenant.headers)
                if response.status_code == 404:
                    continue
                assert response.status_code == 200
                for c in response.get_json()["cells"]:
                    if not c["suppressed"]:
                        assert c["people_count"] >= 5
                        attacker.shown.append((window, week, c["group"]))
    with db.session(tenant.org_id) as s:
        sets = [attacker._members(s, *shown) for shown in set(attacker.shown)]
        targets = [activity.pseudonym(s, eid) for eid in everyone]
    for target in targets:
        assert not isolates(sets, target)
