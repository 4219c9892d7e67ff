"""The anonymity rules of shared.domain.anonymity: hand-built cases for every rule, an
attack suite (each attack must fail), and hypothesis properties checked by linear algebra
over person-level indicator vectors."""
from __future__ import annotations

import itertools
import math
import statistics

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from shared.domain.anonymity import (
    DEFAULT_K,
    BudgetExhausted,
    Cell,
    PrivacyBudget,
    Reason,
    ReleaseLogEntry,
    add_noise,
    apply_noise,
    check_k,
    log_entries,
    mean_sensitivity,
    noise_scale,
    release,
    release_cost,
    suppression_plan,
)


# ---------------------------------------------------------------- helpers


def people(prefix: str, n: int) -> frozenset[str]:
    return frozenset(f"{prefix}{i}" for i in range(n))


def cell(group_id: str, parent_id: str | None, members: frozenset[str], scores: dict[str, float] | None = None) -> Cell:
    """A cell whose values are the pulse sum of its members (scores default to 3)."""
    scores = scores or {}
    return Cell(group_id, parent_id, members, {"pulse_sum": float(sum(scores.get(p, 3.0) for p in members))})


def by_id(released):  # noqa: ANN001, ANN201
    return {r.group_id: r for r in released}


def shown(released) -> set[str]:  # noqa: ANN001
    return {r.group_id for r in released if not r.suppressed}


def suppressed(released) -> set[str]:  # noqa: ANN001
    return {r.group_id for r in released if r.suppressed}


def indicator(members, universe: list[str]) -> np.ndarray:  # noqa: ANN001
    return np.array([1.0 if p in members else 0.0 for p in universe])


def derivable(target, rows, universe: list[str]) -> bool:  # noqa: ANN001
    """True when the target member set's indicator is a linear combination of `rows`."""
    if not rows:
        return False
    matrix = np.array([indicator(r, universe) for r in rows])
    extended = np.vstack([matrix, indicator(target, universe)])
    return np.linalg.matrix_rank(extended) == np.linalg.matrix_rank(matrix)


def small_support_in_span(  # noqa: ANN001
    rows, universe: list[str], k: int, max_size: int | None = None
) -> tuple[str, ...] | None:
    """A set of fewer than k people (up to max_size) supporting a non-zero combination of rows."""
    if not rows:
        return None
    matrix = np.array([indicator(r, universe) for r in rows])
    base = np.linalg.matrix_rank(matrix)
    limit = min(k - 1, max_size or k - 1)
    for size in range(1, limit + 1):
        for subset in itertools.combinations(range(len(universe)), size):
            unit = np.zeros((size, len(universe)))
            unit[range(size), subset] = 1.0
            if base + size - np.linalg.matrix_rank(np.vstack([matrix, unit])) > 0:
                return tuple(universe[i] for i in subset)
    return None


def rows_seen(cells, released, log=()) -> list[frozenset[str]]:  # noqa: ANN001
    members = {c.group_id: c.people for c in cells}
    return [e.people for e in log] + [members[r.group_id] for r in released if not r.suppressed]


# ---------------------------------------------------------------- rule 1: k


def test_k_defaults_to_five() -> None:
    assert DEFAULT_K == 5
    released = release([cell("team", None, people("a", 4))])
    assert released[0].suppressed and released[0].k == 5
    assert release([cell("team", None, people("a", 5))])[0].suppressed is False


@pytest.mark.parametrize("bad", [2, 1, 0, -5, True, 3.0, "5", None])
def test_k_below_three_or_not_a_whole_number_is_refused(bad) -> None:  # noqa: ANN001
    with pytest.raises(ValueError):
        check_k(bad)
    with pytest.raises(ValueError):
        release([cell("team", None, people("a", 10))], k=bad)


def test_k_three_is_the_minimum_allowed() -> None:
    assert check_k(3) == 3
    assert release([cell("team", None, people("a", 3))], k=3)[0].suppressed is False


# ---------------------------------------------------------------- rule 3: primary


def test_cell_under_k_is_suppressed_with_reason_and_no_numbers() -> None:
    released = release([cell("team", None, people("a", 4))], k=5)[0]
    assert released.suppressed
    assert released.reason is Reason.FEWER_THAN_K
    assert released.reason.value == "fewer than k people"
    assert released.explanation == "fewer than 5 people"
    assert released.values is None and released.people_count is None


def test_shown_cell_carries_values_and_count_but_never_members() -> None:
    released = release([cell("team", None, people("secret-pseudonym-", 6))])[0]
    assert not released.suppressed and released.reason is None
    assert released.people_count == 6 and released.values == {"pulse_sum": 18.0}
    assert not hasattr(released, "people")
    assert "secret-pseudonym" not in repr(released)
    assert "secret-pseudonym" not in repr(cell("team", None, people("secret-pseudonym-", 6)))


def test_empty_cell_is_suppressed() -> None:
    assert release([Cell("team", None, frozenset(), {})])[0].reason is Reason.FEWER_THAN_K


# ---------------------------------------------------------------- rule 4: complementary


def test_one_small_child_forces_the_next_smallest_sibling() -> None:
    t1, t2, t3, t4 = people("a", 2), people("b", 6), people("c", 10), people("d", 7)
    cells = [cell("dept", None, t1 | t2 | t3 | t4)] + [
        cell(name, "dept", members) for name, members in [("t1", t1), ("t2", t2), ("t3", t3), ("t4", t4)]
    ]
    released = by_id(release(cells, k=5))
    assert released["t1"].reason is Reason.FEWER_THAN_K
    assert released["t2"].reason is Reason.PROTECTS_SMALLER_GROUP
    assert released["t2"].reason.value == "suppressed to protect a smaller group"
    assert not released["t3"].suppressed and not released["t4"].suppressed and not released["dept"].suppressed


def test_single_suppressed_child_is_left_alone_when_the_remainder_already_covers_k() -> None:
    # 4 people of the department belong to no team: parent minus visible teams is 6 people
    small, big, direct = people("a", 2), people("b", 10), people("d", 4)
    cells = [cell("dept", None, small | big | direct), cell("small", "dept", small), cell("big", "dept", big)]
    assert shown(release(cells, k=5)) == {"dept", "big"}


def test_people_outside_every_child_count_as_a_hidden_child() -> None:
    b, c, head = people("b", 5), people("c", 6), frozenset({"head"})
    cells = [cell("dept", None, b | c | head), cell("b", "dept", b), cell("c", "dept", c)]
    released = by_id(release(cells, k=5))
    assert released["b"].reason is Reason.PROTECTS_SMALLER_GROUP  # dept minus b minus c would be the head
    assert shown(released.values()) == {"dept", "c"}


def test_sibling_whose_own_teams_are_shown_hides_nothing_so_another_is_taken() -> None:
    small, ya, yb, z = people("a", 2), people("ya", 5), people("yb", 5), people("z", 12)
    cells = [
        cell("org", None, small | ya | yb | z),
        cell("d0", "org", small),
        cell("d1", "org", ya | yb),
        cell("d1a", "d1", ya),
        cell("d1b", "d1", yb),
        cell("d2", "org", z),
    ]
    released = by_id(release(cells, k=5))
    assert released["d2"].reason is Reason.PROTECTS_SMALLER_GROUP
    assert shown(released.values()) == {"org", "d1", "d1a", "d1b"}


def test_suppression_cascades_across_levels_to_a_fixed_point() -> None:
    # d0 (2 people) is suppressed; suppressing d1 alone would not help because both of
    # its teams are shown (org - d1a - d1b = d0), so a team of d1 must go too.
    small, ya, yb = people("a", 2), people("ya", 5), people("yb", 6)
    cells = [
        cell("org", None, small | ya | yb),
        cell("d0", "org", small),
        cell("d1", "org", ya | yb),
        cell("d1a", "d1", ya),
        cell("d1b", "d1", yb),
    ]
    released = by_id(release(cells, k=5))
    assert released["d0"].reason is Reason.FEWER_THAN_K
    assert released["d1"].reason is Reason.PROTECTS_SMALLER_GROUP
    assert released["d1a"].reason is Reason.PROTECTS_SMALLER_GROUP
    assert shown(released.values()) == {"org", "d1b"}


def test_small_department_made_of_small_teams_is_protected_at_organisation_level() -> None:
    t1, t2, d2, d3 = people("a", 2), people("b", 2), people("c", 20), people("e", 9)
    cells = [
        cell("org", None, t1 | t2 | d2 | d3),
        cell("d1", "org", t1 | t2),
        cell("t1", "d1", t1),
        cell("t2", "d1", t2),
        cell("d2", "org", d2),
        cell("d3", "org", d3),
    ]
    released = by_id(release(cells, k=5))
    assert {g for g in ("d1", "t1", "t2") if released[g].reason is Reason.FEWER_THAN_K} == {"d1", "t1", "t2"}
    assert released["d3"].reason is Reason.PROTECTS_SMALLER_GROUP  # the smaller sibling of d1
    assert shown(released.values()) == {"org", "d2"}


# ---------------------------------------------------------------- rule 5: differencing


@pytest.mark.parametrize("exact", [True, False], ids=["exact", "pairwise-only"])
def test_team_that_gained_one_member_is_suppressed_against_last_weeks_release(exact: bool) -> None:
    last = people("a", 6)
    log = [ReleaseLogEntry("2026-W47", last, "team")]
    released = release([cell("team", None, last | {"new"})], k=5, release_log=log, exact_history_check=exact)[0]
    assert released.reason is Reason.SMALL_DIFFERENCE
    assert released.reason.value == "would reveal a small difference from an earlier report"


@pytest.mark.parametrize("exact", [True, False], ids=["exact", "pairwise-only"])
def test_same_member_set_can_be_shown_again(exact: bool) -> None:
    members = people("a", 6)
    log = [ReleaseLogEntry("2026-W47", members, "team")]
    assert release([cell("team", None, members)], release_log=log, exact_history_check=exact)[0].suppressed is False


@pytest.mark.parametrize("exact", [True, False], ids=["exact", "pairwise-only"])
def test_difference_of_k_or_more_people_is_allowed(exact: bool) -> None:
    last = people("a", 6)
    log = [ReleaseLogEntry("2026-W47", last, "team")]
    released = release([cell("team", None, last | people("n", 5))], k=5, release_log=log, exact_history_check=exact)
    assert released[0].suppressed is False


@pytest.mark.parametrize("exact", [True, False], ids=["exact", "pairwise-only"])
def test_any_logged_set_counts_whatever_its_group_or_period(exact: bool) -> None:
    log = [ReleaseLogEntry("2025-W02", people("a", 8), None)]
    other_filter = cell("filter", None, people("a", 8) - {"a0"})
    assert release([other_filter], release_log=log, exact_history_check=exact)[0].reason is Reason.SMALL_DIFFERENCE


def test_overlay_that_differs_from_its_department_by_one_person_is_suppressed() -> None:
    # the head of the department is not part of their own reporting line
    t1, t2 = people("a", 6) | {"head"}, people("b", 7)
    dept = cell("dept", None, t1 | t2)
    line = cell("line:head", None, (t1 | t2) - {"head"})
    released = by_id(release([dept, cell("t1", "dept", t1), cell("t2", "dept", t2)], overlays=[line]))
    assert released["line:head"].reason is Reason.PROTECTS_SMALLER_GROUP
    assert shown(released.values()) == {"dept", "t1", "t2"}


def test_overlay_hierarchy_gets_complementary_suppression_too() -> None:
    direct, sub = people("a", 5), people("b", 2)
    lines = [cell("line:m", None, direct | sub), cell("line:s", "line:m", sub)]
    released = by_id(release([], overlays=lines))
    assert released["line:s"].reason is Reason.FEWER_THAN_K
    assert not released["line:m"].suppressed  # its remainder (5 direct reports) covers k


def test_log_entries_record_only_shown_cells() -> None:
    a, b = people("a", 6), people("b", 2)
    cells = [cell("x", None, a), cell("y", None, b)]
    entries = log_entries(cells, release(cells), "2026-W48")
    assert [(e.group_id, e.period, e.people) for e in entries] == [("x", "2026-W48", a)]
    assert "a0" not in repr(entries)


# ---------------------------------------------------------------- input validation


@pytest.mark.parametrize(
    "cells",
    [
        [cell("x", None, people("a", 6)), cell("x", None, people("b", 6))],
        [cell("x", "missing", people("a", 6))],
        [cell("p", None, people("a", 6)), cell("c", "p", people("b", 6))],
        [cell("p", "c", people("a", 6)), cell("c", "p", people("a", 6))],
    ],
    ids=["duplicate-id", "unknown-parent", "child-not-subset", "cycle"],
)
def test_malformed_input_is_refused(cells) -> None:  # noqa: ANN001
    with pytest.raises(ValueError):
        release(cells)


# ---------------------------------------------------------------- attack suite
# Per-person pulse scores; the target's score is what the attacker wants. Each attack
# does the arithmetic an attacker would do on what was shown, and must fail; and the
# target's indicator must not lie in the span of everything the viewer saw.

SCORES = {f"p{i}": float(1 + (i * 7) % 5) for i in range(40)} | {"target": 1.0}


@pytest.mark.parametrize("exact", [True, False], ids=["exact", "pairwise-only"])
def test_attack_parent_minus_children_fails(exact: bool) -> None:
    t1, t2, t3 = frozenset({"target"}), people("p", 6), frozenset(f"p{i}" for i in range(10, 18))
    cells = [
        cell("dept", None, t1 | t2 | t3, SCORES),
        cell("t1", "dept", t1, SCORES),
        cell("t2", "dept", t2, SCORES),
        cell("t3", "dept", t3, SCORES),
    ]
    released = by_id(release(cells, exact_history_check=exact))
    assert "dept" in shown(released.values())
    visible_children = [released[t] for t in ("t1", "t2", "t3") if not released[t].suppressed]
    guess = released["dept"].values["pulse_sum"] - sum(c.values["pulse_sum"] for c in visible_children)
    assert guess != SCORES["target"]  # the difference mixes the target with 6 other people
    universe = sorted(set().union(*(c.people for c in cells)))
    assert not derivable(t1, rows_seen(cells, released.values()), universe)


@pytest.mark.parametrize("exact", [True, False], ids=["exact", "pairwise-only"])
def test_attack_two_overlapping_filters_fails_in_one_report_and_across_two(exact: bool) -> None:
    everyone = people("p", 9) | {"target"}
    # filter A: the whole department; filter B: "joined over a year ago", i.e. all but the target
    filter_a = cell("filter:dept", None, everyone, SCORES)
    filter_b = cell("filter:tenure", None, everyone - {"target"}, SCORES)
    together = by_id(release([filter_a], overlays=[filter_b], exact_history_check=exact))
    assert suppressed(together.values()) == {"filter:tenure"}

    first = release([filter_a], exact_history_check=exact)
    log = log_entries([filter_a], first, "2026-W48")
    second = release([filter_b], release_log=log, exact_history_check=exact)[0]
    assert second.suppressed and second.reason is Reason.SMALL_DIFFERENCE
    universe = sorted(everyone)
    assert not derivable({"target"}, [e.people for e in log], universe)


@pytest.mark.parametrize("exact", [True, False], ids=["exact", "pairwise-only"])
def test_attack_this_week_minus_last_week_fails(exact: bool) -> None:
    common = people("p", 7)
    last_week = cell("team", None, common | {"target"}, SCORES)  # target answered last week
    this_week = cell("team", None, common, SCORES)  # ... and not this week
    first = release([last_week], exact_history_check=exact)
    log = log_entries([last_week], first, "2026-W47")
    second = release([this_week], release_log=log, exact_history_check=exact)[0]
    assert second.suppressed and second.reason is Reason.SMALL_DIFFERENCE
    assert not derivable({"target"}, [e.people for e in log], sorted(common | {"target"}))


@pytest.mark.parametrize("exact", [True, False], ids=["exact", "pairwise-only"])
def test_attack_team_that_gained_one_member_fails_even_through_the_parent(exact: bool) -> None:
    # week 1: team A (6) and team B (8) in a department; week 2: the target joins A and
    # 5 others join B, so the department changes by 6 and can be shown - A may not be
    # rebuilt as dept minus B and then differenced against week 1.
    a, b, new_b = people("a", 6), people("b", 8), people("nb", 5)
    week1 = [cell("dept", None, a | b, SCORES), cell("A", "dept", a, SCORES), cell("B", "dept", b, SCORES)]
    first = release(week1, exact_history_check=exact)
    assert suppressed(first) == set()
    log = log_entries(week1, first, "2026-W47")
    a2, b2 = a | {"target"}, b | new_b
    week2 = [cell("dept", None, a2 | b2, SCORES), cell("A", "dept", a2, SCORES), cell("B", "dept", b2, SCORES)]
    second = by_id(release(week2, release_log=log, exact_history_check=exact))
    assert second["A"].reason is Reason.SMALL_DIFFERENCE
    assert second["dept"].suppressed or second["B"].suppressed
    universe = sorted(a2 | b2)
    assert not derivable({"target"}, rows_seen(week2, second.values(), log), universe)
    assert small_support_in_span(rows_seen(week2, second.values(), log), universe, 5, max_size=2) is None


def test_attack_complement_that_changes_between_weeks_fails() -> None:
    # week 1 hides t0 (1 person) behind t1; in week 2 t2 changes and is suppressed, so
    # t1 alone would suffice as complement - but t1 + week-1 cells would isolate t0.
    t0, t1, t2 = frozenset({"target"}), people("p", 3), people("q", 4)
    week1 = [cell("d", None, t0 | t1 | t2, SCORES)] + [
        cell(n, "d", m, SCORES) for n, m in (("t0", t0), ("t1", t1), ("t2", t2))
    ]
    first = release(week1, k=3)
    assert shown(first) == {"d", "t2"}
    log = log_entries(week1, first, "2026-W47")
    t2b = t2 | {"new"}
    week2 = [cell("d", None, t0 | t1 | t2b, SCORES)] + [
        cell(n, "d", m, SCORES) for n, m in (("t0", t0), ("t1", t1), ("t2", t2b))
    ]
    second = release(week2, k=3, release_log=log)
    universe = sorted(t0 | t1 | t2b)
    assert not derivable(t0, rows_seen(week2, second, log), universe)
    assert "t1" in suppressed(second)


def test_pairwise_rule_alone_misses_a_moving_complement_which_is_why_the_exact_check_exists() -> None:
    t0, t1, t2 = frozenset({"target"}), people("p", 3), people("q", 4)
    week1 = [cell("d", None, t0 | t1 | t2)] + [cell(n, "d", m) for n, m in (("t0", t0), ("t1", t1), ("t2", t2))]
    log = log_entries(week1, release(week1, k=3), "2026-W47")
    t2b = t2 | {"new"}
    week2 = [cell("d", None, t0 | t1 | t2b)] + [cell(n, "d", m) for n, m in (("t0", t0), ("t1", t1), ("t2", t2b))]
    second = release(week2, k=3, release_log=log, exact_history_check=False)
    universe = sorted(t0 | t1 | t2b)
    assert derivable(t0, rows_seen(week2, second, log), universe)  # d(W47) - t2(W47) - t1(W48)


def test_exact_check_is_skipped_with_a_warning_when_too_big(monkeypatch, caplog) -> None:  # noqa: ANN001
    from shared.domain import anonymity

    monkeypatch.setattr(anonymity, "EXACT_CHECK_LIMIT", 0)
    last = people("a", 6)
    log = [ReleaseLogEntry("2026-W47", last, "team")]
    with caplog.at_level("WARNING", logger="shared.domain.anonymity"):
        released = release(
            [cell("team", None, last | {"new"}), cell("org", None, (last - {"a0"}) | people("b", 5))], release_log=log
        )
    assert released[0].reason is Reason.SMALL_DIFFERENCE  # the pairwise rule still applies
    assert not released[1].suppressed
    assert "skipped" in caplog.text and "a0" not in caplog.text


def test_a_leak_already_in_the_log_does_not_suppress_unrelated_cells() -> None:
    # an older release (say under a smaller k) showed a6-set and a5-set: f is already exposed
    six = people("a", 6)
    log = [ReleaseLogEntry("2025-W01", six), ReleaseLogEntry("2025-W02", six - {"a5"})]
    other = people("x", 7)
    cells = [cell("org", None, six | other), cell("other", "org", other)]
    assert shown(release(cells, release_log=log)) == {"org", "other"}


# ---------------------------------------------------------------- properties


@st.composite
def org_trees(draw, max_team: int = 15):  # noqa: ANN001, ANN201
    """Organisation -> departments -> (optionally) teams, with direct members at any level."""
    k = draw(st.integers(min_value=3, max_value=6))
    counter = itertools.count()
    cells: list[tuple[str, str | None, frozenset[str]]] = []

    def group(size: int) -> frozenset[str]:
        return frozenset(f"u{next(counter)}" for _ in range(size))

    org_members: frozenset[str] = group(draw(st.integers(0, 2)))
    three_levels = draw(st.booleans())
    for d in range(draw(st.integers(1, 4))):
        dept = group(draw(st.integers(0, 3))) if three_levels else group(draw(st.integers(1, max_team)))
        if three_levels:
            for t in range(draw(st.integers(1, 4))):
                team = group(draw(st.integers(1, max_team)))
                cells.append((f"t{d}.{t}", f"d{d}", team))
                dept |= team
        cells.append((f"d{d}", "org", dept))
        org_members |= dept
    cells.append(("org", None, org_members))
    values = {p: draw(st.integers(1, 5)) for p in sorted(org_members)}
    return k, [Cell(g, parent, m, {"pulse_sum": float(sum(values[p] for p in m))}) for g, parent, m in cells]


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(org_trees())
def test_property_no_suppressed_small_cell_or_person_is_derivable(tree) -> None:  # noqa: ANN001
    k, cells = tree
    released = release(cells, k=k)
    universe = sorted(set().union(*(c.people for c in cells)))
    rows = rows_seen(cells, released)
    members = {c.group_id: c.people for c in cells}
    for r in released:
        if r.suppressed:
            assert r.values is None
            target = members[r.group_id]
            assert not (derivable(target, rows, universe) and 0 < len(target) < k), r.group_id
        else:
            assert r.people_count == len(members[r.group_id]) >= k
    # stronger: no single person (nor pair, when k > 2) is isolated by any combination
    if rows:
        matrix = np.array([indicator(r, universe) for r in rows])
        base = np.linalg.matrix_rank(matrix)
        for i in range(len(universe)):
            unit = np.zeros(len(universe))
            unit[i] = 1.0
            assert np.linalg.matrix_rank(np.vstack([matrix, unit])) > base, universe[i]


@st.composite
def overlapping_cells(draw):  # noqa: ANN001, ANN201
    """A small tree plus random overlays (reporting lines, filters) over at most 12 people."""
    k = draw(st.integers(min_value=3, max_value=4))
    n = draw(st.integers(min_value=3, max_value=12))
    everyone = [f"u{i}" for i in range(n)]
    split = draw(st.integers(0, n))
    cells = [
        Cell("org", None, frozenset(everyone)),
        Cell("d0", "org", frozenset(everyone[:split])),
        Cell("d1", "org", frozenset(everyone[split:])),
    ]
    subsets = st.frozensets(st.sampled_from(everyone), min_size=1, max_size=n)
    overlays = [Cell(f"o{i}", None, s) for i, s in enumerate(draw(st.lists(subsets, max_size=4)))]
    return k, everyone, cells, overlays


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(overlapping_cells())
def test_property_overlapping_cells_never_isolate_fewer_than_k_people(case) -> None:  # noqa: ANN001
    k, everyone, cells, overlays = case
    released = release(cells, k=k, overlays=overlays)
    rows = rows_seen([*cells, *overlays], released)
    assert small_support_in_span(rows, everyone, k) is None


@st.composite
def two_weeks(draw):  # noqa: ANN001, ANN201
    """Week 1 tree, then week 2 with people joining, leaving and moving teams."""
    k = draw(st.integers(min_value=3, max_value=5))
    counter = itertools.count()
    teams: dict[tuple[int, int], set[str]] = {}
    for d in range(draw(st.integers(1, 3))):
        for t in range(draw(st.integers(1, 3))):
            teams[(d, t)] = {f"u{next(counter)}" for _ in range(draw(st.integers(1, 9)))}

    def tree(week_teams):  # noqa: ANN001, ANN202
        out, org = [], set()
        for d in sorted({d for d, _ in week_teams}):
            dept = set()
            for (dd, t), members in sorted(week_teams.items()):
                if dd == d:
                    out.append(Cell(f"t{d}.{t}", f"d{d}", frozenset(members)))
                    dept |= members
            out.append(Cell(f"d{d}", "org", frozenset(dept)))
            org |= dept
        return [*out, Cell("org", None, frozenset(org))]

    week1 = tree(teams)
    later = {key: set(members) for key, members in teams.items()}
    keys = sorted(later)
    for _ in range(draw(st.integers(1, 4))):
        key = draw(st.sampled_from(keys))
        action = draw(st.sampled_from(["join", "leave", "move"]))
        if action == "join":
            later[key].add(f"u{next(counter)}")
        elif later[key]:
            person = draw(st.sampled_from(sorted(later[key])))
            later[key].discard(person)
            if action == "move":
                later[draw(st.sampled_from(keys))].add(person)
    return k, week1, tree(later)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(two_weeks())
def test_property_this_week_and_last_week_together_never_isolate_one_or_two_people(case) -> None:  # noqa: ANN001
    k, week1, week2 = case
    first = release(week1, k=k)
    log = log_entries(week1, first, "W1")
    second = release(week2, k=k, release_log=log)
    rows = rows_seen(week2, second, log)
    universe = sorted(set().union(*(c.people for c in [*week1, *week2])))
    assert small_support_in_span(rows, universe, k, max_size=2) is None
    for r, c in zip(second, week2):  # the pairwise rule, exactly as specified
        if not r.suppressed:
            assert all(not 0 < len(c.people ^ e.people) < k for e in log)


def test_plan_is_deterministic_and_independent_of_noise() -> None:
    t1, t2, t3 = people("a", 2), people("b", 6), people("c", 6)
    cells = [cell("d", None, t1 | t2 | t3), cell("t1", "d", t1), cell("t2", "d", t2), cell("t3", "d", t3)]
    plans = {tuple(sorted(suppression_plan(cells).items())) for _ in range(5)}
    assert len(plans) == 1
    assert dict(next(iter(plans)))["t2"] is Reason.PROTECTS_SMALLER_GROUP  # tie broken by group id


# ---------------------------------------------------------------- differential privacy


def test_noise_scale_matches_the_mechanisms() -> None:
    assert noise_scale(1.0, 0.5, "laplace") == pytest.approx(2.0)
    sigma = noise_scale(1.0, 1.0, "gaussian", delta=1e-6)
    rho = 1 / (2 * sigma**2)
    assert rho + 2 * math.sqrt(rho * math.log(1e6)) == pytest.approx(1.0)
    for bad in [dict(sensitivity=0, epsilon=1), dict(sensitivity=1, epsilon=0), dict(sensitivity=1, epsilon=-1)]:
        with pytest.raises(ValueError):
            noise_scale(**bad)
    with pytest.raises(ValueError):
        noise_scale(1, 1, "uniform")  # type: ignore[arg-type]


@pytest.mark.parametrize("mechanism", ["laplace", "gaussian"])
def test_add_noise_with_opendp_is_centred_with_the_right_spread(mechanism: str) -> None:
    draws = [add_noise(10.0, 1.0, 1.0, mechanism) - 10.0 for _ in range(2000)]
    scale = noise_scale(1.0, 1.0, mechanism)
    expected_sd = scale * math.sqrt(2) if mechanism == "laplace" else scale
    assert abs(statistics.fmean(draws)) < 5 * expected_sd / math.sqrt(len(draws))
    assert statistics.stdev(draws) == pytest.approx(expected_sd, rel=0.15)
    assert len(set(draws)) > 1900  # no seed, no repeats


def test_add_noise_with_an_explicit_generator_is_reproducible() -> None:
    first = add_noise(3.0, 1.0, 1.0, "laplace", np.random.default_rng(7))
    again = add_noise(3.0, 1.0, 1.0, "laplace", np.random.default_rng(7))
    assert first == again != 3.0


def test_mean_sensitivity_for_pulse_scores() -> None:
    assert mean_sensitivity(1, 5, 8) == 0.5
    with pytest.raises(ValueError):
        mean_sensitivity(1, 5, 0)


def test_privacy_budget_tracks_each_period_and_refuses_when_exhausted() -> None:
    budget = PrivacyBudget(epsilon_per_period=1.0)
    budget = budget.charge("2026-W48", 0.6)
    assert budget.remaining("2026-W48") == pytest.approx(0.4)
    assert budget.remaining("2026-W49") == 1.0
    with pytest.raises(BudgetExhausted):
        budget.charge("2026-W48", 0.5)
    assert budget.charge("2026-W48", 0.4).remaining("2026-W48") == pytest.approx(0.0)
    with pytest.raises(BudgetExhausted):
        PrivacyBudget(1.0, delta_per_period=1e-6).charge("W", 0.1, delta=1e-5)
    with pytest.raises(ValueError):
        PrivacyBudget(epsilon_per_period=0)


def test_apply_noise_charges_the_worst_persons_loss_and_hides_nothing_new() -> None:
    t1, t2, t3 = people("a", 2), people("b", 6), people("c", 7)
    cells = [cell("d", None, t1 | t2 | t3), cell("t1", "d", t1), cell("t2", "d", t2), cell("t3", "d", t3)]
    released = release(cells)
    # everyone in t3 is in two shown cells (d and t3): 2 cells x 2 measures x 0.1
    assert release_cost(cells, released, 0.1, 2) == pytest.approx(0.4)
    budget = PrivacyBudget(epsilon_per_period=1.0)
    noisy, budget = apply_noise(
        cells, released, sensitivity={"pulse_sum": 5.0}, epsilon_per_value=0.1, budget=budget, period="W48",
        rng=np.random.default_rng(1),
    )
    assert budget.spent_epsilon("W48") == pytest.approx(0.4)
    assert [r.suppressed for r in noisy] == [r.suppressed for r in released]
    assert all(r.values is None for r in noisy if r.suppressed)
    assert by_id(noisy)["t3"].values["pulse_sum"] != by_id(released)["t3"].values["pulse_sum"]
    with pytest.raises(BudgetExhausted):
        apply_noise(cells, released, sensitivity={"pulse_sum": 5.0}, epsilon_per_value=0.2, budget=budget, period="W48")
    with pytest.raises(ValueError, match="pulse_sum"):
        apply_noise(cells, released, sensitivity={}, epsilon_per_value=0.1, budget=budget, period="W49")
