"""The engine protocol of an `EmbeddingIndex`, the registry of engines, and
the bounds of the built-in engines' settings.

An engine proposes candidate neighbours; the index measures every candidate
with the exact distance and keeps the nearest (`_rerank.py`), whichever
engine proposed them. The bounds are checked by the constructors and again
when a saved index is read, so that a tampered `index.json` cannot bring in
a value that makes search crawl or breaks faiss (whose settings are C
`int`s).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from keras_siamese._checks import check_positive_int
from keras_siamese.distances import Distance
from keras_siamese.retrieval._search import DEFAULT_BLOCK_BYTES

#: The built-in engines: exact on the Keras backend, exact faiss, faiss HNSW.
ENGINES = ("keras", "faiss", "faiss-hnsw")

ENGINE_LIMITS = {
    # A score block beyond 1 GiB gains no speed (a block then holds
    # thousands of query rows by the widest tile) and only risks exhausting
    # the device's memory; a tampered save must not ask for more.
    "block_bytes": 2**30,
    # faiss' HNSW `M`: links per node; typical graphs use 16-64.
    "hnsw_neighbors": 2**10,
    # HNSW breadths: near these, HNSW is slower than an exact search.
    "ef_search": 2**16,
    "ef_construction": 2**16,
}

# A saved engine's options are JSON scalars, and few.
_OPTION_TYPES = (str, int, float, bool, type(None))
_MAX_OPTIONS = 64


def check_engine_setting(value: Any, argument: str) -> int:
    """Return `value` as an int in `[1, ENGINE_LIMITS[argument]]`.

    Raises:
        TypeError: if `value` is not an integer.
        ValueError: if it is below 1 or above its limit.
    """
    value = check_positive_int(value, argument)
    limit = ENGINE_LIMITS[argument]
    if value > limit:
        raise ValueError(f"`{argument}` must be at most {limit}; got {value}.")
    return value


class Engine:
    """How an `EmbeddingIndex` finds candidate neighbours; subclass it to add one.

    An engine proposes, for each query, some gallery rows likely to be among
    its `k` nearest. The index then measures every proposed row with the
    distance's exact form (float64), keeps the `k` nearest, ties broken by
    the lower row number, and searches exactly (with the built-in `"keras"`
    engine) any query given fewer than `k` usable candidates. So an engine
    decides which rows are looked at, never the distances or the order
    returned, and an approximate engine can miss a neighbour but never
    report a wrong distance.

    A subclass sets `name` and implements `add` and `candidates`; it may
    override `bind` (to check the distance, or build its structures),
    `get_config` (the options to save) and `needs` (the distance forms it
    needs, see `keras_siamese.distances.FORMS`). `register` it to use it by
    name and to save indexes that use it. One engine object serves one
    index. `candidates` may run in several threads at once, and while
    another thread's search calls `add` (never two `add` at once): an
    engine whose structures are unsafe for that holds a lock, as the faiss
    engines do.

    Attributes:
        name: the name the engine is registered and saved under.
        needs: distance forms the engine needs, besides those of exact
            search (`"search"`); the faiss engines need `"faiss"`.
        block_bytes: memory budget of the exact search the index runs for
            queries given too few candidates.
        distance: the index's `Distance`, once `bind` has been called.

    Examples:
        An engine proposing every gallery row (exact, and slow for large
        galleries):

        >>> import numpy as np
        >>> from keras_siamese import EmbeddingIndex
        >>> class EveryRow(Engine):
        ...     name = "every-row"
        ...
        ...     def add(self, embeddings):
        ...         pass  # `candidates` reads the gallery it is given
        ...
        ...     def candidates(self, queries, k, references):
        ...         every = np.arange(len(references))
        ...         return np.broadcast_to(every, (len(queries), len(references)))
        >>> index = EmbeddingIndex(engine=EveryRow())
        >>> index.add(np.array([[0.0, 0.0], [3.0, 4.0], [1.0, 0.0]]))
        >>> index.search(np.array([[0.9, 0.1]]), k=2)[1].tolist()
        [[2, 0]]
    """

    name: str = ""
    needs: tuple[str, ...] = ()
    block_bytes: int = DEFAULT_BLOCK_BYTES
    distance: Distance | None = None

    def bind(self, distance: Distance) -> None:
        """Called once, by the index that takes this engine, with its distance.

        The distance already has the forms of `needs`. Overrides call
        `super().bind(distance)` first.

        Raises:
            ValueError: if the engine already serves an index.
        """
        if self.distance is not None:
            raise ValueError(
                f"This {type(self).__name__} engine already serves an index; an "
                "engine holds its index's rows, so give each index its own."
            )
        self.distance = distance

    def add(self, embeddings: np.ndarray) -> None:
        """Take rows appended to the gallery, in order, before they are searched.

        Args:
            embeddings: float32 `(n, dim)`, the rows numbered after those
                given before.
        """
        raise NotImplementedError(f"{type(self).__name__} must implement `add`.")

    def candidates(self, queries: np.ndarray, k: int, references: np.ndarray) -> Any:
        """Candidate rows of the reference set for each query.

        Args:
            queries: float32 `(n, dim)`.
            k: neighbours wanted per query (`1 <= k <= len(references)`).
            references: float32 `(m, dim)`, the index's rows as of this search: the
                first `m` rows given to `add` (it may have been given more
                since, which this search ignores).

        Returns:
            An `(n, c)` integer array of row numbers, any order; `-1` where
            there is none. Rows of `m` or beyond and repeats are ignored.
        """
        raise NotImplementedError(f"{type(self).__name__} must implement `candidates`.")

    def get_config(self) -> dict[str, Any]:
        """The options that rebuild this engine by `from_config` (JSON scalars)."""
        return {}

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> Engine:
        """A new, unbound engine from the options of `get_config`."""
        return cls(**config)

    def __repr__(self) -> str:
        options = ", ".join(
            f"{key}={value!r}" for key, value in self.get_config().items()
        )
        return f"{type(self).__name__}({options})"


class BuiltinEngine(Engine):
    """The settings every built-in engine takes.

    Each built-in engine uses the settings it needs and keeps the others, so
    that an index saved with one loads with another
    (`EmbeddingIndex.load(path, engine=...)`) with the settings it was given.

    Args:
        block_bytes: memory budget of one block of scores of the exact
            search, at most 2**30 (1 GiB).
        hnsw_neighbors: links per node of the HNSW graph (faiss' `M`), at
            most 1024.
        ef_search: HNSW search breadth, at most 65536; larger is slower and
            more accurate.
        ef_construction: HNSW construction breadth, at most 65536.

    Raises:
        TypeError: for a non-integer setting.
        ValueError: for a setting below 1 or above its bound.
    """

    def __init__(
        self,
        *,
        block_bytes: int = DEFAULT_BLOCK_BYTES,
        hnsw_neighbors: int = 32,
        ef_search: int = 64,
        ef_construction: int = 64,
    ) -> None:
        self.block_bytes = check_engine_setting(block_bytes, "block_bytes")
        self.hnsw_neighbors = check_engine_setting(hnsw_neighbors, "hnsw_neighbors")
        self.ef_search = check_engine_setting(ef_search, "ef_search")
        self.ef_construction = check_engine_setting(ef_construction, "ef_construction")

    def get_config(self) -> dict[str, Any]:
        return {key: getattr(self, key) for key in ENGINE_LIMITS}


# -- the registry -----------------------------------------------------------

_REGISTRY: dict[str, type[Engine]] = {}


def register(engine: type[Engine], *, override: bool = False) -> type[Engine]:
    """Make an engine class available by its `name`, to build and to load.

    This is the one place an engine is added: `EmbeddingIndex(engine=NAME,
    **options)` builds `engine(**options)`, and an index using it saves the
    name and `get_config()` and loads back through `from_config` (register
    it again before loading). Usable as a class decorator.

    Args:
        engine: a subclass of `Engine` with a non-empty string `name`.
        override: replace a registered engine of the same name (the built-in
            ones cannot be replaced).

    Returns:
        `engine`.

    Raises:
        TypeError: if `engine` is not a subclass of `Engine` (an instance,
            say) or has no name.
        ValueError: if the name is taken and `override` is false, or is a
            built-in one.

    Examples:
        >>> import numpy as np
        >>> @register
        ... class Brute(Engine):
        ...     name = "brute-example"
        ...
        ...     def add(self, embeddings):
        ...         pass
        ...
        ...     def candidates(self, queries, k, references):
        ...         every = np.arange(len(references))
        ...         return np.broadcast_to(every, (len(queries), len(references)))
        >>> type(get("brute-example")).__name__
        'Brute'
    """
    if not (isinstance(engine, type) and issubclass(engine, Engine)):
        raise TypeError(
            f"`engine` must be a subclass of Engine (the class, not an instance); "
            f"got {engine!r}."
        )
    name = engine.name
    if not isinstance(name, str) or not name:
        raise TypeError(
            f"An Engine needs a non-empty string `name`; {engine.__name__} has "
            f"{name!r}."
        )
    registered = _REGISTRY.get(name)
    if registered is engine:
        return engine
    if name in ENGINES and registered is not None:
        raise ValueError(f"The built-in engine {name!r} cannot be replaced.")
    if registered is not None and not override:
        raise ValueError(
            f"An engine named {name!r} is already registered; pass "
            "`override=True` to replace it."
        )
    _REGISTRY[name] = engine
    return engine


def registered(name: str) -> type[Engine] | None:
    """The engine class registered under `name`, or `None`."""
    return _REGISTRY.get(name)


def get(identifier: str | Engine, **options: Any) -> Engine:
    """A new engine by registered name and options, or an `Engine` as it is.

    Args:
        identifier: `"keras"`, `"faiss"`, `"faiss-hnsw"`, a name given to
            `register`, or an `Engine` object.
        **options: the engine's options (for a name only).

    Returns:
        The engine, not yet bound to an index.

    Raises:
        TypeError: if `identifier` is neither a string nor an `Engine`
            (an `Engine` class included), options come with an `Engine`
            object, or the engine does not take an option.
        ValueError: for an unknown name, or an option's value the engine
            refuses.

    Examples:
        >>> get("faiss-hnsw", ef_search=128).ef_search
        128
    """
    if isinstance(identifier, Engine):
        if options:
            raise TypeError(
                "`engine` is an Engine object: give it its options when you "
                f"create it, not to the index (got {sorted(options)})."
            )
        return identifier
    if isinstance(identifier, type) and issubclass(identifier, Engine):
        raise TypeError(
            f"`engine` must be an Engine instance or a name; got the class "
            f"{identifier.__name__} (call it: {identifier.__name__}())."
        )
    if not isinstance(identifier, str):
        raise TypeError(
            f"`engine` must be one of {tuple(_REGISTRY)} or an Engine; got "
            f"{identifier!r}."
        )
    engine = _REGISTRY.get(identifier)
    if engine is None:
        raise ValueError(
            f"`engine` must be one of {tuple(_REGISTRY)} or an Engine; got "
            f"{identifier!r} (a user-defined engine is known by name once "
            "`keras_siamese.retrieval.engines.register` has been called on it)."
        )
    try:
        return engine.from_config(dict(options))
    except TypeError as error:
        raise TypeError(f"engine={identifier!r}: {error}") from None


def config_of(engine: Engine, owner: str = "This index") -> dict[str, Any]:
    """`{"name": ..., **options}`: what saves `engine`.

    Raises:
        ValueError: if the engine is not registered under its name, or its
            `get_config` is not a dict of at most 64 JSON scalars.
    """
    if _REGISTRY.get(engine.name) is not type(engine):
        raise ValueError(
            f"{owner} uses the engine {type(engine).__name__} (name "
            f"{engine.name!r}), which is not registered under that name, so it "
            "cannot be saved: call `keras_siamese.retrieval.engines.register` on "
            "its class first."
        )
    options = engine.get_config()
    if (
        not isinstance(options, dict)
        or len(options) > _MAX_OPTIONS
        or "name" in options
        or not all(isinstance(key, str) for key in options)
        or not all(isinstance(value, _OPTION_TYPES) for value in options.values())
    ):
        raise ValueError(
            f"{owner} uses the engine {engine.name!r}, whose `get_config()` is not "
            f"a dict of at most {_MAX_OPTIONS} options (string keys other than "
            f"'name', values str, int, float, bool or None); got {options!r}."
        )
    return {"name": engine.name, **options}
