"""Host/device helpers of the fine-tuning: transfers without a sync, bf16 autocast, explicit syncs."""

from __future__ import annotations

import torch


def to_device(t: torch.Tensor, device: torch.device) -> torch.Tensor:
    """CPU -> device without a host sync (pinned staging buffer, cached by torch) when the device is a GPU."""
    if device.type != "cuda":
        return t.to(device)
    return t.pin_memory().to(device, non_blocking=True)


def autocast(device: torch.device, enabled: bool) -> torch.autocast:
    """bf16 autocast on ``device`` (a no-op when not ``enabled``)."""
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=enabled)


def sync(device: torch.device) -> None:
    """Wait for the GPU's queued work (timing); nothing on the CPU."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
