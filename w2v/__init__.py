"""w2v: word2vec (skip-gram and CBOW) on PyTorch.

    embedding, index = w2v.load_embedding("outputs/<run>/vectors.pt")   # nn.Embedding
"""

from w2v.export import load_embedding, load_vectors
from w2v.model import Word2Vec
from w2v.vectors import KeyedVectors

__version__ = "0.1.0"
__all__ = ["KeyedVectors", "Word2Vec", "load_embedding", "load_vectors"]
