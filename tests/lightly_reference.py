"""lightly's self-supervised losses, loaded without lightly's package `__init__`.

lightly (a test-only dependency of the torch environment, installed without
its dependencies) imports torchvision from `lightly.loss`, and PyPI's
torchvision does not load with the CPU build of PyTorch. The loss modules
themselves need only PyTorch (and `lightly.utils.dist`, which needs only
PyTorch too), so each is loaded from its file. `std_of_l2_normalized` lives
in `lightly.utils.debug`, whose imports of torchvision, PIL and lightly's
transforms (unused by that function) are stubbed while it loads.
"""

from __future__ import annotations

import importlib.util
import sys
import types
from pathlib import Path
from typing import Any

VERSION = "1.6.0"

# Modules `lightly/utils/debug.py` imports for its plotting helpers only.
_DEBUG_STUBS = {
    "torchvision": {},
    "PIL": {},
    "PIL.Image": {"Image": object},
    "lightly.transforms": {},
    "lightly.transforms.multi_view_transform": {"MultiViewTransform": object},
    "lightly.transforms.torchvision_v2_compatibility": {"torchvision_transforms": None},
}


def root() -> Path | None:
    """The directory of the installed `lightly` package, or `None`."""
    spec = importlib.util.find_spec("lightly")
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations)))


def load(relative: str, stubs: dict[str, dict] | None = None) -> types.ModuleType:
    """The module at `lightly/<relative>`, executed from its file.

    Args:
        relative: the path of the module inside the package, such as
            `"loss/barlow_twins_loss.py"`.
        stubs: module names to stand in for, while the module loads, by
            empty modules with the given attributes (names already imported
            are left alone).

    Raises:
        ModuleNotFoundError: if lightly is not installed.
    """
    base = root()
    if base is None:
        raise ModuleNotFoundError("lightly is not installed")
    added = []
    for name, attributes in (stubs or {}).items():
        if name not in sys.modules:
            module = types.ModuleType(name)
            for key, value in attributes.items():
                setattr(module, key, value)
            sys.modules[name] = module
            added.append(name)
    try:
        name = "_lightly_reference_" + relative.replace("/", "_").removesuffix(".py")
        spec = importlib.util.spec_from_file_location(name, base / relative)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
    finally:
        for name in added:
            del sys.modules[name]
    return module


def losses() -> dict[str, Any]:
    """lightly's `NegativeCosineSimilarity`, `BarlowTwinsLoss`, `VICRegLoss`."""
    return {
        "NegativeCosineSimilarity": load(
            "loss/negative_cosine_similarity.py"
        ).NegativeCosineSimilarity,
        "BarlowTwinsLoss": load("loss/barlow_twins_loss.py").BarlowTwinsLoss,
        "VICRegLoss": load("loss/vicreg_loss.py").VICRegLoss,
    }


def std_of_l2_normalized() -> Any:
    """lightly's `lightly.utils.debug.std_of_l2_normalized`."""
    return load("utils/debug.py", _DEBUG_STUBS).std_of_l2_normalized
