"""Every error the pipeline raises on purpose. Each message says what to do next.

PipelineError
├── ConfigError                bad config, scenario or option (exit 2)
├── InputError                 bad input that is not the config (exit 2)
│   └── InvalidNameError       a name that would become a path is unsafe
├── WorkerFailedError          an execute worker process died or failed mid-run (exit 1)
├── PreflightError             a target could not answer execute's first request (exit 1)
├── StoreError                 the event log or an output could not be used (exit 1)
│   ├── CorruptEventFileError  an event file cannot be read; names it
│   ├── VanishedFileError      a listed event file was gone when read (a concurrent compact)
│   ├── OutputConflictError    other writers kept replacing a stage's outputs (object store)
│   ├── LockTimeoutError       another process holds the data directory's lock
│   ├── StageInputMissingError a stage's input has not been built yet
│   └── SymlinkRefusedError    a symlink below the data directory (never followed)
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

__all__ = [
    "ConfigError",
    "CorruptEventFileError",
    "InputError",
    "InvalidNameError",
    "LockTimeoutError",
    "OutputConflictError",
    "PipelineError",
    "PreflightError",
    "StageInputMissingError",
    "StoreError",
    "SymlinkRefusedError",
    "VanishedFileError",
    "WorkerFailedError",
]


class PipelineError(Exception):
    exit_code = 1


class ConfigError(PipelineError):
    exit_code = 2


class InputError(PipelineError):
    exit_code = 2


class InvalidNameError(InputError):
    pass


class StoreError(PipelineError):
    pass


class WorkerFailedError(PipelineError):
    """A worker process of `execute` died (killed, crashed) or raised; the run is marked failed."""


class PreflightError(PipelineError):
    """A target failed `execute`'s pre-flight request in a way no later request can do better
    (nothing answered, a refused request): nothing was measured and no event written."""


class CorruptEventFileError(StoreError):
    def __init__(self, paths: Sequence[str | Path], reason: str) -> None:
        self.paths = [str(p) for p in paths]
        """Where each file is, as messages name it (a local path or an object's URL)."""
        names = ", ".join(str(p) for p in paths)
        super().__init__(
            f"corrupt event {'file' if len(paths) == 1 else 'files'}: {names} ({reason}); rerun "
            "with --skip-corrupt to move them "
            "to quarantine/ and continue without them"
        )


class LockTimeoutError(StoreError):
    pass


class VanishedFileError(StoreError):
    """An event file that a listing showed was gone when read: on an object store, where no lock
    keeps `compact` away from readers, it merged and deleted the file meanwhile (its events are
    in the merged file). A reader that can start over does; the others say to run again."""

    def __init__(self, where: str) -> None:
        self.where = where
        super().__init__(
            f"{where}: gone since it was listed (a `pipeline compact` running at the same time "
            "merges and deletes files); run again"
        )


class OutputConflictError(StoreError):
    """On an object store, a stage's outputs are made current by a compare-and-swap of a
    pointer; other writers won it every time this one tried."""


class StageInputMissingError(StoreError):
    pass


class SymlinkRefusedError(StoreError):
    """Nothing below the data directory is reached through a symbolic link: a planted link must
    not make the pipeline read, write or delete anything outside it."""

    def __init__(self, path: Path) -> None:
        self.path = path
        super().__init__(
            f"{path} is a symbolic link; links inside the data directory are never followed: "
            "remove it (or put what it points to in its place) and run again"
        )
