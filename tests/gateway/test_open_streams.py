"""The registry of open streams remembers callers found live, and forgets them when an admin
operation of this gateway ends their access (so the next turn on an open WebSocket checks again)."""

from __future__ import annotations

from opentier.gateway.chat.revocation import ACCOUNT_DISABLED, Ending, OpenStreams
from opentier.gateway.principal import ROLE_SCOPES, Principal


def principal(user: str) -> Principal:
    return Principal(tenant_id="t1", user_id=user, role="member", scopes=ROLE_SCOPES["member"])


def test_a_caller_found_live_is_remembered_until_its_access_is_ended() -> None:
    streams = OpenStreams()
    ada, bob = principal("ada"), principal("bob")
    streams.seen_live(ada)
    streams.seen_live(bob)
    assert streams.live_within(ada, 5.0) and streams.live_within(bob, 5.0)
    assert not streams.live_within(ada, 0.0), "a confirmation older than the window does not count"
    with streams.track(ada) as running:
        assert streams.end(Ending(ACCOUNT_DISABLED, "disabled"), user_id="ada") == 1
        assert running.ended.is_set() and running.ending is not None
        assert running.ending.code == ACCOUNT_DISABLED
    assert not streams.live_within(ada, 5.0), "ada must be checked again before her next turn"
    assert streams.live_within(bob, 5.0), "bob is untouched"
