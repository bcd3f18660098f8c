"""The golden-set regression gate: golden sets, candidate vs production scoring, the report."""
