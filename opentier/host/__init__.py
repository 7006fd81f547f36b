"""The gRPC intelligence host: thin servicers in front of the engine."""
