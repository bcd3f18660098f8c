"""Judges: LLM rubric and rule judges of sampled traffic, reference metrics, budget, calibration."""
