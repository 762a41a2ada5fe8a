"""What inference needs of a model file, whatever runs it: the layer under ``infer/`` and ``export/``.

Modules (import what you need; this package imports nothing heavy by itself):
  ``errors``        ``BackendError`` (unusable file or option, exit 2), ``MissingRuntimeError`` (exit 5)
  ``device``        ``resolve_device`` (the one ``--device`` rule), GPU / TensorRT runtime checks
  ``model_file``    the one suffix table: checkpoint, ONNX, engine
  ``checkpoint``    weights-only loading, the stored config, ``build_network``, ``load_for_inference``
  ``card``          the model card that travels inside ONNX files and engines
  ``engine_file``   the engine file format (card header + TensorRT plan), the profile shape
  ``backends``      ``Backend``, ``ModelInfo``, ``TorchBackend``, ``open_backend``
  ``onnx_backend``  ONNX Runtime (CPU, CUDA, TensorRT providers)
  ``trt_backend``   TensorRT engines with torch CUDA buffers
  ``describe``      ``seco info``: what a model file holds

Imports run one way: ``runtime`` uses ``config``, ``model`` and ``data`` only; ``infer`` and
``export`` use ``runtime``; ``train`` uses it for checkpoints and devices.
"""
