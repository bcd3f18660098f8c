"""LoRA training: the niced subprocess, its parent side, base models and adapter files."""
