"""Headless Chromium from Debian's packages, driven by Selenium through Debian's chromedriver.

The driver is given explicitly, so Selenium Manager never downloads one; the browser's own
background traffic (updates, sync, QUIC probes) is switched off, so it only talks to 127.0.0.1.
Waits name what they wait for: a failure says which element is missing and where a screenshot of
the page is.
"""

from __future__ import annotations

import re
import shutil
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--window-size=1400,1800",
)

T = TypeVar("T")


def missing() -> str | None:
    """Why the browser cannot run here, or None."""
    for path, package in ((CHROMIUM, "chromium"), (CHROMEDRIVER, "chromium-driver")):
        if not path.exists():
            return f"{path} missing: apt-get install -y {package}"
    try:
        import selenium  # noqa: F401
    except ImportError:
        return "selenium missing: install the provider's 'deployment' extra"
    return None


class Browser:
    """One Chromium session; ``shot(name)`` saves numbered screenshots in ``output_dir``."""

    def __init__(self, driver: Any, output_dir: Path) -> None:
        self.driver = driver
        self.output_dir = output_dir
        self._shots = 0

    def shot(self, name: str) -> Path:
        self._shots += 1
        path = self.output_dir / f"{self._shots:02d}-{re.sub(r'[^A-Za-z0-9_-]+', '-', name)}.png"
        self.driver.save_screenshot(str(path))
        return path

    def wait(self, what: str, condition: Callable[[Any], T | None], timeout: float = 30) -> T:
        """``condition(driver)`` once it is truthy; else fail with ``what`` (say what is missing)."""
        from selenium.common.exceptions import TimeoutException
        from selenium.webdriver.support.ui import WebDriverWait

        try:
            return WebDriverWait(self.driver, timeout, poll_frequency=0.25).until(condition)
        except TimeoutException:
            path = self.shot("missing")
            raise AssertionError(f"{what} (after {timeout:g} s; screenshot {path})") from None


@contextmanager
def chromium(output_dir: Path) -> Iterator[Browser]:
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    output_dir.mkdir(parents=True, exist_ok=True)
    profile = tempfile.mkdtemp(prefix="metastudio-ui-chromium-")
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for flag in (*FLAGS, f"--user-data-dir={profile}"):
        options.add_argument(flag)
    service = Service(executable_path=str(CHROMEDRIVER), log_output=str(output_dir / "chromedriver.log"))
    driver = webdriver.Chrome(service=service, options=options)
    try:
        yield Browser(driver, output_dir)
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)
