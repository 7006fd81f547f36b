"""Readers for judged retrieval collections (evaluation and benchmarks)."""
