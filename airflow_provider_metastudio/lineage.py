"""OpenLineage facets of this provider's operators, active only when ``apache-airflow-providers-openlineage``
is installed (it is never a dependency): without it :func:`operator_lineage` returns None and
Airflow's OpenLineage listener is absent anyway.

Dataset naming: a model asset is namespace ``metastudio://{project_id}``, name ``assets/{asset_id}``
(the same identity as the ``metastudio://`` Airflow asset URI); a written file is namespace
``scheme://authority`` (``file`` for local paths), name its path.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any
from urllib.parse import urlsplit


def model_dataset(project_id: str, asset_id: str) -> tuple[str, str]:
    return f"metastudio://{project_id}", f"assets/{asset_id}"


def path_dataset(path: str) -> tuple[str, str]:
    parts = urlsplit(str(path))
    if not parts.scheme or len(parts.scheme) == 1:  # a local path (or a Windows drive letter)
        return "file", str(path)
    if parts.scheme == "file":
        return "file", parts.path
    return f"{parts.scheme}://{parts.netloc}", parts.path.lstrip("/")


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
