"""Shared fixtures for the demo tests: one tiny demo run per session (test preset, 16 images of 64 px)."""

from __future__ import annotations

from pathlib import Path

TINY = dict(images=16, size=64, minutes=1.0, preset="test", examples=3)


def run_tiny_demo(out: Path, **extra: object):
    from seco_deploy.demo.pipeline import DemoOptions, run_demo

    options = DemoOptions(out=out, **{**TINY, **extra})
    return run_demo(options)
