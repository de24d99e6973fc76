"""Import-time fixes for the torch stack, applied once before diffusers, transformers or controlnet_aux load.

The CPU-only torch wheel paired with torchvision from PyPI (built against CUDA torch) cannot load
torchvision's C++ ops; torchvision 0.28 then fails at import, registering a fake kernel for its `nms`
op, which no longer exists. `prepare()` defines the two ops that import touches (`nms`, `qnms`) with a
pure-torch CPU kernel, so torchvision imports (its Python-side `torchvision.ops` still refuse to run; code
here calls `nms` below). With a matching torchvision (any GPU host) the extension loads and nothing changes.
"""

from __future__ import annotations

import functools
import importlib.util
import logging
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)


def nms(boxes: Any, scores: Any, iou_threshold: float) -> Any:
    """Greedy non-maximum suppression in plain torch: indices of the kept boxes, best first."""
    import torch

    order = torch.argsort(scores, descending=True)
    keep: list[int] = []
    areas = (boxes[:, 2] - boxes[:, 0]).clamp(min=0) * (boxes[:, 3] - boxes[:, 1]).clamp(min=0)
    suppressed = torch.zeros(len(boxes), dtype=torch.bool)
    for index in order.tolist():
        if suppressed[index]:
            continue
        keep.append(index)
        top_left = torch.maximum(boxes[index, :2], boxes[:, :2])
        bottom_right = torch.minimum(boxes[index, 2:], boxes[:, 2:])
        inter = (bottom_right - top_left).clamp(min=0).prod(dim=1)
        iou = inter / (areas[index] + areas - inter).clamp(min=1e-9)
        suppressed |= iou > iou_threshold
    return torch.tensor(keep, dtype=torch.long)


@functools.cache
def prepare() -> None:
    """Make `import torchvision` work on a CPU-only torch (see the module docstring). Idempotent."""
    if importlib.util.find_spec("torchvision") is None:
        return
    import sys

    import torch

    if "torchvision" in sys.modules:
        return  # already imported (so it worked, or it was fixed by an earlier call)
    spec = importlib.util.find_spec("torchvision")
    locations = list(spec.submodule_search_locations or []) if spec else []
    for folder in locations:  # what torchvision's own import does first; importing it would run its __init__
        for library_file in Path(folder).glob("_C*.so"):
            try:
                torch.ops.load_library(str(library_file))
                return
            except (ImportError, OSError):
                continue
    log.info("torchvision's C++ ops are not loadable with this torch; using a pure-torch nms")
    library = torch.library.Library("torchvision", "DEF")
    for op in ("nms", "qnms"):
        library.define(f"{op}(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
        library.impl(op, nms, "CPU")
    _keep.append(library)  # a Library unregisters its ops when collected


_keep: list[Any] = []
