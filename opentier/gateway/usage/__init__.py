"""Usage and cost reports over the token usage ledger (docs/usage-reports.md)."""
