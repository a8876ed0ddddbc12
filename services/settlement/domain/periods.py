"""Statement periods (day, week from Monday, calendar month) in the business's local time, and statement ids.

A business day is a calendar day in the business's time zone (settings: an IANA name, Asia/Shanghai by
default), so the day of an instant depends on the zone: 16:30 UTC is already tomorrow in Shanghai. Period
bounds are stored and compared as UTC epoch milliseconds, and every answer carries them as instants beside
the zone's name.
"""
from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta, timezone, tzinfo
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from libs.clock import to_ms
from libs.refusal import NOT_FOUND, Refusal

GRANULARITIES = ("day", "week", "month")
TODAY = "today"  # a `date` parameter meaning the current business day in the business's zone


class PeriodError(Refusal):
    """Not a period (or not a statement id): the statement asked for does not exist."""

    default_kind = NOT_FOUND

    def __init__(self, detail: str, code: str = "not-found", **extensions) -> None:
        super().__init__(code, detail, **extensions)


Zone = tzinfo | str | int  # a tzinfo, an IANA name, or a fixed offset from UTC in minutes


def as_zone(zone: Zone) -> tzinfo:
    if isinstance(zone, tzinfo):
        return zone
    if isinstance(zone, int):
        return timezone(timedelta(minutes=zone))
    try:
        return ZoneInfo(zone)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(f"{zone!r} is not a time zone name (e.g. Asia/Shanghai)") from None


def zone_name(zone: Zone) -> str:
    zone = as_zone(zone)
    return getattr(zone, "key", None) or str(zone)


@dataclass(frozen=True)
class Period:
    granularity: str
    start: datetime  # UTC
    end: datetime  # UTC, exclusive
    label: date  # first local day of the period
    time_zone: str = "UTC"  # the zone whose calendar the period follows

    @property
    def start_ms(self) -> int:
        return to_ms(self.start)

    @property
    def end_ms(self) -> int:
        return to_ms(self.end)


def period_of(granularity: str, local_day: date, zone: Zone) -> Period:
    """The period of `granularity` that contains the local calendar day `local_day`."""
    if granularity == "day":
        first, last = local_day, local_day + timedelta(days=1)
    elif granularity == "week":
        first = local_day - timedelta(days=local_day.weekday())
        last = first + timedelta(days=7)
    elif granularity == "month":
        first = local_day.replace(day=1)
        last = (first + timedelta(days=32)).replace(day=1)
    else:
        raise PeriodError(f"granularity must be one of {GRANULARITIES}, not {granularity!r}")
    local = as_zone(zone)
    start = datetime.combine(first, datetime.min.time(), local).astimezone(UTC)
    end = datetime.combine(last, datetime.min.time(), local).astimezone(UTC)
    return Period(granularity, start, end, first, zone_name(local))


def local_day_of(moment: datetime, zone: Zone) -> date:
    """The business day (local calendar day in `zone`) that contains the instant `moment`."""
    return moment.astimezone(as_zone(zone)).date()


def statement_id(account: str, period: Period) -> str:
    return f"stm_{period.granularity}_{period.label:%Y%m%d}_{account}"


def parse_statement_id(statement_id_: str, zone: Zone) -> tuple[str, Period]:
    """(account, period) of a statement id; PeriodError when it is not one."""
    parts = statement_id_.split("_", 3)
    if len(parts) != 4 or parts[0] != "stm" or parts[1] not in GRANULARITIES:
        raise PeriodError("not a statement id")
    try:
        label = datetime.strptime(parts[2], "%Y%m%d").date()
    except ValueError:
        raise PeriodError("not a statement id") from None
    period = period_of(parts[1], label, zone)
    if period.label != label:
        raise PeriodError("the date is not the first day of its period")
    return parts[3], period


def due_for_closing(now: datetime, grace: timedelta, zone: Zone) -> list[Period]:
    """The last ended period of each granularity, once it has been over for `grace` (late events and
    corrections land first), for the scheduled closing."""
    local_day = local_day_of(now - grace, zone)
    due = []
    for granularity in GRANULARITIES:
        current = period_of(granularity, local_day, zone)
        due.append(period_of(granularity, current.label - timedelta(days=1), zone))
    return due
