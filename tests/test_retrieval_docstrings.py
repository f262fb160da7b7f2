"""The docstring examples of the retrieval modules run on every backend."""

from __future__ import annotations

import doctest

import pytest

from keras_siamese.callbacks import retrieval_evaluation
from keras_siamese.metrics import evaluation
from keras_siamese.retrieval import calibration, index, metrics, one_shot, verifier


@pytest.mark.parametrize(
    "module",
    [calibration, index, metrics, one_shot, verifier, retrieval_evaluation, evaluation],
    ids=lambda module: module.__name__.rsplit(".", 1)[-1],
)
def test_docstring_examples_run(module):
    failures, attempted = doctest.testmod(module, verbose=False)[:2]
    assert attempted > 0
    assert failures == 0
