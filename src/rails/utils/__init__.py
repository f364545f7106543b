"""Small helpers for the Hydra entry points (config checking, instantiation, run output)."""
