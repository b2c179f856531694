"""MAC counting, the 50 GMAC budget gate and related model measurements.

- :mod:`profiling.macs`: multiply-accumulates of convolutions, linear layers and matmuls
  (``torch.utils.flop_counter.FlopCounterMode``), per module.
- :mod:`profiling.other_ops`: BatchNorm, activation, elementwise and pooling work, kept out
  of the budget figure.
- :mod:`profiling.memory`: peak activation memory of one forward pass.
- :mod:`profiling.fvcore_macs`: fvcore's count, the second opinion.
- :mod:`profiling.onnx_macs`: MACs of an exported ONNX graph, to check an export.
- :mod:`profiling.report`: all of the above for a model config through its views.
- :mod:`profiling.budget`: the budget gate and fitting views to the budget.
- ``edge-iqa profile`` is :mod:`edge_iqa.commands.profile`.

The budget follows the AIM 2024 UHD-IQA challenge (Moskalenko et al., ECCVW 2024): every
entry was limited to 50 GMAC for one 3840×2160 photo.
"""
