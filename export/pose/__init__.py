"""Body joints (LSP, 14 joints): ``python -m export pose``, ``pose-pack``, ``pose-eval``; see ``docs/pose.md``.

Modules: ``data`` (LSP/LSPET, the service's crop, augmentation), ``metrics`` (PCP, PCK), ``model`` (FPN +
soft-argmax), ``pack`` (a compact copy of the data), ``train`` (loop and checkpoints), ``graph`` (the ONNX graph
and its check), ``evaluate`` (validation through the service's preprocessing, latency), ``cli``.
"""
