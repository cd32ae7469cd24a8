"""A process that stages a file and then waits to be killed, for the staging-cleanup tests.

Usage: python -m tests.stager_proc DATA_DIR MODE
  writing    a temp file under DATA/.staging whose write never ends (killed mid-write)
  published  an event file staged and published, killed before its temp name is removed
Prints the mode once the file is in that state, then sleeps.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import BinaryIO

from pipeline.store.eventlog import conform, write_ipc
from pipeline.store.layout import STAGING_DIR
from pipeline.store.staging import publish_new, stage
from schemas import TABLES
from tests.writer_proc import batch

PUBLISHED = "events/requests/date=2026-01-02/r1-w0.00000000-000000.arrow"


def main() -> None:
    data, mode = Path(sys.argv[1]), sys.argv[2]

    def never_ends(handle: BinaryIO) -> None:
        handle.write(b"\0" * 65536)
        handle.flush()
        sys.stdout.write("writing\n")
        sys.stdout.flush()
        time.sleep(600)

    def whole(handle: BinaryIO) -> None:
        write_ipc(conform(TABLES["requests"], batch("r1", "w0", 0, 5)), handle)

    tmp = stage(data, data / STAGING_DIR, never_ends if mode == "writing" else whole)
    publish_new(tmp, data / PUBLISHED)
    sys.stdout.write(f"{mode}\n")
    sys.stdout.flush()
    time.sleep(600)


if __name__ == "__main__":
    main()
