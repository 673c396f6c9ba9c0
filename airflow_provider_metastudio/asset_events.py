"""Airflow asset events (Airflow 3 ``Asset``, Airflow 2.11 ``Dataset``) and the ``metastudio`` URI scheme.

Tasks of this provider that make or fetch a model (create, get, asset sensor, download) add
``model_asset_id``, ``job_id`` and, for downloads, the written paths to the ``extra`` of the event
of every outlet asset the user declared, so a DAG scheduled on that asset learns which model is new
from its triggering event. Download URLs never go into an event (they are bearer credentials).

URI scheme, registered in ``get_provider_info`` (``asset-uris`` on Airflow 3, ``dataset-uris`` on
2.11)::

    metastudio://{project_id}/assets               the tenant's model library (any new model)
    metastudio://{project_id}/assets/{asset_id}    one model asset

The project id names the tenant and, because Huawei Cloud projects belong to one region, also the
region; it is not a secret. Query, fragment, user info and port are refused.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import SplitResult

from airflow_provider_metastudio._compat import asset_classes
from airflow_provider_metastudio.validation import validate_asset_id, validate_project_id

SCHEME = "metastudio"


def sanitize_uri(uri: SplitResult) -> SplitResult:
    """Airflow's URI handler for ``metastudio://``: validate and normalize (no trailing ``/``)."""
    if not uri.netloc:
        raise ValueError(
            "URI format metastudio:// must contain a project id: metastudio://{project_id}/assets"
        )
    if uri.username or uri.password or uri.port is not None or uri.query or uri.fragment:
        raise ValueError("a metastudio:// URI has no user, password, port, query or fragment")
    try:
        validate_project_id(uri.hostname)
    except ValueError as e:
        raise ValueError(f"metastudio:// URI: {e}") from None
    path = uri.path.rstrip("/")
    segments = path.split("/")[1:] if path else []
    if segments[:1] != ["assets"] or len(segments) > 2:
        raise ValueError("a metastudio:// URI is metastudio://{project_id}/assets[/{asset_id}]")
    if len(segments) == 2:
        try:
            validate_asset_id(segments[1])
        except ValueError as e:
            raise ValueError(f"metastudio:// URI: {e}") from None
    # The project id is case-sensitive in the API's paths: only the scheme is lower-cased.
    return uri._replace(scheme=SCHEME, netloc=uri.netloc, path=path)


def asset_uri(project_id: str, asset_id: str | None = None) -> str:
    """``metastudio://{project_id}/assets[/{asset_id}]``, validated."""
    validate_project_id(project_id)
    if asset_id is None:
        return f"{SCHEME}://{project_id}/assets"
    return f"{SCHEME}://{project_id}/assets/{validate_asset_id(asset_id)}"


def emit_outlet_events(task: Any, context: Any, **extra: Any) -> dict[str, Any]:
    """Put ``extra`` (None values left out) into the event of each outlet Asset/Dataset of ``task``.

    Airflow emits one event per outlet when the task succeeds; aliases and other outlets are left
    alone. Returns the extra that was set (empty when the task has no asset outlet).
    """
    classes = asset_classes()
    outlets = [o for o in (getattr(task, "outlets", None) or []) if classes and isinstance(o, classes)]
    events = context.get("outlet_events") if hasattr(context, "get") else None
    payload = {k: v for k, v in extra.items() if v is not None}
    if not outlets or events is None:
        return {}
    for outlet in outlets:
        events[outlet].extra.update(payload)
    return payload
