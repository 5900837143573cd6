"""Parts every task shares: sidecar, ONNX export and checks, box ops, hashing, logging, the backbone.

Each module here imports only the standard library, numpy and torch at module level (onnx and onnxruntime
inside the functions that need them), so a bare GPU machine can import any of them.
"""
