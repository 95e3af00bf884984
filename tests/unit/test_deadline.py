"""Deadline: one lazily re-armed timer per owner, on a manual clock."""

from __future__ import annotations

import asyncio
import heapq
import itertools
from collections.abc import Callable
from typing import Any, cast

import pytest

from gateway.edge.deadline import Deadline


class ManualLoop:
    """The two loop methods a Deadline uses, on a clock the test moves; counts the timers armed."""

    def __init__(self) -> None:
        self.now = 0.0
        self.armed = 0
        self._timers: list[tuple[float, int, Timer]] = []
        self._order = itertools.count()

    def time(self) -> float:
        return self.now

    def call_at(self, when: float, callback: Callable[[], Any]) -> Timer:
        self.armed += 1
        timer = Timer(callback)
        heapq.heappush(self._timers, (when, next(self._order), timer))
        return timer

    def advance(self, seconds: float) -> None:
        end = self.now + seconds
        while self._timers and self._timers[0][0] <= end:
            when, _, timer = heapq.heappop(self._timers)
            self.now = max(self.now, when)
            if not timer.cancelled:
                timer.callback()
        self.now = end

    def pending(self) -> int:
        return sum(not timer.cancelled for _, _, timer in self._timers)


class Timer:
    def __init__(self, callback: Callable[[], Any]) -> None:
        self.callback = callback
        self.cancelled = False

    def cancel(self) -> None:
        self.cancelled = True


def deadline_on(loop: ManualLoop) -> tuple[Deadline, list[float]]:
    expired: list[float] = []
    return Deadline(cast(asyncio.AbstractEventLoop, loop), lambda: expired.append(loop.now)), expired


def test_it_expires_once_at_the_time_set() -> None:
    loop = ManualLoop()
    deadline, expired = deadline_on(loop)
    deadline.set(5)
    loop.advance(4.9)
    assert expired == []
    loop.advance(10)
    assert expired == [5]


def test_a_cleared_deadline_does_not_expire() -> None:
    loop = ManualLoop()
    deadline, expired = deadline_on(loop)
    deadline.set(5)
    deadline.clear()
    loop.advance(60)
    assert expired == []
    assert loop.pending() == 0  # the timer fired, found no deadline, and did not arm again


def test_setting_it_later_on_every_request_arms_no_new_timer_until_the_old_one_fires() -> None:
    loop = ManualLoop()
    deadline, expired = deadline_on(loop)
    for _ in range(1000):  # a request every millisecond for a second, each setting and clearing it
        deadline.set(30)
        loop.advance(0.0005)
        deadline.clear()
        loop.advance(0.0005)
    assert loop.armed == 1
    deadline.set(30)  # now at t=1: expires at 31, after the first timer (30) fired and re-armed once
    loop.advance(29.5)
    assert expired == []
    loop.advance(1)
    assert expired == [pytest.approx(31)]
    assert loop.armed == 2


def test_an_earlier_deadline_than_the_armed_timer_arms_its_own() -> None:
    loop = ManualLoop()
    deadline, expired = deadline_on(loop)
    deadline.set(30)
    deadline.clear()
    deadline.set(2)  # a shorter timeout on the next exchange
    loop.advance(3)
    assert expired == [2]
    assert loop.pending() == 0  # the 30 s timer went with it


def test_cancel_leaves_no_timer_holding_the_owner() -> None:
    loop = ManualLoop()
    deadline, expired = deadline_on(loop)
    deadline.set(5)
    deadline.cancel()
    assert loop.pending() == 0
    loop.advance(10)
    assert expired == []
