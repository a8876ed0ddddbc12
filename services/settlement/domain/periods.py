"""Statement periods (day, week from Monday, calendar month) in the business's local time, and statement ids.

China has no daylight saving, so the local time is a fixed offset from UTC (settings: +08:00). Period
bounds are stored and compared as UTC epoch milliseconds.
"""
from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta, timezone

from libs.clock import to_ms
from libs.refusal import NOT_FOUND, Refusal

GRANULARITIES = ("day", "week", "month")


class PeriodError(Refusal):
    """Not a period (or not a statement id): the statement asked for does not exist."""

    default_kind = NOT_FOUND

    def __init__(self, detail: str, code: str = "not-found", **extensions) -> None:
        super().__init__(code, detail, **extensions)


@dataclass(frozen=True)
class Period:
    granularity: str
    start: datetime  # UTC
    end: datetime  # UTC, exclusive
    label: date  # first local day of the period

    @property
    def start_ms(self) -> int:
        return to_ms(self.start)

    @property
    def end_ms(self) -> int:
        return to_ms(self.end)


def period_of(granularity: str, local_day: date, utc_offset_minutes: int) -> Period:
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
    zone = timezone(timedelta(minutes=utc_offset_minutes))
    start = datetime.combine(first, datetime.min.time(), zone).astimezone(UTC)
    end = datetime.combine(last, datetime.min.time(), zone).astimezone(UTC)
    return Period(granularity, start, end, first)


def local_day_of(moment: datetime, utc_offset_minutes: int) -> date:
    return moment.astimezone(timezone(timedelta(minutes=utc_offset_minutes))).date()


def statement_id(account: str, period: Period) -> str:
    return f"stm_{period.granularity}_{period.label:%Y%m%d}_{account}"


def parse_statement_id(statement_id_: str, utc_offset_minutes: int) -> tuple[str, Period]:
    """(account, period) of a statement id; PeriodError when it is not one."""
    parts = statement_id_.split("_", 3)
    if len(parts) != 4 or parts[0] != "stm" or parts[1] not in GRANULARITIES:
        raise PeriodError("not a statement id")
    try:
        label = datetime.strptime(parts[2], "%Y%m%d").date()
    except ValueError:
        raise PeriodError("not a statement id") from None
    period = period_of(parts[1], label, utc_offset_minutes)
    if period.label != label:
        raise PeriodError("the date is not the first day of its period")
    return parts[3], period


def due_for_closing(now: datetime, grace: timedelta, utc_offset_minutes: int) -> list[Period]:
    """The last ended period of each granularity, once it has been over for `grace` (late events and
    corrections land first), for the scheduled closing."""
    local_day = local_day_of(now - grace, utc_offset_minutes)
    due = []
    for granularity in GRANULARITIES:
        current = period_of(granularity, local_day, utc_offset_minutes)
        due.append(period_of(granularity, current.label - timedelta(days=1), utc_offset_minutes))
    return due
