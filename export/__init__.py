"""Export: INT8 calibration, ONNX / TensorRT / CoreML conversion, runners and accuracy parity.

One plain function per conversion — :func:`export.onnx.torch2onnx`,
:func:`export.quantize.quantize_onnx`, :func:`export.tensorrt.onnx2trt`,
:func:`export.coreml.torch2coreml` — and one table of formats (:data:`export.formats.FORMATS`)
that drives option validation, ``edge-iqa export --help``, the tests and the benchmark.
:mod:`export.pipeline` chains them for ``edge-iqa export`` and :mod:`export.parity` checks every
artifact against the FP32 PyTorch model, saying what ran, what was simulated and what was skipped.
"""
