"""What a model replica reports about its GPU: memory and utilisation, or None on CPU.

Never raises: a health check must not fail because a counter is unavailable (no NVML,
a driver hiccup), it reports what it can.
"""

from __future__ import annotations

import logging
from typing import Any

logger = logging.getLogger(__name__)


def gpu_report(device: str) -> dict[str, Any] | None:
    """None unless the model runs on CUDA; else this process's view of its current card."""
    if device != "cuda":
        return None
    try:
        import torch

        if not torch.cuda.is_available():
            return None
        index = torch.cuda.current_device()
        free, total = torch.cuda.mem_get_info(index)
        report: dict[str, Any] = {
            "index": index,
            "name": torch.cuda.get_device_name(index),
            "memory": {
                "allocated_bytes": torch.cuda.memory_allocated(index),
                "reserved_bytes": torch.cuda.memory_reserved(index),
                "free_bytes": free,
                "total_bytes": total,
            },
            "utilization_percent": _utilization(torch, index),
        }
        return report
    except Exception as error:  # a report with a reason beats a failed health check
        logger.warning("GPU report failed: %s", error)
        return {"error": type(error).__name__}


def _utilization(torch_module, index: int) -> float | None:
    # torch asks NVML (pynvml); without it there is no utilisation, only memory.
    try:
        return float(torch_module.cuda.utilization(index))
    except Exception:
        return None
