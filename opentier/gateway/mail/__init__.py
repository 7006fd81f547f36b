"""Gateway e-mail: templates (plain text and HTML, overridable), an outbox that sends in the background
with retries, SMTP or the log as transport, and the flows that mail single-use links (password reset).

See docs/email.md. The mail objects of an app live in ``gateway_state().extras`` while it serves.
"""

from __future__ import annotations
