"""Retrieval: exact and approximate top-k over learned similarities, metrics, and the evaluation callback."""
