"""What protects the platform and its budget: request rate limits (:mod:`.rates`) and token quotas
(:mod:`.quotas`), both configured in the ``[limits]`` section."""
