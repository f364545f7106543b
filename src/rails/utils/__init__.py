"""Temporary: re-export shims of modules that moved (rails.checks, rails.config, rails.runs.checkpoints) for the
files that still import them from here; removed at the end of #15."""
