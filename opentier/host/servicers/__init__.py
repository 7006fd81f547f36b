"""gRPC servicers: thin adapters between the generated contract and the core/engine."""
