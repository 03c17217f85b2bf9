"""Headless Chromium for the tests that check a report as a browser renders it."""

from __future__ import annotations

import os
import shutil

import pytest

BROWSERS = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")


def browser() -> str:
    """Headless Chromium's path. Without one the browser tests skip, except in CI (CI=true), where they fail:
    `.ci/run` installs Chromium from Debian's packages so that the report is checked in a real browser there."""
    found = os.environ.get("CHROMIUM") or next(filter(None, map(shutil.which, BROWSERS)), None)
    if found:
        return found
    if os.environ.get("CI", "").strip().lower() in ("1", "true", "yes"):
        pytest.fail("CI is set but no Chromium was found: .ci/run installs it (apt-get install -y chromium)")
    pytest.skip("Chromium is not installed (apt-get install -y chromium); CI installs it and runs this test")
