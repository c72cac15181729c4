"""The states TFS reports for a servable version (tensorflow_serving/apis/
get_model_status.proto, ModelVersionStatus.State; the REST API says them by name)."""

from __future__ import annotations

from enum import StrEnum


class VersionState(StrEnum):
    UNKNOWN = "UNKNOWN"
    START = "START"
    LOADING = "LOADING"
    AVAILABLE = "AVAILABLE"
    UNLOADING = "UNLOADING"
    END = "END"
