"""Export: a checkpoint to ONNX or a TensorRT engine, with parity checks against PyTorch.

Modules:
  ``exporter``     ``Exporter`` / ``export_checkpoint(ExportRequest) -> ExportOutcome`` (``seco export``)
  ``onnx_export``  the ONNX graph (dynamo exporter, fp16 with fp32 LayerNorm, simplification)
  ``parity``       tolerances and the check of an exported model against the PyTorch network
  ``tensorrt``     optimisation-profile maths (``profile``) and the engine builder (``build``)

What an exported file carries (the model card) and how it is read and run is :mod:`seco_deploy.runtime`.
"""
