"""Importing the package loads the selected backend and no other."""

import os
import subprocess
import sys

import keras

BACKEND_MODULES = {"tensorflow": "tensorflow", "jax": "jax", "torch": "torch"}


def test_import_loads_only_the_selected_backend():
    selected = keras.backend.backend()
    code = (
        "import sys, keras_siamese, keras; "
        "print(keras.backend.backend()); "
        "print(','.join(sorted(m for m in ('tensorflow', 'jax', 'torch') if m in sys.modules)))"
    )
    env = {**os.environ, "KERAS_BACKEND": selected}
    result = subprocess.run(
        [sys.executable, "-c", code],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    backend_line, loaded_line = result.stdout.strip().splitlines()[-2:]
    assert backend_line == selected
    loaded = set(filter(None, loaded_line.split(",")))
    assert loaded <= {BACKEND_MODULES[selected]}, f"unexpected backends: {loaded}"


def test_package_source_imports_no_backend_directly():
    import keras_siamese

    root = os.path.dirname(keras_siamese.__file__)
    offenders = []
    for folder, _, files in os.walk(root):
        for name in files:
            if not name.endswith(".py"):
                continue
            path = os.path.join(folder, name)
            with open(path, encoding="utf-8") as handle:
                for number, line in enumerate(handle, 1):
                    stripped = line.strip()
                    if stripped.startswith(("import ", "from ")) and any(
                        stripped.split()[1].split(".")[0] == module
                        for module in BACKEND_MODULES.values()
                    ):
                        offenders.append(f"{path}:{number}: {stripped}")
    assert not offenders, "backend imported directly:\n" + "\n".join(offenders)
