"""Base model for every potstill config and on-disk record.

Every model forbids unknown keys (a typo is an error, never silently ignored)
and every field carries a description, which the docs and the YAML error
hints are built from.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict

SCHEMA_VERSION = 1
"""Version of the on-disk record layouts (traces, commits, manifests)."""


class StrictModel(BaseModel):
    """A pydantic model that rejects unknown keys and validates on assignment."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True, frozen=False)
