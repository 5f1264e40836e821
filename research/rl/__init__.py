"""Shared RL pieces: rollout, returns, minibatching, optimisers, networks."""
