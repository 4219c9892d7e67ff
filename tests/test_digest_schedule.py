"""Digest scheduling: local weekday/hour in IANA timezones to UTC, DST, send window, quiet days."""
from __future__ import annotations

from datetime import date, datetime, timezone

import pytest

from shared.domain.digest_schedule import (
    SendWindow,
    current_week,
    due_at,
    is_due,
    iso_week_of,
    parse_iso_week,
    shift_week,
    weeks_due,
)


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=timezone.utc)


def test_default_is_monday_nine_local() -> None:
    # 2026-W48 starts Monday 23 November 2026; London is on GMT then.
    assert due_at("2026-W48", "Europe/London") == utc(2026, 11, 23, 9)


def test_auckland_is_due_on_sunday_evening_utc() -> None:
    # NZDT is UTC+13 in November: Monday 09:00 local is Sunday 20:00 UTC of the previous ISO week.
    assert due_at("2026-W48", "Pacific/Auckland") == utc(2026, 11, 22, 20)
    assert not is_due(utc(2026, 11, 22, 19, 59), "2026-W48", "Pacific/Auckland")
    assert is_due(utc(2026, 11, 22, 20, 0), "2026-W48", "Pacific/Auckland")
    # At that instant it is still ISO week 47 in UTC, but week 48 is the one due in Auckland.
    assert current_week(utc(2026, 11, 22, 20, 5), "Pacific/Auckland") == "2026-W48"


def test_los_angeles_is_due_in_the_afternoon_utc() -> None:
    assert due_at("2026-W48", "America/Los_Angeles") == utc(2026, 11, 23, 17)  # PST, UTC-8
    assert current_week(utc(2026, 11, 23, 16, 59), "America/Los_Angeles") is None  # W47 was due a week ago
    assert current_week(utc(2026, 11, 23, 16, 59), "America/Los_Angeles", max_lateness=None) == "2026-W47"
    assert current_week(utc(2026, 11, 23, 17, 0), "America/Los_Angeles") == "2026-W48"


def test_london_spring_forward_week() -> None:
    # 2026-W13: clocks go from 01:00 GMT to 02:00 BST on Sunday 29 March.
    assert due_at("2026-W13", "Europe/London") == utc(2026, 3, 23, 9)   # Monday, still GMT
    assert due_at("2026-W14", "Europe/London") == utc(2026, 3, 30, 8)   # next Monday, BST
    # 01:00 local on the switch day does not exist: it moves forward to 02:00 BST = 01:00 UTC.
    assert due_at("2026-W13", "Europe/London", weekday=6, hour=1) == utc(2026, 3, 29, 1)
    assert due_at("2026-W13", "Europe/London", weekday=6, hour=2) == utc(2026, 3, 29, 1)
    assert due_at("2026-W13", "Europe/London", weekday=6, hour=3) == utc(2026, 3, 29, 2)


def test_los_angeles_fall_back_weeks() -> None:
    # PDT ends Sunday 1 November 2026 (the last day of 2026-W44): 01:00-01:59 happens twice.
    assert due_at("2026-W44", "America/Los_Angeles") == utc(2026, 10, 26, 16)  # Monday, PDT
    assert due_at("2026-W44", "America/Los_Angeles", weekday=6, hour=1) == utc(2026, 11, 1, 8)  # first 01:00 (PDT)
    assert due_at("2026-W45", "America/Los_Angeles") == utc(2026, 11, 2, 17)  # Monday, PST
    assert is_due(utc(2026, 11, 2, 17), "2026-W45", "America/Los_Angeles")
    assert not is_due(utc(2026, 11, 2, 16, 30), "2026-W45", "America/Los_Angeles")


def test_send_window_moves_late_night_and_weekend_mail() -> None:
    office = SendWindow(weekdays=frozenset(range(5)), start_hour=8, end_hour=18)
    # Preferred Monday 06:00 -> 08:00 the same day.
    assert due_at("2026-W48", "Europe/Berlin", 0, 6, office) == utc(2026, 11, 23, 7)
    # Preferred Friday 20:00 -> past the window, the weekend is closed: Monday 08:00 of the next week.
    assert due_at("2026-W48", "Europe/Berlin", 4, 20, office) == utc(2026, 11, 30, 7)
    # Preferred Saturday 10:00 -> Monday 08:00.
    assert due_at("2026-W48", "Europe/Berlin", 5, 10, office) == utc(2026, 11, 30, 7)
    # A week-48 digest pushed into week 49 stays the current one until it is due.
    assert current_week(utc(2026, 11, 29, 12), "Europe/Berlin", 5, 10, office, max_lateness=None) == "2026-W47"
    assert current_week(utc(2026, 11, 30, 7, 1), "Europe/Berlin", 5, 10, office) == "2026-W48"


def test_quiet_day_moves_to_next_allowed_day() -> None:
    window = SendWindow(weekdays=frozenset(range(5)), start_hour=8, end_hour=18, quiet_days=frozenset({date(2026, 11, 23)}))
    assert due_at("2026-W48", "Europe/London", window=window) == utc(2026, 11, 24, 8)
    everything_quiet = SendWindow(weekdays=frozenset({0}), quiet_days=frozenset({date(2026, 11, 23), date(2026, 11, 30)}))
    assert due_at("2026-W48", "Europe/London", window=everything_quiet) is None


def test_window_validation_and_week_parsing() -> None:
    with pytest.raises(ValueError):
        SendWindow(weekdays=frozenset())
    with pytest.raises(ValueError):
        SendWindow(start_hour=18, end_hour=8)
    assert parse_iso_week("2026-W53") == (2026, 53)
    with pytest.raises(ValueError):
        parse_iso_week("2025-W53")  # 2025 has 52 ISO weeks
    with pytest.raises(ValueError):
        parse_iso_week("2026-48")
    assert shift_week("2026-W01", -1) == "2025-W52"
    assert iso_week_of(date(2027, 1, 1)) == "2026-W53"


def test_weeks_due_groups_distinct_preferences() -> None:
    now = utc(2026, 11, 23, 9, 30)
    combos = [("Europe/London", 0, 9), ("Pacific/Auckland", 0, 9), ("America/Los_Angeles", 0, 9), ("Europe/London", 6, 10)]
    grouped = weeks_due(now, combos)
    assert sorted(grouped["2026-W48"]) == [("Europe/London", 0, 9), ("Pacific/Auckland", 0, 9)]
    # Sunday 10:00 London was 23.5 hours ago: still due; Los Angeles' week-47 digest was due a week ago: not.
    assert grouped["2026-W47"] == [("Europe/London", 6, 10)]
    assert sorted(weeks_due(now, combos, max_lateness=None)["2026-W47"]) == [("America/Los_Angeles", 0, 9), ("Europe/London", 6, 10)]


def test_a_week_is_only_created_within_a_day_of_its_due_time() -> None:
    assert current_week(utc(2026, 11, 24, 8, 59), "Europe/London") == "2026-W48"
    assert current_week(utc(2026, 11, 24, 9, 0), "Europe/London") is None
