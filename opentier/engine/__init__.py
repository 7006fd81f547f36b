"""The intelligence engine: ingestion, retrieval and chat orchestration. Only the host imports it."""
