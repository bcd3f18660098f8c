"""Building training sets: sources, PII scrub, deduplication, replay, immutable files on disk."""
