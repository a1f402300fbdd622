"""The checkout, and the tools and data sets a test needs: missing() says what is absent."""

from __future__ import annotations

import os
from pathlib import Path
from typing import NoReturn

import pytest

ROOT = Path(__file__).resolve().parent.parent.parent
CORPORA = ROOT.parent / "shared" / "corpora"


def missing(reason: str, *, module: bool = False) -> NoReturn:
    """A tool or data set a test needs is absent (Postfix, Chromium, HAProxy, nginx, promtool,
    systemd-analyze, openssl, ../shared/corpora): skipped on a workstation, a failure under CI=true, where a
    skip would hide that the test never ran. `module=True` at module level."""
    if os.environ.get("CI") == "true":
        pytest.fail(f"{reason} [CI=true: a missing tool fails the run; scripts/system-deps installs it]",
                    pytrace=False)
    pytest.skip(reason, allow_module_level=module)


CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")


def chrome(profile: Path, prefs: dict | None = None, capabilities: dict | None = None):
    """Debian's Chromium, headless, driven by selenium with an explicit driver path (so
    selenium-manager never downloads anything) and a fresh profile; missing() without it."""
    if not (CHROMIUM.is_file() and CHROMEDRIVER.is_file()):
        missing(f"needs {CHROMIUM} and {CHROMEDRIVER} (Debian packages chromium, chromium-driver)")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    opts = webdriver.ChromeOptions()
    opts.binary_location = str(CHROMIUM)
    for arg in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                "--disable-component-update", "--no-first-run", "--disable-dev-shm-usage",
                f"--user-data-dir={profile}"):
        opts.add_argument(arg)
    if prefs:
        opts.add_experimental_option("prefs", prefs)
    for name, value in (capabilities or {}).items():
        opts.set_capability(name, value)
    return webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=opts)
