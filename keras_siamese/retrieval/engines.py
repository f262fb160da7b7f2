"""Search engines of an `EmbeddingIndex`: the protocol, the built-in ones, the registry.

An engine proposes candidate neighbours; the index measures them all with
the exact distance and keeps the nearest (see `Engine`). The built-in
engines are `"keras"` (`ExactEngine`, exact on the Keras backend, the
default), `"faiss"` (`FaissEngine`, faiss' exact flat index) and
`"faiss-hnsw"` (`FaissHNSWEngine`, faiss' approximate HNSW graph). `register`
adds one by name.
"""

from keras_siamese.retrieval._engines import (
    ENGINE_LIMITS,
    ENGINES,
    BuiltinEngine,
    Engine,
    get,
    register,
)
from keras_siamese.retrieval._exact import ExactEngine
from keras_siamese.retrieval._faiss import FaissEngine, FaissHNSWEngine

for _engine in (ExactEngine, FaissEngine, FaissHNSWEngine):
    register(_engine)

__all__ = [
    "ENGINES",
    "ENGINE_LIMITS",
    "BuiltinEngine",
    "Engine",
    "ExactEngine",
    "FaissEngine",
    "FaissHNSWEngine",
    "get",
    "register",
]
