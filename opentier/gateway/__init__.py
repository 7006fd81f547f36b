"""The public gateway: identity, limits, routes. It reaches the host only through gRPC, never the engine."""
