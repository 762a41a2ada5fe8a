"""Inference: `seco predict` as a library.

The backends that run a model file (``open_backend(path, device, amp)``: ``.pt`` PyTorch, ``.onnx``
ONNX Runtime, ``.engine``/``.plan`` TensorRT) are :mod:`seco_deploy.runtime.backends`.

- :mod:`seco_deploy.infer.sources`: SOURCE (folder, glob, list, image) -> sorted inputs with safe
  output names; sharding;
- :mod:`seco_deploy.infer.predictor`: ``Predictor(backend, info, PredictOptions(...)).run(items, out)``
  (TTA, modes, refinement, batching, skip-complete, manifest);
- :mod:`seco_deploy.infer.outputs`: atomic writers of masks, overlays, probabilities and CAM heatmaps.

Example::

    from seco_deploy.runtime.backends import open_backend
    from seco_deploy.infer.predictor import PredictOptions, Predictor
    from seco_deploy.infer.sources import expand_source

    backend, info = open_backend("best.pt", device="auto")
    summary = Predictor(backend, info, PredictOptions(mode="mask", batch=8)).run(expand_source("photos/"), "out/")
"""
