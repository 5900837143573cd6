"""Classification + localization (EfficientNet-Lite0, two heads): ``localize``, ``localize-pack``, ``localize-finetune``.

Modules: ``data`` (datasets, the service's preprocessing), ``model``, ``cache`` (frozen trunk outputs),
``losses``, ``metrics`` (localization metrics, folds, the alpha sweep's summary), ``train`` (heads on cached
outputs), ``pipeline`` (the ``localize`` command), ``exporting``, ``evaluate``, ``from_finetune``, ``report``,
``gap``; ``finetune/`` is the end-to-end GPU fine-tuning.  Nothing here imports a sibling package's module.
"""
