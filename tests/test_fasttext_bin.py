"""fastText's .bin format (w2v.fasttext_bin): fastText's own files read, damage refused."""

from __future__ import annotations

import struct

import numpy as np
import pytest

from w2v.errors import W2VError
from w2v.fasttext_bin import read_fasttext_bin, write_fasttext_bin


def test_a_file_fasttext_wrote_reads_back_equal(tmp_path):
    fasttext = pytest.importorskip("fasttext")
    corpus = tmp_path / "c.txt"
    corpus.write_text("the king and the queen and the kings\n" * 30)
    model = fasttext.train_unsupervised(str(corpus), model="cbow", minn=2, maxn=4, bucket=500,
                                        dim=5, epoch=1, minCount=1, verbose=0)
    model.save_model(str(tmp_path / "m.bin"))
    got = read_fasttext_bin(tmp_path / "m.bin")
    assert got.words == model.words
    np.testing.assert_array_equal(got.input_matrix, model.get_input_matrix())
    np.testing.assert_array_equal(got.output_matrix, model.get_output_matrix())
    assert (got.args["model"], got.args["loss"], got.args["minn"], got.args["maxn"],
            got.args["bucket"], got.args["dim"]) == ("cbow", "negative", 2, 4, 500, 5)


def write_small(path, **kw):
    rng = np.random.default_rng(0)
    args = dict(arch="skipgram", loss="hs", dim=3, window=5, epochs=1, min_count=1,
                negative=5, minn=2, maxn=3, bucket=10, lr=0.05, sample=1e-4, ntokens=9) | kw
    write_fasttext_bin(path, ["a", "bb"], [5, 4], rng.random((12, 3)), rng.random((1, 3)),
                       **args)


def test_hs_output_is_padded_to_a_row_per_word_and_reads_back(tmp_path):
    write_small(tmp_path / "m.bin")
    got = read_fasttext_bin(tmp_path / "m.bin")
    assert got.words == ["a", "bb"] and got.counts == [5, 4]
    assert got.input_matrix.shape == (12, 3) and got.output_matrix.shape == (2, 3)
    assert not got.output_matrix[1].any()


@pytest.mark.parametrize("damage", ["truncated", "garbage", "huge-dictionary", "huge-matrix"])
def test_damage_is_one_line_and_allocates_nothing_large(tmp_path, damage):
    path = tmp_path / "m.bin"
    write_small(path)
    data = bytearray(path.read_bytes())
    if damage == "truncated":
        data = data[:-7]
    elif damage == "garbage":
        data = bytearray(b"\x00" * 64)
    elif damage == "huge-dictionary":
        data[64:68] = struct.pack("<i", 2**31 - 1)  # entries
    else:
        at = data.index(b"bb\x00") + 3 + 9  # after the last entry: quant flag, rows, cols
        data[at + 1:at + 9] = struct.pack("<q", 10**14)
    path.write_bytes(bytes(data))
    with pytest.raises(W2VError) as err:
        read_fasttext_bin(path)
    assert "\n" not in str(err.value) and str(path) in str(err.value)
