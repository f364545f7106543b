"""Hydra sweepers shipped with rails (Hydra discovers plugins only under the ``hydra_plugins`` namespace)."""
