"""Griffe extension used by the docs build: show `Example:` doctests as code.

The package's docstrings end with an `Example:` line followed by doctest
lines at the same indentation, which reads well in `help()` and runs under
`pytest --doctest-modules`. Google-style parsing only recognises a section
whose body is indented, so without this the doctest would render as prose
(and `[1.0, 0.0]` in its output as a broken Markdown link). This indents the
body and names the section `Examples:`, which Griffe renders as code.
"""

from __future__ import annotations

import re
from typing import Any

import griffe

_EXAMPLE_HEADER = re.compile(r"^Examples?:\s*$")
_NEXT_SECTION = re.compile(r"^[A-Z][A-Za-z ]*:\s*$")


def indent_examples(text: str) -> str:
    """Indent the body of every unindented `Example:` section of `text`."""
    lines = text.splitlines()
    result: list[str] = []
    inside = False
    for line in lines:
        if _EXAMPLE_HEADER.match(line):
            inside = True
            result.append("Examples:")
            continue
        if inside and _NEXT_SECTION.match(line):
            inside = False
        if inside and line and not line.startswith((" ", "\t")):
            line = "    " + line
        result.append(line)
    return "\n".join(result)


class DoctestExamples(griffe.Extension):
    """Rewrites docstrings as they are loaded; see the module docstring."""

    def on_instance(self, *, obj: griffe.Object, **kwargs: Any) -> None:
        if obj.docstring is not None:
            obj.docstring.value = indent_examples(obj.docstring.value)
