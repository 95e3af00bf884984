"""HTTP-dates (RFC 9110 5.6.7): the three forms as their grammar writes them, and nothing else (issue 30)."""

from __future__ import annotations

import time

import pytest

from gateway.cache.dates import http_date

NOV_6_1994 = 784111777.0  # Sun, 06 Nov 1994 08:49:37 GMT

VALID = [
    (b"Sun, 06 Nov 1994 08:49:37 GMT", NOV_6_1994),  # IMF-fixdate
    (b"Sunday, 06-Nov-94 08:49:37 GMT", NOV_6_1994),  # rfc850-date
    (b"Sun Nov  6 08:49:37 1994", NOV_6_1994),  # asctime-date, a one-digit day after a space
    (b"Sun Nov 06 08:49:37 1994", NOV_6_1994),  # asctime-date, two digits
    (b" Sun, 06 Nov 1994 08:49:37 GMT\t", NOV_6_1994),  # surrounding whitespace is the field's, not the date's
    (b"Thu, 01 Jan 1970 00:00:00 GMT", 0.0),
    (b"Tue, 29 Feb 2028 23:59:59 GMT", 1835481599.0),  # a leap day
    (b"Sat, 31 Dec 2016 23:59:60 GMT", 1483228800.0),  # a leap second: the next second's instant
    (b"Mon, 06 Nov 1994 08:49:37 GMT", NOV_6_1994),  # the day name is not checked against the date
]

INVALID = [
    b"",
    b"Sun, 06 Nov 1994 08:49:37 gmt",  # GMT is case-sensitive
    b"Sun, 06 Nov 1994 08:49:37 UTC",
    b"Sun, 06 Nov 1994 08:49:37 +0000",  # the email forms
    b"Sun, 06 Nov 1994 08:49:37",  # no zone
    b"sun, 06 Nov 1994 08:49:37 GMT",  # day names are case-sensitive
    b"Sun, 06 nov 1994 08:49:37 GMT",  # and month names
    b"Sun 06 Nov 1994 08:49:37 GMT",  # no comma
    b"Sun, 6 Nov 1994 08:49:37 GMT",  # a one-digit day in IMF-fixdate
    b"Sun, 06 Nov 94 08:49:37 GMT",  # a two-digit year in IMF-fixdate
    b"Sun,  06 Nov 1994 08:49:37 GMT",  # two spaces
    b"Sun, 06 Nov 1994 8:49:37 GMT",  # a one-digit hour
    b"Sun, 06 Nov 1994 08:49 GMT",  # no seconds
    b"Sun, 06 Nov 1994 08:49:37 GMT junk",
    b"Sun, 06 November 1994 08:49:37 GMT",
    b"Sunday, 06 Nov 1994 08:49:37 GMT",  # a long day name in IMF-fixdate
    b"Sun, 06-Nov-94 08:49:37 GMT",  # a short day name in rfc850-date
    b"Sunday, 06-Nov-1994 08:49:37 GMT",  # a four-digit year in rfc850-date
    b"Sun Nov 6 08:49:37 1994",  # asctime's one-digit day needs its space
    b"Sun Nov  6 08:49:37 1994 GMT",  # asctime has no zone
    b"Sun Nov  6 08:49:37 94",
    b"Sun, 31 Feb 1994 08:49:37 GMT",  # no such day
    b"Sun, 06 Nov 1994 24:00:00 GMT",  # no such hour
    b"Sun, 06 Nov 1994 08:60:00 GMT",
    b"Sun, 06 Nov 1994 08:49:61 GMT",
    b"Sun, 06 Nov 0000 08:49:37 GMT",
    "Sun, \u0660\u0666 Nov 1994 08:49:37 GMT".encode(),  # Arabic-Indic digits are not DIGIT
    b"1994-11-06T08:49:37Z",  # ISO 8601
    b"784111777",
    b"yesterday",
    b"-1",
]


@pytest.mark.parametrize(("value", "timestamp"), VALID)
def test_the_three_forms_are_read(value: bytes, timestamp: float) -> None:
    assert http_date(value) == timestamp


@pytest.mark.parametrize("value", INVALID)
def test_anything_else_is_no_date(value: bytes) -> None:
    assert http_date(value) is None


def test_a_two_digit_year_more_than_50_years_ahead_is_in_the_past() -> None:
    this_year = time.gmtime().tm_year
    near, far = (this_year + 10) % 100, (this_year + 60) % 100
    assert time.gmtime(http_date(b"Sunday, 01-Jan-%02d 00:00:00 GMT" % near)).tm_year == this_year + 10
    assert time.gmtime(http_date(b"Sunday, 01-Jan-%02d 00:00:00 GMT" % far)).tm_year == this_year + 60 - 100
