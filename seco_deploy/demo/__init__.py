"""``seco demo`` and the co-occurrence analysis.

Modules:
  ``pipeline``     the stages (synth, train, export, predict, evaluate, report) and ``run_demo``
  ``evaluation``   mIoU / per-class IoU / FP:TP of a prediction folder, aux-CAM pseudo-labels
  ``cooccurrence`` context false activation (all context pixels, and those away from objects)
  ``report``       the static HTML report and its sections
  ``plots``        training curves (matplotlib, the optional extra ``report``)
  ``images``       tiles: colourised masks, PNG / data-URI encoding
"""

from __future__ import annotations

from typing import Any

__all__ = ["DemoOptions", "DemoResult", "run_demo"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        from seco_deploy.demo import pipeline

        return getattr(pipeline, name)
    raise AttributeError(f"module 'seco_deploy.demo' has no attribute {name!r}")
