"""Request rate limits per API key, per user and per client address, with the ``limits`` library
(contract; implementation pending). Answers over a limit are 429 with ``Retry-After`` and the
``RateLimit-Limit`` / ``RateLimit-Remaining`` / ``RateLimit-Reset`` headers; every limited answer
carries the ``RateLimit-*`` headers of its tightest limit."""
