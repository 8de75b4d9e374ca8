"""Where stream bytes are kept: the ``Storage`` interface and its file implementation."""

from .base import Digest, PartInfo, PartWriter, Storage, StorageError, StorageFull
from .files import FileStorage

__all__ = [
    "Digest",
    "FileStorage",
    "PartInfo",
    "PartWriter",
    "Storage",
    "StorageError",
    "StorageFull",
]
