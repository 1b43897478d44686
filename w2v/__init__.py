"""w2v: word2vec (skip-gram and CBOW) on PyTorch."""

__version__ = "0.1.0"
