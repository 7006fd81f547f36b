"""What protects the platform and its budget: request rate limits (:mod:`.rates`) and token quotas
(:mod:`.quotas`), both configured in the ``[limits]`` section and set per tenant and per user by admins
(:mod:`.overrides`), the body size limits per route (:mod:`.bodies`), the ``limits`` storage they share
with the login throttle (:mod:`.storage`), and how they appear in the OpenAPI document
(:mod:`.openapi`). See docs/limits.md."""
