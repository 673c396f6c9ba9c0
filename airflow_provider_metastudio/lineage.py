"""OpenLineage facets of this provider's operators, active only when ``apache-airflow-providers-openlineage``
is installed (it is never a dependency): without it :func:`operator_lineage` returns None and
Airflow's OpenLineage listener is absent anyway.

Dataset naming: a model asset is namespace ``metastudio://{project_id}``, name ``assets/{asset_id}``
(the same identity as the ``metastudio://`` Airflow asset URI); a written file is namespace
``scheme://host[:port]`` (``file`` for local paths), name its path; the create operator's input (the
picture URL, or the uploaded photo's path) is named the same way.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any
from urllib.parse import urlsplit


def model_dataset(project_id: str, asset_id: str) -> tuple[str, str]:
    return f"metastudio://{project_id}", f"assets/{asset_id}"


def path_dataset(path: Any) -> tuple[str, str]:
    """A file, object-store path or http(s) URL as (namespace, name).

    User info, query and fragment are left out: a pre-signed URL's signature (a bearer credential)
    never reaches a lineage backend, and a URL signed again names the same dataset.
    """
    parts = urlsplit(str(path))
    if not parts.scheme or len(parts.scheme) == 1:  # a local path (or a Windows drive letter)
        return "file", str(path)
    if parts.scheme == "file":
        return "file", parts.path
    host = parts.hostname or ""
    if parts.port is not None:
        host = f"{host}:{parts.port}"
    return f"{parts.scheme.lower()}://{host}", parts.path.lstrip("/")


def operator_lineage(inputs: Iterable[tuple[str, str]], outputs: Iterable[tuple[str, str]]) -> Any | None:
    """An ``OperatorLineage`` of (namespace, name) datasets, or None without the OpenLineage provider."""
    try:
        from airflow.providers.openlineage.extractors import OperatorLineage
    except ImportError:
        return None
    try:
        from airflow.providers.common.compat.openlineage.facet import Dataset
    except ImportError:
        from openlineage.client.event_v2 import Dataset  # type: ignore[no-redef]
    return OperatorLineage(
        inputs=[Dataset(namespace=ns, name=name) for ns, name in inputs],
        outputs=[Dataset(namespace=ns, name=name) for ns, name in outputs],
    )
