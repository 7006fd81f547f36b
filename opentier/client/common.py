"""Small pieces both clients share: defaults, the base URL, answers' bodies, job polling."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any, Literal

import httpx

from opentier.client.models import Job

#: Seconds a REST call may take (connecting: at most 10).
DEFAULT_TIMEOUT = 30.0
ChatTransport = Literal["websocket", "sse"]
#: Called with each state of a job read while waiting for it.
JobProgressCallback = Callable[[Job], None]
#: First wait between two reads of a job; it doubles up to the poll interval.
FIRST_POLL_SECONDS = 0.05


def user_agent() -> str:
    from opentier import __version__

    return f"opentier-client/{__version__}"


def base_url_of(url: str) -> str:
    """The gateway's URL without a trailing slash; refuses what is not http(s)."""
    url = url.strip().rstrip("/")
    if not url.startswith(("http://", "https://")):
        raise ValueError(f"the gateway URL must start with http:// or https://, not {url!r}")
    return url


def decode_body(response: httpx.Response) -> Any:
    """The JSON of an answer; ``None`` for an empty one (204), the text for one that is not JSON."""
    if not response.content:
        return None
    try:
        return response.json()
    except (json.JSONDecodeError, UnicodeDecodeError):
        return response.text


def job_id_of(job: Job | str) -> str:
    return job.id if isinstance(job, Job) else job


def next_poll(previous: float | None, interval: float) -> float:
    """The next wait between two reads of a job: short at first (small jobs finish fast), then
    ``interval``."""
    if previous is None:
        return min(FIRST_POLL_SECONDS, interval)
    return min(previous * 2, interval)
