"""Chapter 1: the tokenizer module, against known answers, properties and HF `tokenizers`."""
from __future__ import annotations

import json
import math
import os
import random
import subprocess
import sys
import time

import pytest
import regex
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from llmcourse import tokenizer as T
from llmcourse.course import tokenizer_oracles as oracles
from llmcourse.course.corpus import generate_corpus

# Any Unicode text: letters of every script, emoji, combining marks, controls, empty.
unicode_text = st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=80)
samples = ["", "hello world", "naïve café", "e\u0301\u0302", "👩‍💻🚀", "大型语言模型", "  spaces\t\n", "it's 2024!"]


@pytest.fixture(scope="module")
def corpus() -> str:
    return generate_corpus(200_000, seed=1)


@pytest.fixture(scope="module")
def trained(corpus) -> T.BPETokenizer:
    return T.BPETokenizer.train(corpus, 600, special_tokens=["<|endoftext|>", "<|pad|>"])


# --- bytes and characters ---------------------------------------------------------------------

def test_byte_tokenizer_known_answers():
    bt = T.ByteTokenizer()
    assert bt.encode("hé") == [104, 195, 169]
    assert bt.encode("中") == [228, 184, 173]
    assert bt.decode([255]) == "\ufffd"
    with pytest.raises(ValueError):
        bt.decode([256])


@given(unicode_text)
def test_byte_tokenizer_round_trip(text):
    bt = T.ByteTokenizer()
    ids = bt.encode(text)
    assert ids == list(text.encode("utf-8"))
    assert bt.decode(ids) == text


@given(unicode_text, unicode_text)
def test_char_tokenizer_round_trip_and_unknown(train, text):
    ct = T.CharTokenizer.train(train)
    assert ct.vocab_size == len(set(train) - {T.UNKNOWN_TEXT}) + 1
    ids = ct.encode(text)
    expected = "".join(ch if ch in set(train) else T.UNKNOWN_TEXT for ch in text)
    assert ct.decode(ids) == expected


# --- the BPE building blocks ------------------------------------------------------------------

def test_pair_counts_and_merge_known_answers():
    assert T.get_pair_counts([1, 2, 3, 1, 2]) == {(1, 2): 2, (2, 3): 1, (3, 1): 1}
    assert T.merge([1, 1, 1], (1, 1), 9) == [9, 1]
    assert T.merge([1, 2, 3, 1, 2], (1, 2), 99) == [99, 3, 99]


@given(st.lists(st.integers(0, 3), max_size=30), st.integers(0, 3), st.integers(0, 3))
def test_pair_counts_and_merge_match_the_definitions(ids, a, b):
    assert T.get_pair_counts(ids) == oracles.naive_pair_counts(ids)
    assert T.merge(ids, (a, b), 9) == oracles.merge_by_string_replace(ids, (a, b), 9)


def test_learn_merges_aaabdaaabac():
    """Wikipedia's example: aa -> Z, ab -> Y (the tie with Za goes to the smaller pair), ZY -> X."""
    ids = tuple("abcd".index(ch) for ch in "aaabdaaabac")
    merges, vocab = T.learn_merges({ids: 1}, [b"a", b"b", b"c", b"d"], 7)
    assert list(merges.items()) == [((0, 0), 4), ((0, 1), 5), ((4, 5), 6)]
    assert vocab[4:] == [b"aa", b"ab", b"aaab"]
    ranks = {pair: rank for rank, pair in enumerate(merges)}
    assert T.bpe_encode_word(list(ids), ranks, merges) == [6, 3, 6, 0, 2]  # X d X a c


word_counts_strategy = st.dictionaries(st.tuples(st.integers(0, 3)).flatmap(
    lambda first: st.lists(st.integers(0, 3), max_size=8).map(lambda rest: first + tuple(rest))),
    st.integers(1, 5), min_size=1, max_size=10)


@given(word_counts_strategy, st.integers(0, 15))
@settings(max_examples=150, suppress_health_check=[HealthCheck.too_slow])
def test_incremental_training_equals_the_definition(word_counts, extra):
    vocab = [bytes([97 + i]) for i in range(4)]
    got = T.learn_merges(word_counts, vocab, 4 + extra)
    want = oracles.naive_learn_merges(word_counts, vocab, 4 + extra)
    assert list(got[0].items()) == list(want[0].items())
    assert got[1] == want[1]


def assert_same_training(word_counts, vocab, vocab_size):
    fast = T.learn_merges(word_counts, vocab, vocab_size)
    simple = T.learn_merges_simple(word_counts, vocab, vocab_size)
    assert list(simple[0].items()) == list(fast[0].items()), \
        f"learn_merges_simple learned {simple[0]}, learn_merges {fast[0]}"
    assert simple[1] == fast[1], f"learn_merges_simple built the vocabulary {simple[1]}, learn_merges {fast[1]}"


@given(word_counts_strategy, st.integers(0, 15))
@settings(max_examples=100, suppress_health_check=[HealthCheck.too_slow])
def test_simple_training_loop_equals_learn_merges(word_counts, extra):
    """The plain loop built from get_pair_counts and merge learns what the incremental one learns."""
    assert_same_training(word_counts, [bytes([97 + i]) for i in range(4)], 4 + extra)


@pytest.mark.parametrize("text", [
    "aaabdaaabac",
    "abcdabcd abcdabcd",  # every pair ties with every other
    "ab ba ab ba aa bb",  # ties between pairs of the same tokens in both orders
    "the cat sat on the mat, the cat's hat; 大型语言模型 语言 模型",
])
def test_simple_training_loop_on_text(text):
    chunks = {}
    for chunk in T.pretokenize(text):
        key = tuple(T.text_to_base_ids(chunk))
        chunks[key] = chunks.get(key, 0) + 1
    assert_same_training(chunks, T.base_vocab(), T.N_BYTES + 40)


def test_simple_training_loop_reuses_the_id_of_known_bytes():
    """'xab' can be reached as (xa, b) and as (x, ab): both merges map to one token."""
    assert_same_training({(0, 1, 2): 5, (1, 2): 4, (0, 1): 3}, [b"x", b"a", b"b"], 10)


# --- the tokenizer ----------------------------------------------------------------------------

@given(unicode_text)
@settings(max_examples=200)
def test_bpe_round_trips_any_unicode(trained, text):
    assert trained.decode(trained.encode(text)) == text


@pytest.mark.parametrize("text", samples)
def test_bpe_round_trip_samples(trained, text):
    ids = trained.encode(text)
    assert all(type(i) is int and 0 <= i < trained.vocab_size for i in ids)
    assert trained.decode(ids) == text


def test_bpe_compresses_and_counts(trained, corpus):
    assert trained.vocab_size == 600
    sample = corpus[:20_000]
    assert len(trained.encode(sample)) < 0.5 * len(sample.encode("utf-8"))


def test_overlapping_special_tokens_split_alike_in_training_and_encoding():
    """Where two special tokens start at the same place the longer wins, as in `tokenizers`:
    '<a>zq' is one special token, in the text merges are learned on as in the text encoded."""
    text = "x<a>zq y " * 50 + "<a>b " * 10
    tok = T.BPETokenizer.train(text, 300, special_tokens=["<a>", "<a>zq"])
    assert tok.encode("<a>zq") == [tok.special_tokens["<a>zq"]]
    assert tok.encode("<a>z") == [tok.special_tokens["<a>"], *tok.encode("z")]
    learned = [tok.token_bytes(i) for i in tok.merges.values()]
    assert not any(b"zq" in token for token in learned), \
        f"'zq' only occurs inside the special token '<a>zq', yet training learned {[t for t in learned if b'zq' in t]}"
    # Training sees exactly the ordinary text that encoding pre-tokenizes.
    same_order = T.BPETokenizer.train(text, 300, special_tokens=["<a>zq", "<a>"])
    assert same_order.merges == tok.merges


def test_duplicate_special_tokens_count_once():
    """As in `tokenizers` (trainer and add_special_tokens alike), a repeated special token keeps its first id."""
    tok = T.BPETokenizer.train(generate_corpus(20_000, seed=2), 300, special_tokens=["<s>", "<pad>", "<s>"])
    assert tok.special_tokens == {"<s>": 298, "<pad>": 299}
    assert tok.vocab_size == 300
    ids = tok.encode("hi<s>there<pad>")
    assert max(ids) == tok.vocab_size - 1 and tok.decode(ids) == "hi<s>there<pad>"
    direct = T.BPETokenizer([], special_tokens=["<s>", "<s>", "<pad>"])
    assert direct.special_tokens == {"<s>": 256, "<pad>": 257} and direct.vocab_size == 258


@pytest.mark.parametrize("special", [[""], ["<s>", ""], [None]])
def test_special_tokens_must_be_non_empty_strings(special):
    with pytest.raises(ValueError, match="non-empty string"):
        T.BPETokenizer([], special_tokens=special)
    with pytest.raises(ValueError, match="non-empty string"):
        T.BPETokenizer.train("hello", 300, special_tokens=special)


def test_special_tokens_are_atomic(trained):
    eot, pad = trained.special_tokens["<|endoftext|>"], trained.special_tokens["<|pad|>"]
    assert (eot, pad) == (598, 599)
    ids = trained.encode("one<|endoftext|>two<|pad|><|pad|>")
    assert ids.count(eot) == 1 and ids.count(pad) == 2
    assert trained.decode(ids) == "one<|endoftext|>two<|pad|><|pad|>"


def test_training_is_deterministic_across_processes(tmp_path):
    """Same corpus and settings -> same merges, whatever the hash seed of the process."""
    code = ("import json, sys; from llmcourse.tokenizer import BPETokenizer; "
            "from llmcourse.course.corpus import generate_corpus; "
            "t = BPETokenizer.train(generate_corpus(50_000, seed=3), 400); "
            "print(json.dumps([list(p) for p in t.merges]))")
    outputs = set()
    for seed in ("1", "2"):
        env = dict(os.environ, PYTHONHASHSEED=seed, PYTHONPATH=os.pathsep.join(sys.path))
        run = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
        outputs.add(run.stdout)
    assert len(outputs) == 1


def test_save_load_round_trip(trained, tmp_path):
    path = tmp_path / "tok.json"
    trained.save(path)
    loaded = T.BPETokenizer.load(path)
    assert loaded.merges == trained.merges and loaded.special_tokens == trained.special_tokens
    for text in samples + ["x<|endoftext|>y"]:
        assert loaded.encode(text) == trained.encode(text)


def test_load_refuses_bad_files(tmp_path):
    with pytest.raises(FileNotFoundError, match="no tokenizer file"):
        T.BPETokenizer.load(tmp_path / "missing.json")
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(ValueError, match="not valid JSON"):
        T.BPETokenizer.load(bad)
    bad.write_text(json.dumps({"format": "something else"}))
    with pytest.raises(ValueError, match="format"):
        T.BPETokenizer.load(bad)
    bad.write_text(json.dumps({"format": T.BPE_FORMAT, "version": 999}))
    with pytest.raises(ValueError, match="version"):
        T.BPETokenizer.load(bad)


def test_train_refuses_too_small_vocab():
    with pytest.raises(ValueError, match="too small"):
        T.BPETokenizer.train("abc", 100)


# --- parity with the tokenizers library -------------------------------------------------------

@pytest.mark.parity
def test_exported_json_loads_in_tokenizers_with_same_ids(trained, corpus, tmp_path):
    from tokenizers import Tokenizer

    path = tmp_path / "tokenizer.json"
    trained.to_hf_json(path)
    hf = Tokenizer.from_file(str(path))
    assert hf.get_vocab_size() == trained.vocab_size
    for text in samples + [corpus[:5000], "a<|endoftext|>b"]:
        assert hf.encode(text).ids == trained.encode(text)
        assert hf.decode(trained.encode(text), skip_special_tokens=False) == text


@pytest.mark.parity
def test_exported_json_splits_overlapping_special_tokens_alike(tmp_path):
    from tokenizers import Tokenizer

    tok = T.BPETokenizer.train("x<a>zq y " * 50, 300, special_tokens=["<a>", "<a>zq", "<a>"])
    path = tmp_path / "tokenizer.json"
    tok.to_hf_json(path)
    hf = Tokenizer.from_file(str(path))
    assert hf.get_vocab_size() == tok.vocab_size
    for text in ["<a>zq", "<a>z", "x<a>zq<a><a>zqq y", "<a<a>zq>"]:
        assert hf.encode(text).ids == tok.encode(text), text


@pytest.mark.parity
@given(unicode_text)
@settings(max_examples=100, suppress_health_check=[HealthCheck.function_scoped_fixture])
def test_exported_json_same_ids_on_any_unicode(trained, tmp_path, text):
    from tokenizers import Tokenizer

    path = tmp_path / "tokenizer.json"
    if not path.exists():
        trained.to_hf_json(path)
    assert Tokenizer.from_file(str(path)).encode(text).ids == trained.encode(text)


@pytest.mark.parity
@pytest.mark.parametrize("vocab_size", [300, 1000, pytest.param(3000, marks=pytest.mark.reference_only)])
def test_same_merges_and_ids_as_tokenizers_trainer(corpus, vocab_size):
    ours = T.BPETokenizer.train(corpus, vocab_size)
    theirs = oracles.hf_byte_level_bpe([corpus], vocab_size)
    vocab = oracles.hf_vocab_bytes(theirs)
    assert len(vocab) == ours.vocab_size
    mismatched = [i for i in range(ours.vocab_size) if vocab[i] != ours.token_bytes(i)]
    assert not mismatched, (f"first differing token id {mismatched[0]}: ours {ours.token_bytes(mismatched[0])!r}, "
                            f"theirs {vocab[mismatched[0]]!r}")
    assert oracles.hf_merges_bytes(theirs) == [(ours.token_bytes(a), ours.token_bytes(b)) for a, b in ours.merges]
    text = generate_corpus(20_000, seed=7)  # unseen text
    assert theirs.encode(text).ids == ours.encode(text)


UNICODE_SIZE = 0x110000
"""Code points run from 0 to 0x10FFFF."""

SURROGATES = range(0xD800, 0xE000)
"""Code points reserved for UTF-16 pairs: no UTF-8 text (so no string the library takes) holds them."""

CATEGORY_OF_CHARACTER = regex.compile(r"(\p{L})|(\p{N})|(\s)|(.)", regex.DOTALL)
"""The four kinds of character the GPT-2 pattern tells apart: letter, digit, space, other."""


def runs_of_one_category() -> list[str]:
    """Every code point but the surrogates, in four strings: the letters, the digits, the spaces and
    the rest, each in code-point order (so each starts with an ASCII character both sides agree on)."""
    everything = "".join(chr(c) for c in range(UNICODE_SIZE) if c not in SURROGATES)
    runs = [[], [], [], []]
    for match in CATEGORY_OF_CHARACTER.finditer(everything):
        runs[match.lastindex - 1].append(match.group())
    return ["".join(run) for run in runs]


@pytest.mark.parity
def test_pretokenization_matches_tokenizers_on_every_code_point():
    """The Unicode tables of `regex` and of the library must agree, or the two pre-tokenize text
    differently and learn different merges.

    Each run of one category is one chunk for the GPT-2 pattern; a code point the library puts in
    another category cuts the run. Only then is each code point of the run checked on its own,
    next to the run's first (ASCII) character.
    """
    from importlib.metadata import version

    differing = []
    for run in runs_of_one_category():
        if T.pretokenize(run) == oracles.hf_pretokenize(run):
            continue
        anchor = run[0]
        differing += [ch for ch in run[1:] if T.pretokenize(anchor + ch) != oracles.hf_pretokenize(anchor + ch)]
    examples = ", ".join(f"U+{ord(ch):04X}" for ch in differing[:8])
    assert not differing, (
        f"{len(differing):,} code points are pre-tokenized differently by `regex` {version('regex')} and "
        f"`tokenizers` {version('tokenizers')} (e.g. {examples}): their Unicode versions differ. "
        "Add the newly assigned letters and digits to LETTERS_AFTER_UNICODE_15 / DIGITS_AFTER_UNICODE_15 "
        "in llmcourse.tokenizer (or remove those the library has learned).")


# --- Unigram ----------------------------------------------------------------------------------

vocab_strategy = st.dictionaries(st.text("abc", min_size=2, max_size=3), st.floats(-6, -0.1), max_size=10).map(
    lambda d: {**d, "a": -2.0, "b": -2.5, "c": -3.0})


@given(vocab_strategy, st.text("abc", max_size=9))
@settings(max_examples=200)
def test_viterbi_is_the_best_split(log_probs, text):
    got = T.viterbi_segment(text, log_probs)
    assert "".join(got) == text
    if text:
        best = oracles.best_segmentation_score(text, log_probs)
        assert math.isclose(sum(log_probs[p] for p in got), best, abs_tol=1e-9)


def test_viterbi_unknown_characters():
    assert T.viterbi_segment("a€b", {"a": -1.0, "b": -1.0, "ab": -1.5}) == ["a", "€", "b"]
    assert T.viterbi_segment("", {"a": -1.0}) == []


def test_viterbi_uses_the_longest_piece_and_unknown_score_it_is_given():
    """A tokenizer computes both once for all its chunks and passes them in."""
    log_probs = {"a": -1.0, "b": -1.0, "ab": -0.5}
    assert T.viterbi_segment("ab", log_probs) == ["ab"]
    assert T.viterbi_segment("ab", log_probs, max_piece_len=1) == ["a", "b"]
    scores = {"x": -1.0, "€x": -20.0}
    assert T.viterbi_segment("€x", scores) == ["€x"]  # '€' alone scores -20 - UNK_PENALTY
    assert T.viterbi_segment("€x", scores, unknown_score=-5.0) == ["€", "x"]


@pytest.mark.parity
def test_viterbi_matches_tokenizers_unigram():
    rng = random.Random(0)
    pieces = {"".join(rng.choice("lowerns") for _ in range(rng.randrange(1, 5))) for _ in range(80)}
    pieces = sorted(pieces | set("lowerns"))
    scores = {p: math.log(rng.uniform(0.01, 1.0)) for p in pieces}
    hf = oracles.hf_unigram(scores)
    for _ in range(200):
        text = "".join(rng.choice("lowerns") for _ in range(rng.randrange(1, 15)))
        want = hf.encode(text).tokens
        got = T.viterbi_segment(text, scores)
        assert got == want, f"{text!r}: the tokenizers library splits {want}, ours {got}"


def test_viterbi_breaks_ties_as_tokenizers_unigram():
    """With whole-number scores most texts have several best splits: the pieces must be the library's."""
    rng = random.Random(5)
    for trial in range(100):
        pieces = sorted({"".join(rng.choice("ab") for _ in range(rng.randrange(1, 4))) for _ in range(8)} | set("ab"))
        tied = {p: -float(len(p) * rng.choice([1, 1, 2])) for p in pieces}
        text = "".join(rng.choice("ab") for _ in range(rng.randrange(1, 12)))
        want, got = oracles.hf_unigram(tied).encode(text).tokens, T.viterbi_segment(text, tied)
        assert got == want, f"trial {trial}: {tied} splits {text!r} into {want} in the library, ours {got}"


def test_byte_tokenizer_keeps_the_text_as_written():
    """No normalisation: a decomposed accent (e + U+0301) comes back as it went in."""
    tok = T.ByteTokenizer()
    for text in ("e\u0301", "caf\u00e9 vs cafe\u0301", "\ufb01ne"):
        assert tok.decode(tok.encode(text)) == text, f"{text!r} did not survive encode/decode"
        assert tok.encode(text) == list(text.encode("utf-8"))


def test_pair_counts_add_to_the_dict_they_are_given():
    counts = {(1, 2): 5}
    result = T.get_pair_counts([1, 2, 3], counts)
    assert result is counts and counts == {(1, 2): 6, (2, 3): 1}, f"counts should accumulate in place, got {result}"


def test_learn_merges_reuses_the_id_of_bytes_already_in_the_vocabulary():
    for word_counts in ({(0, 1): 5, (2,): 1, (0, 1, 0): 2}, {(0, 1, 0, 1): 3, (1, 0): 2}):
        got = T.learn_merges(word_counts, [b"a", b"b", b"ab"], 6)
        want = oracles.naive_learn_merges(word_counts, [b"a", b"b", b"ab"], 6)
        assert got[0].get((0, 1)) == 2 and list(got[0].items()) == list(want[0].items()) and got[1] == want[1], \
            f"on {word_counts} from [a, b, ab]: expected {want}, got {got}"


@given(vocab_strategy,
       st.dictionaries(st.text("abc", min_size=1, max_size=7), st.integers(1, 5), min_size=1, max_size=5))
@settings(max_examples=100)
def test_em_step_equals_enumeration(log_probs, word_counts):
    got, got_ll = T.em_step(word_counts, log_probs)
    want, want_ll = oracles.brute_force_em_step(word_counts, log_probs)
    assert set(got) == set(want)
    assert max(abs(got[p] - want[p]) for p in want) < 1e-8
    assert math.isclose(got_ll, want_ll, rel_tol=1e-9, abs_tol=1e-9)


def test_em_never_decreases_likelihood():
    word_counts = {"xyzxy": 3, "zzx": 2, "yxyz": 4}
    log_probs = {p: math.log(1 / 7) for p in ["x", "y", "z", "xy", "yz", "zx", "xyz"]}
    history = []
    for _ in range(6):
        log_probs, ll = T.em_step(word_counts, log_probs)
        history.append(ll)
    assert all(b >= a - 1e-9 for a, b in zip(history, history[1:]))


LONG_CHUNK_EM_SECONDS = 1.0
"""Bound on one EM step over a 20,000-character chunk: forward-backward that visits only the pieces
ending (or starting) at each position takes about a tenth of a second; one that scans every span
at every position takes over ten."""


def test_em_step_visits_only_the_pieces_at_each_position():
    word = "xy" * 10_000
    log_probs = {"x": math.log(0.4), "y": math.log(0.4), "xy": math.log(0.2)}
    start = time.perf_counter()
    new, log_likelihood = T.em_step({word: 1}, log_probs)
    seconds = time.perf_counter() - start
    assert math.isfinite(log_likelihood) and set(new) == set(log_probs)
    assert seconds < LONG_CHUNK_EM_SECONDS, \
        f"one EM step on a {len(word):,}-character chunk took {seconds:.1f} s: forward-backward rescans every span"


def test_unigram_tokenizer_trains_and_round_trips(corpus):
    text = corpus[:30_000]
    uni = T.UnigramTokenizer.train(text, vocab_size=1000)
    assert uni.vocab_size <= 1001  # pieces plus the unknown id
    with pytest.raises(ValueError, match="distinct characters"):
        T.UnigramTokenizer.train(text, vocab_size=100)
    sample = text[:2000]
    assert uni.decode(uni.encode(sample)) == sample
    assert len(uni.tokenize(sample)) < len(sample) * 0.7  # pieces longer than characters
    assert uni.encode("\U0001F600") == [uni.unk_id]


class CountedLength(str):
    """A piece that counts how often its length is asked for."""

    calls = 0

    def __len__(self):
        CountedLength.calls += 1
        return super().__len__()


class CountedScore(float):
    """A log probability that counts how often it is compared (min and max compare)."""

    calls = 0

    def __lt__(self, other):
        CountedScore.calls += 1
        return super().__lt__(other)

    def __gt__(self, other):
        CountedScore.calls += 1
        return super().__gt__(other)


def test_unigram_encode_does_not_rescan_the_vocabulary_for_each_chunk():
    """The longest piece and the score of an unknown character are computed once per tokenizer."""
    rng = random.Random(0)
    pieces = {"".join(rng.choice("abcde") for _ in range(rng.randrange(2, 6))) for _ in range(300)} | set("abcde ")
    uni = T.UnigramTokenizer({CountedLength(p): CountedScore(-rng.uniform(1, 10)) for p in pieces})
    text = " ".join("".join(rng.choice("abcdef") for _ in range(rng.randrange(1, 9))) for _ in range(200))
    CountedLength.calls = CountedScore.calls = 0
    ids = uni.encode(text)
    assert uni.decode(ids).replace(T.UNKNOWN_TEXT, "f") == text
    scans = CountedLength.calls + CountedScore.calls
    assert scans == 0, (f"encoding {len(T.pretokenize(text))} chunks looked at pieces of the vocabulary {scans:,} "
                        "times: compute the longest piece and the unknown score once, when the vocabulary is set")


def test_unigram_tokenizer_follows_a_new_vocabulary():
    uni = T.UnigramTokenizer({"a": -1.0, "b": -1.0})
    assert uni.tokenize("abab") == ["a", "b", "a", "b"] and uni.vocab_size == 3
    uni.log_probs = {"a": -1.0, "b": -1.0, "ab": -0.5}
    assert uni.vocab_size == 4
    assert uni.tokenize("abab") == ["ab", "ab"], "a longer piece was added: the longest piece must be recomputed"
    ids = uni.encode("abab")
    assert ids == [uni.piece_to_id["ab"]] * 2 and uni.decode(ids) == "abab"
    with pytest.raises(TypeError):
        uni.log_probs["ba"] = -1.0  # in place, the cached values would go stale: assign a new vocabulary instead
    with pytest.raises(ValueError, match="at least one piece"):
        T.UnigramTokenizer({})


def test_encode_cache_is_bounded(trained, monkeypatch):
    monkeypatch.setattr(T, "ENCODE_CACHE_SIZE", 3)
    fresh = T.BPETokenizer(list(trained.merges))
    text = "one two three four five six seven"
    assert fresh.decode(fresh.encode(text)) == text
    assert len(fresh._cache) == 3
    assert fresh.encode(text) == trained.encode(text)
