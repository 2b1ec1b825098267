"""Calendar time for the time-split recipes: time zones, ISO instants, local midnights,
day shifts that keep the wall clock across DST. Inside a recipe time is Int64 ms."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from bench.errors import ConfigError

MS_PER_DAY = 86_400_000


def zone(tz: str) -> ZoneInfo:
    try:
        return ZoneInfo(tz)
    except (ZoneInfoNotFoundError, ValueError):
        raise ConfigError(
            f"unknown time zone {tz!r}",
            option="--param tz",
            hint="use an IANA name such as UTC or Asia/Shanghai",
        ) from None


def parse_instant(text: str, tz: str, option: str) -> datetime:
    """ISO date or date-time; without an offset it is read in `tz`."""
    try:
        value = datetime.fromisoformat(text)
    except ValueError:
        raise ConfigError(
            f"cannot read {text!r} as a date or date-time",
            option=f"--param {option}",
            hint="write ISO 8601, e.g. 2017-11-25T00:00:00+08:00",
        ) from None
    if value.tzinfo is None:
        value = value.replace(tzinfo=zone(tz))
    return value


def to_ms(value: datetime) -> int:
    return int(value.timestamp() * 1000)


def day_after(ts_ms: int, tz: str) -> datetime:
    """Local midnight that ends the day (in `tz`) holding the instant `ts_ms`."""
    local = datetime.fromtimestamp(ts_ms / 1000, UTC).astimezone(zone(tz))
    midnight = datetime(local.year, local.month, local.day, tzinfo=zone(tz))
    return shift_days(midnight, 1, tz)


def shift_days(moment: datetime, days: int, tz: str) -> datetime:
    """`moment` moved by `days` calendar days in `tz`, wall clock kept (DST-safe)."""
    local = moment.astimezone(zone(tz)).replace(tzinfo=None) + timedelta(days=days)
    return local.replace(tzinfo=zone(tz))


def iso(ms: int, tz: str) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).astimezone(zone(tz)).isoformat()
