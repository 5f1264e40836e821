"""Pipelines: train from scratch (more to come: transfer, meta)."""
