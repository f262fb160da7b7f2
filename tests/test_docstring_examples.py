"""Runs every `Examples:` section of the package's docstrings, on every backend.

Each docstring with doctest lines is one test case, run in a fresh namespace
(its module's globals) after the autouse fixture of `conftest.py` has reset
Keras' state. The examples print only backend-independent values (`float()`,
`round()`, `.tolist()`), so the same expected output holds on TensorFlow,
JAX and PyTorch. An example that needs TensorFlow itself is skipped, with the
reason, where TensorFlow is not installed.
"""

from __future__ import annotations

import doctest
import importlib
import importlib.util
import inspect
import pkgutil

import pytest

import keras_siamese

# Raise this bound when you add examples; it keeps them from disappearing.
MIN_EXAMPLES = 70

# Examples that call TensorFlow whatever the backend (`as_tf_dataset`).
NEEDS_TENSORFLOW = {"keras_siamese.data.base.SampledDataset.as_tf_dataset"}

OPTIONS = doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE


def _modules() -> list:
    names = [keras_siamese.__name__]
    for info in pkgutil.walk_packages(
        keras_siamese.__path__, prefix=f"{keras_siamese.__name__}."
    ):
        if info.name.rsplit(".", 1)[-1] != "__main__":
            names.append(info.name)
    return [importlib.import_module(name) for name in sorted(names)]


def _examples() -> list[doctest.DocTest]:
    finder = doctest.DocTestFinder(exclude_empty=True)
    found = {}
    for module in _modules():
        for test in finder.find(module):
            if test.examples:
                found[test.name] = test
    return [found[name] for name in sorted(found)]


EXAMPLES = _examples()


def test_every_public_class_and_function_has_an_example():
    documented = {test.name for test in EXAMPLES}
    missing = []
    for name in keras_siamese.__all__:
        obj = getattr(keras_siamese, name)
        if inspect.isclass(obj) or inspect.isfunction(obj):
            if f"{obj.__module__}.{obj.__qualname__}" not in documented:
                missing.append(name)
    assert not missing, f"public names without a docstring example: {missing}"


def test_examples_are_collected():
    assert len(EXAMPLES) >= MIN_EXAMPLES
    assert NEEDS_TENSORFLOW <= {test.name for test in EXAMPLES}


def test_examples_use_the_indented_examples_section():
    # mkdocstrings renders doctest lines as code only inside an indented
    # Google-style `Examples:` section.
    for test in EXAMPLES:
        lines = test.docstring.splitlines()
        header = [i for i, line in enumerate(lines) if line.strip() == "Examples:"]
        assert header, f"{test.name}: doctest lines outside an `Examples:` section"
        indent = len(lines[header[0]]) - len(lines[header[0]].lstrip())
        body = [line for line in lines[header[0] + 1 :] if line.strip()]
        assert all(len(line) - len(line.lstrip()) > indent for line in body), (
            f"{test.name}: the body of `Examples:` must be indented"
        )


@pytest.mark.parametrize("example", EXAMPLES, ids=lambda test: test.name)
def test_docstring_example(example, tmp_path, monkeypatch):
    if (
        example.name in NEEDS_TENSORFLOW
        and importlib.util.find_spec("tensorflow") is None
    ):
        pytest.skip("this example needs TensorFlow installed")
    monkeypatch.chdir(tmp_path)
    example.globs = dict(example.globs)
    runner = doctest.DocTestRunner(optionflags=OPTIONS)
    report: list[str] = []
    result = runner.run(example, out=report.append, clear_globs=True)
    assert result.attempted > 0
    assert result.failed == 0, "".join(report)
