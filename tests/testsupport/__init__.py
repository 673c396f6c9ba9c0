"""What several test suites share: paths and test data. On ``sys.path`` through pytest's
``pythonpath`` setting (pyproject.toml), so a suite imports it as ``testsupport``."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType
from typing import Any

REPO = Path(__file__).resolve().parents[2]
TESTS = REPO / "tests"
DATA = TESTS / "data"
E2E_DAGS = TESTS / "e2e" / "dags"
EXAMPLE_DAGS = REPO / "example_dags"
BENCHMARKS = REPO / "benchmarks"


def import_file(path: Path) -> ModuleType:
    """A Python file outside any package (a benchmark script, a DAG file) imported as a module."""
    spec = importlib.util.spec_from_file_location(path.stem, path)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


#: Job (and asset) ids every layer must refuse before building a request, by case name. A job id
#: becomes one URL path segment (``.../pictures/modeling-jobs/{job_id}``), so anything that could
#: leave that segment, change the request or break its headers is refused. Parametrize with
#: ``BAD_JOB_IDS.values(), ids=list(BAD_JOB_IDS)``.
BAD_JOB_IDS: dict[str, Any] = {
    "dot-dot": "../x",  # climbs to another path of the API
    "slash": "a/b",  # a second path segment
    "query": "a?b",  # starts the query string
    "fragment": "a#b",  # cuts the URL short
    "encoded-slash": "%2F",  # a slash once a proxy or the gateway decodes it
    "empty": "",  # the list endpoint instead of one job
    "whitespace": "   ",  # nothing but blanks
    "leading-space": " x",  # a pasted id with a blank before it
    "inner-space": "a b",  # not an id character
    "tab": "\t",  # a control character
    "trailing-newline": "abc\n",  # a templated value read from a file
    "crlf-injection": "abc\r\nX-Evil: 1",  # a header injected into the request
    "unicode": "任务1",  # ids are ASCII; percent-encoding would hide it
    "leading-dash": "-abc",  # read as an option by a command line
    "10000-chars": "a" * 10_000,  # longer than any id (at most 128 characters)
    "int": 12345,  # not a string: an unrendered or wrongly typed value
    "none": None,  # a missing XCom
    "bytes": b"abc",  # not text
    "list": ["abc"],  # an XCom of several ids
}


def png_header(width: int = 640, height: int = 480) -> bytes:
    """A PNG of well-formed chunks (signature, IHDR with its CRC, one tiny IDAT, IEND) that declares
    ``width`` x ``height`` without holding its pixels: what photo checks read, at any size, in a few
    bytes.

    The emulator's own maker, so the tests, the emulator and the hook's checks agree on the bytes.
    """
    # Imported here: the path constants above stay importable without the provider.
    from airflow_provider_metastudio.testing import make_png_header

    return make_png_header(width, height)
