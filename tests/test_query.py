"""query.py: its arguments checked (one error line, exit 2), query words case-folded the way
the vocabulary was built, and a phrase typed with a space pointed to its token."""

from __future__ import annotations

import pytest
import torch

from w2v.export import save_vectors, write_word2vec
from w2v.query import answer
from w2v.query import main as query_main
from w2v.vectors import KeyedVectors

WORDS = ["king", "queen", "wing", "sing", "ring", "new", "york", "new_york", "city", "kings"]


def table() -> torch.Tensor:
    return torch.randn(len(WORDS), 5, generator=torch.Generator().manual_seed(0))


@pytest.fixture
def txt(tmp_path):
    """Lowercased vectors from another tool: a word2vec text file records no tokenizer."""
    path = tmp_path / "vectors.txt"
    write_word2vec(path, WORDS, table(), binary=False)
    return path


def run(argv, capsys) -> tuple[int, str, str]:
    try:
        query_main([str(a) for a in argv])
        code = 0
    except SystemExit as stop:
        code = stop.code
    out, err = capsys.readouterr()
    return code, out, err


@pytest.mark.parametrize("arg,msg", [
    ("topn=0", "topn=0 is out of range: it must be an integer >= 1"),
    ("topn=-3", "topn=-3 is out of range: it must be an integer >= 1"),
    ("restrict_vocab=-5", "restrict_vocab=-5 is out of range: it must be an integer >= 1"),
    ("restrict_vocab=0", "restrict_vocab=0 is out of range"),
])
def test_out_of_range_arguments_are_one_error_line(txt, capsys, arg, msg):
    code, out, err = run([f"vectors={txt}", arg, "king"], capsys)
    assert code == 2 and not out
    assert err.startswith(f"error: {msg}") and err.count("\n") == 1, err


def test_capitalised_word_finds_its_lowercase_entry_in_word2vec_files(txt, capsys):
    code, out, err = run([f"vectors={txt}", "topn=3", "King"], capsys)
    assert code == 0, err
    kv = KeyedVectors(WORDS, table())
    expected = [w for w, _ in kv.most_similar("king", topn=3)]
    assert out.splitlines()[0] == "nearest to King"
    assert [line.split()[0] for line in out.splitlines()[1:]] == expected


def test_mixed_case_vocabulary_keeps_case_but_suggests_the_other_case_first():
    kv = KeyedVectors(["King", "wing", "sing", "ring", "Paris"], torch.randn(5, 3))
    assert "Paris" in kv and "paris" not in kv  # the vocabulary has case: no folding
    with pytest.raises(Exception, match=r"did you mean 'King'"):
        kv.id("king")


def test_a_phrase_typed_with_a_space_is_pointed_to_its_token(txt, tmp_path, capsys):
    code, out, err = run([f"vectors={txt}", "new york"], capsys)
    assert code == 2 and not out
    assert err.startswith("error: cannot read query 'new york'") and err.count("\n") == 1
    assert err.rstrip().endswith("the vocabulary has the phrase 'new_york': query new_york")
    # The same from vectors.pt (a tokenizer without phrases), and case-folded.
    pt = tmp_path / "v.pt"
    save_vectors(pt, WORDS, None, table(), {"lowercase": True, "pattern": None})
    code, _, err = run([f"vectors={pt}", "New York"], capsys)
    assert code == 2 and "query new_york" in err
    # Words the vocabulary has no phrase for: no hint.
    code, _, err = run([f"vectors={txt}", "new city"], capsys)
    assert code == 2 and "phrase" not in err


def test_an_analogy_of_three_known_words_is_not_taken_for_a_phrase():
    kv = KeyedVectors(WORDS, table())
    assert answer(kv, "king kings queen", topn=1).startswith("king : kings :: queen : ?")
