"""rails: retrieval with learned similarities (Mixture-of-Logits) on PyTorch Lightning + Hydra.

Importing this package has no side effects; submodules are imported on demand.
"""

__version__ = "0.1.0"
