"""Custom search attributes: registered on the namespace, shown and filterable in the Web UI.

Never put secrets here: search attributes are stored unencrypted.
"""

from __future__ import annotations

from typing import Any

from temporalio.common import SearchAttributeKey

PROJECT_ID = SearchAttributeKey.for_keyword("ProjectId")
MIGRATION_ID = SearchAttributeKey.for_keyword("MigrationId")
MIGRATION_STATE = SearchAttributeKey.for_keyword("MigrationState")
SOURCE_PLATFORM = SearchAttributeKey.for_keyword("SourcePlatform")
DESTINATION_PLATFORM = SearchAttributeKey.for_keyword("DestinationPlatform")
INSTANCE_COUNT = SearchAttributeKey.for_int("InstanceCount")

ALL: list[SearchAttributeKey[Any]] = [
    PROJECT_ID, MIGRATION_ID, MIGRATION_STATE, SOURCE_PLATFORM, DESTINATION_PLATFORM, INSTANCE_COUNT,
]


def cli_flags() -> list[str]:
    """``--search-attribute Name=Type`` flags for ``temporal server start-dev``."""
    kinds = {"KEYWORD": "Keyword", "INT": "Int"}
    flags: list[str] = []
    for key in ALL:
        flags += ["--search-attribute", f"{key.name}={kinds[key.indexed_value_type.name]}"]
    return flags
