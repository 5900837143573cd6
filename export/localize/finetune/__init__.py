"""End-to-end fine-tuning of the localization network on one GPU (``localize-pack``, ``localize-finetune``).

One idea per module: ``pack`` (the training images as one ``.npz``), ``augment`` (crops, flips, degradation),
``resample`` (Pillow's bilinear, bit-exact, on the device), ``params`` (the model, parameter groups, train mode),
``clock`` (deadline, progress), ``loop`` (training and evaluation), ``planner`` (epochs that fit the budget),
``sweep`` (alpha by k-fold cross-validation), ``checkpoint`` (sharded state dict), ``run`` (the command),
``cli`` (the parsers).  They import only torch, numpy, Pillow and export modules that import only those, so
the commands run on a bare GPU machine (``psutil``, when installed, measures the process' start-up).
"""
