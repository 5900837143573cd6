"""``python -m export cam``: GAP classifiers (EfficientNet-Lite0 ImageNet, or the user's own) for /cam."""
