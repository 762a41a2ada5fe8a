"""TensorRT export: ``profile`` (optimisation-profile maths, no TensorRT needed) and ``build``
(the engine builder). Reading and running engines is :mod:`seco_deploy.runtime` (``engine_file``,
``trt_backend``)."""
