"""Gateway e-mail: templates (plain text and HTML, overridable), an outbox that sends in the background
with retries, SMTP or the log as transport, the flows that mail single-use links (password reset,
invitations, address verification) and the notices (a new API key, a used-up token quota).

See docs/email.md. The mail objects of an app live in ``gateway_state().extras`` while it serves.
"""

from __future__ import annotations
