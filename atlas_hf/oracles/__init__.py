"""Oracles that choose the critical steps of trajectories."""
