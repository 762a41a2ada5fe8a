"""Render the demo report headless with Chromium and check the screenshot is not blank (slow).

Needs Debian's ``chromium`` (``apt-get install -y chromium``); skipped when it is not installed.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from _demo_helpers import run_tiny_demo

pytestmark = pytest.mark.slow


def chromium() -> str | None:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        path = shutil.which(name)
        if path:
            return path
    return None


def screenshot(html: Path, png: Path, profile: Path, width: int = 1280, height: int = 2400) -> None:
    exe = chromium()
    assert exe is not None
    cmd = [exe, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
           "--disable-component-update", "--disable-sync", "--no-first-run", f"--user-data-dir={profile}",
           f"--screenshot={png}", f"--window-size={width},{height}", html.resolve().as_uri()]
    subprocess.run(cmd, check=True, capture_output=True, timeout=180)


@pytest.mark.skipif(chromium() is None, reason="chromium is not installed (apt-get install -y chromium)")
def test_report_renders_in_chromium(tmp_path: Path) -> None:
    import cv2

    result = run_tiny_demo(tmp_path / "demo")
    png = tmp_path / "report.png"
    screenshot(result.report, png, tmp_path / "profile")
    image = cv2.imread(str(png), cv2.IMREAD_COLOR)
    assert image is not None and image.shape[:2] == (2400, 1280)
    gray = cv2.cvtColor(image, cv2.COLOR_BGR2GRAY)
    # Not blank: a good share of the page is not white, and it holds many distinct colours (images, plots).
    assert (gray < 240).mean() > 0.05
    colours = np.unique(image.reshape(-1, 3)[::7], axis=0)
    assert len(colours) > 500
    # The embedded images are drawn: the grid region (lower half) is rich in colour.
    lower = image[1200:]
    assert lower.std() > 30

