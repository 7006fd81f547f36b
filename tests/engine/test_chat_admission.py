"""Admission of chat turns: a bounded number run, the others wait in arrival order within their deadline."""

from __future__ import annotations

import asyncio
import time

import pytest

from opentier.engine.chat.admission import Admission, auto_turn_limit
from opentier.errors import HostBusyError


async def hold(admission: Admission, name: str, log: list[str], release: asyncio.Event) -> None:
    async with admission.place(10.0):
        log.append(name)
        await release.wait()


async def settle() -> None:
    for _ in range(5):
        await asyncio.sleep(0)


async def test_at_most_the_limit_run_and_the_others_get_their_place_in_arrival_order() -> None:
    admission = Admission(limit=2, max_waiting=100)
    log: list[str] = []
    releases = {name: asyncio.Event() for name in "abcdef"}
    tasks = []
    for name in "abcdef":
        tasks.append(asyncio.ensure_future(hold(admission, name, log, releases[name])))
        await settle()  # arrive one after the other
    assert log == ["a", "b"] and (admission.running, admission.waiting) == (2, 4)

    releases["b"].set()
    await settle()
    assert log == ["a", "b", "c"]
    releases["a"].set()
    releases["c"].set()
    await settle()
    assert log == ["a", "b", "c", "d", "e"] and admission.running == 2
    for release in releases.values():
        release.set()
    await asyncio.gather(*tasks)
    assert log == list("abcdef") and (admission.running, admission.waiting) == (0, 0)


async def test_a_newcomer_does_not_overtake_the_queue_when_a_place_frees() -> None:
    admission = Admission(limit=1, max_waiting=100)
    log: list[str] = []
    first, second, third = asyncio.Event(), asyncio.Event(), asyncio.Event()
    running = asyncio.ensure_future(hold(admission, "first", log, first))
    await settle()
    waiting = asyncio.ensure_future(hold(admission, "second", log, second))
    await settle()
    first.set()  # the place goes to "second" ...
    newcomer = asyncio.ensure_future(hold(admission, "third", log, third))  # ... before this one asks
    await settle()
    assert log == ["first", "second"]
    second.set()
    third.set()
    await asyncio.gather(running, waiting, newcomer)
    assert log == ["first", "second", "third"]


async def test_a_turn_that_waits_past_its_deadline_is_told_the_host_is_busy() -> None:
    admission = Admission(limit=1, max_waiting=100)
    release = asyncio.Event()
    running = asyncio.ensure_future(hold(admission, "a", [], release))
    await settle()
    began = time.monotonic()
    with pytest.raises(HostBusyError) as info:
        async with admission.place(0.2):
            pytest.fail("admitted although the only place was taken")
    assert 0.15 < time.monotonic() - began < 1.0
    error = info.value
    assert error.code == "host_busy" and error.grpc_status == "UNAVAILABLE" and error.retry_after
    assert "chat.max_concurrent_turns" in error.message
    assert admission.waiting == 0  # it left the queue
    release.set()
    await running
    assert admission.running == 0


async def test_a_full_queue_refuses_at_once() -> None:
    admission = Admission(limit=1, max_waiting=1)
    releases = [asyncio.Event(), asyncio.Event()]
    tasks = [asyncio.ensure_future(hold(admission, str(i), [], releases[i])) for i in range(2)]
    await settle()
    assert (admission.running, admission.waiting) == (1, 1)
    began = time.monotonic()
    with pytest.raises(HostBusyError, match=r"chat\.max_queued_turns"):
        async with admission.place(30.0):
            pytest.fail("admitted past a full queue")
    assert time.monotonic() - began < 0.5
    for release in releases:
        release.set()
    await asyncio.gather(*tasks)


async def test_a_waiter_that_is_cancelled_leaves_the_queue_without_taking_a_place() -> None:
    admission = Admission(limit=1, max_waiting=100)
    log: list[str] = []
    first, gone, last = asyncio.Event(), asyncio.Event(), asyncio.Event()
    running = asyncio.ensure_future(hold(admission, "first", log, first))
    await settle()
    cancelled = asyncio.ensure_future(hold(admission, "gone", log, gone))
    behind = asyncio.ensure_future(hold(admission, "last", log, last))
    await settle()
    cancelled.cancel()
    await settle()
    assert admission.waiting == 1
    first.set()
    await settle()
    assert log == ["first", "last"]
    last.set()
    await asyncio.gather(running, behind)
    assert admission.running == 0


async def test_a_place_given_just_as_its_waiter_is_cancelled_goes_to_the_next() -> None:
    admission = Admission(limit=1, max_waiting=100)
    log: list[str] = []
    first, unlucky, last = asyncio.Event(), asyncio.Event(), asyncio.Event()
    running = asyncio.ensure_future(hold(admission, "first", log, first))
    await settle()
    handed = asyncio.ensure_future(hold(admission, "unlucky", log, unlucky))
    behind = asyncio.ensure_future(hold(admission, "last", log, last))
    await settle()
    first.set()
    await running  # the place is handed to "unlucky", which has not run yet ...
    handed.cancel()  # ... and is cancelled before it does
    await settle()
    assert log == ["first", "last"] and admission.running == 1
    last.set()
    await behind
    assert (admission.running, admission.waiting) == (0, 0)


async def test_unless_ends_the_wait_without_a_place() -> None:
    admission = Admission(limit=1, max_waiting=100)
    release, cancel = asyncio.Event(), asyncio.Event()
    running = asyncio.ensure_future(hold(admission, "a", [], release))
    await settle()

    async def cancelled_while_waiting() -> float:
        async with admission.place(30.0, unless=cancel) as waited:
            assert admission.running == 1  # it runs beside the one place's holder, without a place
            return waited

    waiter = asyncio.ensure_future(cancelled_while_waiting())
    await asyncio.sleep(0.1)
    cancel.set()
    waited = await asyncio.wait_for(waiter, 1.0)
    assert 0.05 < waited < 1.0 and (admission.running, admission.waiting) == (1, 0)
    release.set()
    await running
    assert admission.running == 0


def test_the_automatic_limit_follows_the_cpus() -> None:
    assert auto_turn_limit(1) == 8 and auto_turn_limit(4) == 32 and auto_turn_limit() >= 8
