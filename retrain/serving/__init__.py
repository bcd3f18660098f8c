"""Shipping adapters: vLLM's admin API, the alias switch and reconcile, the post-deploy guard."""
