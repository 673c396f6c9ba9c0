"""Apache Airflow provider for Huawei Cloud MetaStudio stylized picture modeling."""

from __future__ import annotations

__version__ = "0.1.0"

__all__ = ["__version__"]
