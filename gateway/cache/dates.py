"""HTTP-dates as RFC 9110 5.6.7 writes them, and nothing else.

A recipient accepts IMF-fixdate (`Sun, 06 Nov 1994 08:49:37 GMT`) and the two obsolete forms, rfc850-date
(`Sunday, 06-Nov-94 08:49:37 GMT`) and asctime-date (`Sun Nov  6 08:49:37 1994`), as their grammar spells them:
case-sensitive names, fixed widths, single spaces, GMT. A lenient parser (the standard library's email date
parser is one) takes many other shapes for dates; here they are invalid, which for `Expires` means "already
expired" (RFC 9111 5.3) and elsewhere "no date".
"""

from __future__ import annotations

import calendar
import datetime
import re
import time

_DAY = rb"(?:Mon|Tue|Wed|Thu|Fri|Sat|Sun)"
_DAY_LONG = rb"(?:Monday|Tuesday|Wednesday|Thursday|Friday|Saturday|Sunday)"
_MONTH_NAMES = (b"Jan", b"Feb", b"Mar", b"Apr", b"May", b"Jun", b"Jul", b"Aug", b"Sep", b"Oct", b"Nov", b"Dec")
_MONTH = b"(" + b"|".join(_MONTH_NAMES) + b")"
_TIME = rb"([0-9]{2}):([0-9]{2}):([0-9]{2})"
# Groups, in every form: day, month, year, hour, minute, second.
_IMF_FIXDATE = re.compile(_DAY + rb", ([0-9]{2}) " + _MONTH + rb" ([0-9]{4}) " + _TIME + rb" GMT")
_RFC850_DATE = re.compile(_DAY_LONG + rb", ([0-9]{2})-" + _MONTH + rb"-([0-9]{2}) " + _TIME + rb" GMT")
_ASCTIME_DATE = re.compile(_DAY + rb" " + _MONTH + rb" ([0-9]{2}| [0-9]) " + _TIME + rb" ([0-9]{4})")
_MONTHS = {name: number for number, name in enumerate(_MONTH_NAMES, start=1)}  # English, not the locale's


def http_date(value: bytes | None) -> float | None:
    """The timestamp an HTTP-date names; None when absent or not one of the three forms (or not a real time)."""
    if not value:
        return None
    value = value.strip(b" \t")
    found = _IMF_FIXDATE.fullmatch(value)
    if found is not None:
        day, month, year, hour, minute, second = found.groups()
        return _timestamp(int(year), month, int(day), hour, minute, second)
    found = _RFC850_DATE.fullmatch(value)
    if found is not None:
        day, month, short_year, hour, minute, second = found.groups()
        return _timestamp(_full_year(int(short_year)), month, int(day), hour, minute, second)
    found = _ASCTIME_DATE.fullmatch(value)
    if found is not None:
        month, day, hour, minute, second, year = found.groups()
        return _timestamp(int(year), month, int(day), hour, minute, second)
    return None


def _full_year(short_year: int) -> int:
    """RFC 9110 5.6.7: a two-digit year that would be more than 50 years in the future is in the past."""
    this_year = time.gmtime().tm_year
    year = this_year - this_year % 100 + short_year
    return year - 100 if year > this_year + 50 else year


def _timestamp(year: int, month: bytes, day: int, hour: bytes, minute: bytes, second: bytes) -> float | None:
    leap = second == b"60"  # a leap second (RFC 5322's second allows it): the next second's instant
    try:
        moment = datetime.datetime(year, _MONTHS[month], day, int(hour), int(minute), 59 if leap else int(second))
    except ValueError:  # 31 Feb, hour 24, minute 60, year 0...
        return None
    return calendar.timegm(moment.timetuple()) + (1.0 if leap else 0.0)
