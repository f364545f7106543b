"""Datasets, the canonical on-disk format and the Lightning datamodules."""
