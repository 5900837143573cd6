"""Localization inference service: /localize, /cam and /pose over ONNX models."""

__version__ = "0.1.0"
