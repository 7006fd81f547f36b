"""Chat through the gateway: one turn of a conversation relayed from the host's gRPC ``Chat`` stream.

:mod:`.events` is the event model every transport shares (WebSocket ``/v1/chat/ws``, SSE
``/v1/chat/stream``, the OpenAI-compatible ``/v1/chat/completions``); :mod:`.start` the client's request
to start a turn; :mod:`.turn` runs one turn against the host, with the caller's token quota.
The transports number the events (``seq``) and own their buffers; a turn knows nothing of them.
"""
