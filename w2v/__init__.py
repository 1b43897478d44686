"""w2v: word2vec (skip-gram and CBOW) on PyTorch.

    embedding, index = w2v.load_embedding("outputs/<run>/vectors.pt")   # nn.Embedding
    tokens = w2v.tokenize("New York is big", "outputs/<run>/vectors.pt")  # as training did
"""

import importlib

__version__ = "0.1.0"
__all__ = ["KeyedVectors", "Word2Vec", "load_embedding", "load_tokenizer", "load_vectors",
           "tokenize"]

_HOMES = {"KeyedVectors": "w2v.vectors", "Word2Vec": "w2v.model",
          "load_embedding": "w2v.export", "load_tokenizer": "w2v.export",
          "load_vectors": "w2v.export", "tokenize": "w2v.export"}


def __getattr__(name: str):
    # Imported on first use: `python -m w2v.export` must not find w2v.export already imported
    # by the package (runpy warns on stderr), and `import w2v` stays cheap.
    if name in _HOMES:
        return getattr(importlib.import_module(_HOMES[name]), name)
    raise AttributeError(f"module 'w2v' has no attribute {name!r}")
