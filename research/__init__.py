"""Batched, fully jitted online RL fine-tuning experiments in JAX."""
