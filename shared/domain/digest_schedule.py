"""When is an employee's weekly digest due? Pure functions, no database.

An employee chooses a local weekday (0 = Monday) and hour (default Monday 09:00) in
their IANA timezone. The organisation may restrict sending to a window (allowed
weekdays and local hours, e.g. no weekend or late-night mail) and name quiet days
(holidays, as local dates). The digest for ISO week W is due at the first allowed
local hour at or after the employee's preferred slot in that week, converted to UTC
with zoneinfo:

* a local time that does not exist (the spring-forward gap) moves forward by the gap
  (01:00 on the day clocks jump from 01:00 to 02:00 is sent at 02:00 local);
* an ambiguous local time (the autumn fall-back hour) takes the first occurrence.

Both are what zoneinfo does for ``fold=0``; the tests pin it down.
"""
from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta, timezone
from functools import lru_cache
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

ISO_WEEK_RE = re.compile(r"^(\d{4})-W(\d{2})$")
DEFAULT_WEEKDAY = 0
DEFAULT_HOUR = 9
# How far past the preferred slot a window may push a digest before it is never due.
_SEARCH_DAYS = 14
# A due-check creates a week's digest only this long after it became due: an employee
# added on a Wednesday gets next Monday's digest, not last Monday's on Wednesday. (Sends
# already created are never dropped; an HR admin can always start a run by hand.)
MAX_LATENESS = timedelta(hours=24)


@dataclass(frozen=True)
class SendWindow:
    """The organisation's rules, in the recipient's local time. ``end_hour`` is
    exclusive: start 8, end 18 allows 08:00 to 17:xx."""

    weekdays: frozenset[int] = frozenset(range(7))
    start_hour: int = 0
    end_hour: int = 24
    quiet_days: frozenset[date] = field(default_factory=frozenset)

    def __post_init__(self) -> None:
        if not self.weekdays or not set(self.weekdays) <= set(range(7)):
            raise ValueError("weekdays must be a non-empty subset of 0..6")
        if not 0 <= self.start_hour < self.end_hour <= 24:
            raise ValueError("need 0 <= start_hour < end_hour <= 24")

    def allows_day(self, day: date) -> bool:
        return day.weekday() in self.weekdays and day not in self.quiet_days


ALWAYS = SendWindow()


def parse_iso_week(value: str) -> tuple[int, int]:
    """``"2026-W48"`` -> (2026, 48); ValueError for anything else (incl. week 53 of a 52-week year)."""
    match = ISO_WEEK_RE.match(value or "")
    if not match:
        raise ValueError(f"not an ISO week like 2026-W48: {value!r}")
    year, week = int(match.group(1)), int(match.group(2))
    date.fromisocalendar(year, week, 1)  # raises ValueError for a week the year does not have
    return year, week


def format_iso_week(year: int, week: int) -> str:
    return f"{year:04d}-W{week:02d}"


def iso_week_of(day: date) -> str:
    year, week, _ = day.isocalendar()
    return format_iso_week(year, week)


def week_start(iso_week: str) -> date:
    """The Monday of an ISO week."""
    return date.fromisocalendar(*parse_iso_week(iso_week), 1)


def shift_week(iso_week: str, weeks: int) -> str:
    return iso_week_of(week_start(iso_week) + timedelta(weeks=weeks))


@lru_cache(maxsize=1024)
def zone(name: str) -> ZoneInfo:
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        return ZoneInfo("UTC")


def _to_utc(local: datetime, tz: ZoneInfo) -> datetime:
    # fold=0: a nonexistent time is read with the offset in force before the gap
    # (so it lands after it), an ambiguous one as its first occurrence.
    return local.replace(tzinfo=tz, fold=0).astimezone(timezone.utc)


def due_at(iso_week: str, tz_name: str, weekday: int = DEFAULT_WEEKDAY, hour: int = DEFAULT_HOUR,
           window: SendWindow = ALWAYS) -> datetime | None:
    """The UTC instant the digest for ``iso_week`` is due, or None if the window and
    quiet days leave no slot within two weeks of the preferred one."""
    weekday = weekday if 0 <= weekday <= 6 else DEFAULT_WEEKDAY
    hour = hour if 0 <= hour <= 23 else DEFAULT_HOUR
    tz = zone(tz_name)
    day = week_start(iso_week) + timedelta(days=weekday)
    for _ in range(_SEARCH_DAYS):
        if window.allows_day(day):
            slot = max(hour, window.start_hour)
            if slot < window.end_hour:
                return _to_utc(datetime.combine(day, time(slot)), tz)
        day += timedelta(days=1)
        hour = window.start_hour
    return None


def is_due(now: datetime, iso_week: str, tz_name: str, weekday: int = DEFAULT_WEEKDAY, hour: int = DEFAULT_HOUR,
           window: SendWindow = ALWAYS) -> bool:
    due = due_at(iso_week, tz_name, weekday, hour, window)
    return due is not None and due <= now


def current_week(now: datetime, tz_name: str, weekday: int = DEFAULT_WEEKDAY, hour: int = DEFAULT_HOUR,
                 window: SendWindow = ALWAYS, max_lateness: timedelta | None = MAX_LATENESS) -> str | None:
    """The ISO week a due-check should create sends for at ``now``: the latest week
    whose digest is due, if it became due less than ``max_lateness`` ago (None: no
    limit). A digest pushed past its week's end by the window stays the current one
    until the next week's is due."""
    local_today = now.astimezone(zone(tz_name)).date()
    week = iso_week_of(local_today)
    for back in range(3):
        candidate = shift_week(week, -back)
        due = due_at(candidate, tz_name, weekday, hour, window)
        if due is not None and due <= now:
            if max_lateness is not None and now - due >= max_lateness:
                return None
            return candidate
    return None


def weeks_due(now: datetime, combos: Iterable[tuple[str, int, int]], window: SendWindow = ALWAYS,
              max_lateness: timedelta | None = MAX_LATENESS) -> dict[str, list[tuple[str, int, int]]]:
    """Group (timezone, weekday, hour) preferences by the week currently due for them
    (combinations with nothing due are left out). Called once per distinct combination,
    never per employee."""
    grouped: dict[str, list[tuple[str, int, int]]] = {}
    for combo in combos:
        week = current_week(now, *combo, window=window, max_lateness=max_lateness)
        if week is not None:
            grouped.setdefault(week, []).append(combo)
    return grouped
