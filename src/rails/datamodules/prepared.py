"""PreparedDataModule: the part every rails datamodule shares: a dataset source prepared under a data root once,
loaded lazily, and the global training batch divided by the world size."""

from __future__ import annotations

import os
from abc import abstractmethod
from pathlib import Path
from typing import Any

import lightning as L

from rails.datamodules.canonical import DatasetSource
from rails.datamodules.samplers import per_device_batch_size


class PreparedDataModule(L.LightningDataModule):
    """Base of the datamodules over a dataset source (``prepare(root) -> Path``).

    ``prepare_data`` (rank zero) prepares the source; ``setup`` prepares it again (a cache hit), hands the
    directory to :meth:`load` once and sets the per-device batch size (``batch_size // world size``).

    Args:
        source: produces the dataset directory (cached by the source).
        root: data root; None = ``RAILS_DATA_DIR``, else ``data``.
        batch_size: global training batch size.
    """

    def __init__(self, source: DatasetSource, root: str | None, batch_size: int) -> None:
        super().__init__()
        self.source = source
        self.root = root
        self.batch_size = batch_size
        self.data: Any = None
        self.data_dir: Path | None = None
        self._per_device_batch_size = batch_size

    @abstractmethod
    def load(self, directory: Path) -> Any:
        """Read the prepared directory into what the loaders use (stored as ``self.data``)."""

    def _root(self) -> Path:
        return Path(self.root or os.environ.get("RAILS_DATA_DIR") or "data").expanduser()

    def prepare_data(self) -> None:
        """Download/generate and preprocess once (rank zero only, cached by the source)."""
        self.source.prepare(self._root())

    def setup(self, stage: str | None = None) -> None:
        if self.data is None:
            self.data_dir = self.source.prepare(self._root())
            self.data = self.load(self.data_dir)
        self._per_device_batch_size = per_device_batch_size(self.batch_size, self.trainer)

    def _require_data(self) -> Any:
        if self.data is None:
            self.setup()
        assert self.data is not None
        return self.data
