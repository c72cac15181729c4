"""Where a converger keeps models.config and its last-known-good copy.

`FileConfigStore` is the real one (atomic writes, `config_file`); `MemoryConfigStore` keeps the
texts in memory, for tests of a converger that need no files.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from reconciler.config_file import (
    LAST_KNOWN_GOOD,
    read_text,
    remove_stale_temps,
    save_last_known_good,
    write_atomic,
)


class ConfigStore(Protocol):
    """models.config of one TFS, and the copy of what served before an apply."""

    @property
    def path(self) -> Path:
        """The file TFS reads (named in messages)."""

    @property
    def last_known_good_path(self) -> Path:
        """Where the last-known-good copy is kept (named in messages)."""

    def read(self) -> str | None:
        """The config's text, None when there is none."""

    def write(self, text: str) -> bool:
        """Replace the config with `text` whole, or raise OSError and leave it as it was;
        False when it already held `text`."""

    def save_last_known_good(self, text: str) -> None:
        """Keep `text` as the config to roll back to; OSError when it cannot."""

    def remove_stale_temps(self) -> None:
        """Remove what a write killed half-way left behind (the caller holds the lock)."""


@dataclass(frozen=True)
class FileConfigStore:
    path: Path
    state_dir: Path

    @property
    def last_known_good_path(self) -> Path:
        return self.state_dir / LAST_KNOWN_GOOD

    def read(self) -> str | None:
        return read_text(self.path)

    def write(self, text: str) -> bool:
        return write_atomic(self.path, text)

    def save_last_known_good(self, text: str) -> None:
        save_last_known_good(self.state_dir, text)

    def remove_stale_temps(self) -> None:
        remove_stale_temps(self.path)
        remove_stale_temps(self.last_known_good_path)


@dataclass
class MemoryConfigStore:
    """A ConfigStore in memory; `writes` lists every text written, in order."""

    text: str | None = None
    last_known_good: str | None = None
    path: Path = Path("models.config")
    last_known_good_path: Path = Path(".tfs-reconciler") / LAST_KNOWN_GOOD
    writes: list[str] = field(default_factory=list)

    def read(self) -> str | None:
        return self.text

    def write(self, text: str) -> bool:
        self.writes.append(text)
        if self.text == text:
            return False
        self.text = text
        return True

    def save_last_known_good(self, text: str) -> None:
        self.last_known_good = text

    def remove_stale_temps(self) -> None:
        return None
