"""The data directory's lock file is never someone else's file (issue item 8)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from pipeline.errors import StoreError, SymlinkRefusedError
from pipeline.lock import LOCK_NAME, exclusive_lock


def test_a_lock_file_hard_linked_to_another_file_is_refused(data_dir: Path, tmp_path: Path) -> None:
    outside = tmp_path / "precious.txt"
    outside.write_text("someone else's data\n")
    data_dir.mkdir()
    os.link(outside, data_dir / LOCK_NAME)
    with pytest.raises(StoreError, match="not a plain file"):
        with exclusive_lock(data_dir):
            pass
    assert outside.read_text() == "someone else's data\n"


def test_a_lock_file_symlinked_elsewhere_is_refused(data_dir: Path, tmp_path: Path) -> None:
    outside = tmp_path / "precious.txt"
    outside.write_text("someone else's data\n")
    data_dir.mkdir()
    (data_dir / LOCK_NAME).symlink_to(outside)
    with pytest.raises(SymlinkRefusedError):
        with exclusive_lock(data_dir):
            pass
    assert outside.read_text() == "someone else's data\n"


def test_a_fifo_as_lock_file_is_refused_without_hanging(data_dir: Path) -> None:
    data_dir.mkdir()
    os.mkfifo(data_dir / LOCK_NAME)
    with pytest.raises(StoreError, match="not a plain file"):
        with exclusive_lock(data_dir):
            pass
