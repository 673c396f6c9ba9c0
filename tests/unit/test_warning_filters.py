"""pyproject's ``filterwarnings``: a deprecation attributed to this package fails, others do not.

Python attributes a warning to the module of the frame ``stacklevel`` points at, so the code below is
compiled with a ``__name__`` of our package (or of another one) to stand in for its modules.
"""

from __future__ import annotations

import warnings

import pytest


def _module(name: str, source: str) -> dict[str, object]:
    namespace: dict[str, object] = {"__name__": name, "warnings": warnings}
    exec(compile(source, f"<{name}>", "exec"), namespace)
    return namespace


def _library_call() -> None:
    # What Airflow does in a deprecated function: the warning is attributed to its caller.
    warnings.warn("old API", DeprecationWarning, stacklevel=2)


@pytest.mark.parametrize("category", [DeprecationWarning, PendingDeprecationWarning])
def test_a_deprecation_raised_in_the_package_fails(category):
    mod = _module("airflow_provider_metastudio.hooks.fake", "def f(c):\n    warnings.warn('x', c)\n")
    with pytest.raises(category):
        mod["f"](category)  # type: ignore[operator]


def test_a_deprecated_call_made_by_the_package_fails():
    mod = _module("airflow_provider_metastudio._compat_fake", "def f(call):\n    call()\n")
    with pytest.raises(DeprecationWarning, match="old API"):
        mod["f"](_library_call)  # type: ignore[operator]


@pytest.mark.parametrize("name", ["some_library.module", "airflow_provider_metastudio_other"])
def test_a_deprecation_of_another_module_is_only_recorded(name):
    mod = _module(name, "def f(call):\n    call()\n")
    with pytest.warns(DeprecationWarning, match="old API"):
        mod["f"](_library_call)  # type: ignore[operator]
