"""The asset library's vocabulary (states, types, file categories, list options), as the official
SDK documents it.

Kept free of Airflow and of the rest of the package, so the stdlib-only emulator
(:mod:`airflow_provider_metastudio.testing`) speaks the same words as the client; import these
names from :mod:`airflow_provider_metastudio.assets`.
"""

from __future__ import annotations

from enum import Enum


class AssetState(str, Enum):
    """``asset_state`` as the SDK documents it; only ``ACTIVED`` means the files can be used."""

    CREATING = "CREATING"  # main file not uploaded yet
    FAILED = "FAILED"  # main file upload (or review) failed
    UNACTIVED = "UNACTIVED"  # uploaded, not active
    ACTIVED = "ACTIVED"  # uploaded and usable
    DELETING = "DELETING"  # being deleted, still restorable
    DELETED = "DELETED"  # gone, not restorable
    BLOCK = "BLOCK"  # frozen: its files cannot be viewed
    WAITING_DELETE = "WAITING_DELETE"  # about to go offline

    @classmethod
    def parse(cls, value: str | None) -> AssetState | None:
        """The known state for a raw value, or None for anything the contract does not list."""
        try:
            return cls(value)
        except ValueError:
            return None


#: States an asset never leaves on its own: waiting for it to become usable is pointless.
ASSET_FAILURE_STATES = frozenset({AssetState.FAILED, AssetState.BLOCK, AssetState.DELETED})

#: ``asset_file_category`` values the SDK lists; a HUMAN_MODEL has MAIN, COVER and OTHER.
FILE_CATEGORIES = (
    "MAIN",
    "COVER",
    "PAGE",
    "SAMPLE",
    "OTHER",
    "TEMPORARY",
    "PACKAGE",
    "WHOLE_MODEL",
    "USER_MODIFIED_MODEL",
)
#: ``asset_type`` values the SDK lists (the list filter refuses others).
ASSET_TYPES = (
    "HUMAN_MODEL",
    "HUMAN_MODEL_2D",
    "VOICE_MODEL",
    "VIDEO",
    "IMAGE",
    "PPT",
    "MATERIAL",
    "SCENE",
    "ANIMATION",
    "MUSIC",
    "AUDIO",
    "COMMON_FILE",
    "BUSINESS_CARD_TEMPLET",
)
ASSET_SORT_KEYS = ("create_time", "update_time", "asset_order")
ASSET_SOURCES = ("SYSTEM", "CUSTOMIZATION", "ALL")
