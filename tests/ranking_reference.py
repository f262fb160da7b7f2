"""sentence-transformers' ranking losses and open_clip's `ClipLoss`, in PyTorch.

Both are test-only dependencies of the torch environment.
sentence-transformers imports as a package; open_clip is installed without
its dependencies, and its package `__init__` imports torchvision (which
PyPI builds for the CUDA build of PyTorch, not the CPU one), so its
`loss.py`, which needs only PyTorch, is loaded from its file.
"""

from __future__ import annotations

import importlib.util
import warnings
from pathlib import Path
from typing import Any

SENTENCE_TRANSFORMERS_VERSION = "6.3.0"
OPEN_CLIP_VERSION = "3.3.0"


def _root(package: str) -> Path | None:
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations)))


def available() -> bool:
    """Whether both references are installed."""
    return _root("sentence_transformers") is not None and _root("open_clip") is not None


def open_clip_loss() -> Any:
    """open_clip's `ClipLoss` class, from `open_clip/loss.py`."""
    root = _root("open_clip")
    if root is None:
        raise ModuleNotFoundError("open_clip is not installed")
    spec = importlib.util.spec_from_file_location(
        "_open_clip_reference_loss", root / "loss.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.ClipLoss


def multiple_negatives_ranking(
    columns: list, scale: float, similarity: str, symmetric: bool
) -> Any:
    """sentence-transformers' loss of the columns `[anchor, positive, *negatives]`.

    `MultipleNegativesRankingLoss`, or `MultipleNegativesSymmetricRankingLoss`
    with `symmetric`, with `cos_sim` or `dot_score`, through
    `compute_loss_from_embeddings` (the model is not used there).
    """
    from sentence_transformers.sentence_transformer import losses
    from sentence_transformers.util import cos_sim, dot_score

    function = {"cosine": cos_sim, "dot": dot_score}[similarity]
    with warnings.catch_warnings():
        # The symmetric class is deprecated in favour of arguments of the
        # other; it is the documented reference all the same.
        warnings.simplefilter("ignore", DeprecationWarning)
        cls = (
            losses.MultipleNegativesSymmetricRankingLoss
            if symmetric
            else losses.MultipleNegativesRankingLoss
        )
        loss = cls(None, scale=scale, similarity_fct=function)
    return loss.compute_loss_from_embeddings(list(columns), None)
