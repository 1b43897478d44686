"""Word2Vec: losses equal their textbook formulas, sparse gradients, word2vec's init."""

from __future__ import annotations

import math
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from w2v.model import Word2Vec


def tiny_huffman():
    # 3 words, 2 inner nodes: word0 -> [node1, code 0], word1 -> [node1, node0 code 1, 0], ...
    return SimpleNamespace(
        points=np.array([[1, -1], [1, 0], [1, 0]], dtype=np.int32),
        codes=np.array([[0, 0], [1, 0], [1, 1]], dtype=np.int8),
        lengths=np.array([1, 2, 2], dtype=np.int32),
    )


def test_initialisation_follows_word2vec():
    m = Word2Vec(50, 20)
    w = m.input.weight
    assert w.abs().max() <= 0.5 / 20 and w.std() > 0
    assert torch.count_nonzero(m.output.weight) == 0
    assert isinstance(m.input, torch.nn.Embedding) and isinstance(m.output, torch.nn.Linear)
    assert m.output.bias is None


def test_negative_sampling_loss_matches_formula():
    torch.manual_seed(0)
    m = Word2Vec(10, 4)
    torch.nn.init.normal_(m.output.weight)
    inputs, targets = torch.tensor([1, 2]), torch.tensor([3, 4])
    negatives = torch.tensor([[5, 6], [4, 7]])  # second row: 4 == its target, ignored
    loss = m(inputs, targets, negatives=negatives)
    v, u = m.input.weight.detach(), m.output.weight.detach()
    expect = 0.0
    for i, t, negs in zip(inputs.tolist(), targets.tolist(), negatives.tolist()):
        expect -= math.log(torch.sigmoid(v[i] @ u[t]))
        for n in negs:
            if n != t:
                expect -= math.log(torch.sigmoid(-(v[i] @ u[n])))
    assert loss.item() == pytest.approx(expect, rel=1e-5)


def test_cbow_mean_and_sum_of_masked_context():
    torch.manual_seed(0)
    ctx = torch.tensor([[1, 2, 3]])
    mask = torch.tensor([[True, True, False]])
    mean = Word2Vec(5, 3, arch="cbow", cbow_mean=True).hidden(ctx, mask)
    m = Word2Vec(5, 3, arch="cbow", cbow_mean=False)
    total = m.hidden(ctx, mask)
    w = m.input.weight.detach()
    assert torch.allclose(total[0], w[1] + w[2])
    assert mean.shape == (1, 3)


def test_hierarchical_softmax_follows_codes():
    torch.manual_seed(0)
    m = Word2Vec(3, 4, loss="hs", huffman=tiny_huffman())
    assert m.output.weight.shape == (2, 4)  # V - 1 inner nodes
    torch.nn.init.normal_(m.output.weight)
    loss = m(torch.tensor([0]), torch.tensor([1]))
    h, u = m.input.weight.detach()[0], m.output.weight.detach()
    # word 1: node 1 with code 1 (label 0), node 0 with code 0 (label 1)
    expect = -math.log(torch.sigmoid(-(h @ u[1]))) - math.log(torch.sigmoid(h @ u[0]))
    assert loss.item() == pytest.approx(expect, rel=1e-5)


def test_softmax_is_cross_entropy_through_the_linear_layer():
    torch.manual_seed(0)
    m = Word2Vec(6, 4, loss="softmax")
    torch.nn.init.normal_(m.output.weight)
    inputs, targets = torch.tensor([1, 2]), torch.tensor([3, 0])
    logits = m.output(m.input(inputs))
    expect = torch.nn.functional.cross_entropy(logits, targets, reduction="sum")
    assert m(inputs, targets).item() == pytest.approx(expect.item(), rel=1e-6)


@pytest.mark.parametrize("loss", ["negative", "hs"])
def test_sparse_gradients_reach_both_tables(loss):
    m = Word2Vec(3, 4, loss=loss, sparse=True, huffman=tiny_huffman())
    negatives = torch.tensor([[2, 0]]) if loss == "negative" else None
    m(torch.tensor([0]), torch.tensor([1]), negatives=negatives).backward()
    assert m.input.weight.grad.is_sparse and m.output.weight.grad.is_sparse
    dense = Word2Vec(3, 4, loss=loss, huffman=tiny_huffman())
    dense.load_state_dict(m.state_dict())
    dense(torch.tensor([0]), torch.tensor([1]), negatives=negatives).backward()
    assert torch.allclose(m.input.weight.grad.to_dense(), dense.input.weight.grad)
    assert torch.allclose(m.output.weight.grad.to_dense(), dense.output.weight.grad)


def test_sgd_step_with_sum_reduction_is_word2vecs_update():
    # One skip-gram NS pair: word2vec.c's update of the output row is lr * (1 - sigma(f)) * v.
    torch.manual_seed(0)
    m = Word2Vec(4, 3)
    torch.nn.init.normal_(m.output.weight)
    v, u = m.input.weight.detach()[1].clone(), m.output.weight.detach()[2].clone()
    opt = torch.optim.SGD(m.parameters(), lr=0.025)
    m(torch.tensor([1]), torch.tensor([2]), negatives=torch.tensor([[2]])).backward()
    opt.step()
    g = 0.025 * (1 - torch.sigmoid(v @ u))
    # the noise word equals the target, so only the positive term moves the row
    assert torch.allclose(m.output.weight.detach()[2], u + g * v, atol=1e-6)
    assert torch.allclose(m.input.weight.detach()[1], v + g * u, atol=1e-6)
