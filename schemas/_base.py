"""The one base of every model: immutable, strict about unknown keys, defaults validated too.

Frozen because an entity, an event or a config is a record of something that happened or was
decided: nothing changes one after it is made. `extra="forbid"` so a misspelt key in a TOML file
is an error naming it, never silently ignored. `validate_default` so a default obeys the same
rules as a value someone wrote.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict

__all__ = ["Frozen"]


class Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", validate_default=True)
