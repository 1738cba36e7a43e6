"""Chapter 1: the tokenizer module, against known answers, properties and HF `tokenizers`."""
from __future__ import annotations

import itertools
import json
import math
import os
import random
import subprocess
import sys
from collections import Counter

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from llmcourse import tokenizer as T
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


def hf_bpe(text: str, vocab_size: int):
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers

    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                  min_frequency=0, show_progress=False, special_tokens=[])
    tokenizer.train_from_iterator([text], trainer)
    return tokenizer


def hf_vocab_bytes(tokenizer) -> dict[int, bytes]:
    to_byte = {ch: b for b, ch in T.bytes_to_unicode().items()}
    return {i: bytes(to_byte[ch] for ch in text) for text, i in tokenizer.get_vocab().items()}


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
def test_merge_matches_string_replace(ids, a, b):
    letters = "abcd"
    text = "".join(letters[i] for i in ids).replace(letters[a] + letters[b], "Z")
    assert T.merge(ids, (a, b), 9) == [9 if ch == "Z" else letters.index(ch) for ch in text]


def test_learn_merges_aaabdaaabac():
    """Wikipedia's example: aa -> Z, ab -> Y (the tie with Za goes to the smaller pair), ZY -> X."""
    ids = tuple("abcd".index(ch) for ch in "aaabdaaabac")
    merges, vocab = T.learn_merges({ids: 1}, [b"a", b"b", b"c", b"d"], 7)
    assert list(merges.items()) == [((0, 0), 4), ((0, 1), 5), ((4, 5), 6)]
    assert vocab[4:] == [b"aa", b"ab", b"aaab"]
    ranks = {pair: rank for rank, pair in enumerate(merges)}
    assert T.bpe_encode_word(list(ids), ranks, merges) == [6, 3, 6, 0, 2]  # X d X a c


def naive_learn_merges(word_counts, vocab, vocab_size):
    """The definition: recount every pair after every merge."""
    words, vocab, merges = dict(word_counts), list(vocab), {}
    while len(vocab) < vocab_size:
        counts = Counter()
        for word, count in words.items():
            for pair in zip(word, word[1:]):
                counts[pair] += count
        if not counts:
            break
        best = min(counts, key=lambda p: (-counts[p], p))
        token = vocab[best[0]] + vocab[best[1]]
        if token not in vocab:
            vocab.append(token)
        merges[best] = vocab.index(token)
        merged = Counter()
        for word, count in words.items():
            merged[tuple(T.merge(list(word), best, merges[best]))] += count
        words = merged
    return merges, vocab


word_counts_strategy = st.dictionaries(st.tuples(st.integers(0, 3)).flatmap(
    lambda first: st.lists(st.integers(0, 3), max_size=8).map(lambda rest: first + tuple(rest))),
    st.integers(1, 5), min_size=1, max_size=10)


@given(word_counts_strategy, st.integers(0, 15))
@settings(max_examples=150, suppress_health_check=[HealthCheck.too_slow])
def test_incremental_training_equals_the_definition(word_counts, extra):
    vocab = [bytes([97 + i]) for i in range(4)]
    got = T.learn_merges(word_counts, vocab, 4 + extra)
    want = naive_learn_merges(word_counts, vocab, 4 + extra)
    assert list(got[0].items()) == list(want[0].items())
    assert got[1] == want[1]


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


def test_special_tokens_are_atomic(trained):
    eot, pad = trained.special_tokens["<|endoftext|>"], trained.special_tokens["<|pad|>"]
    assert (eot, pad) == (598, 599)
    ids = trained.encode("one<|endoftext|>two<|pad|><|pad|>")
    assert ids.count(eot) == 1 and ids.count(pad) == 2
    assert trained.decode(ids) == "one<|endoftext|>two<|pad|><|pad|>"


def test_training_is_deterministic_across_processes(tmp_path):
    """Same corpus and settings -> same merges, whatever the hash seed of the process."""
    code = ("import json, sys; from llmcourse.tokenizer import BPETokenizer; from llmcourse.course.corpus import generate_corpus;"
            "t = BPETokenizer.train(generate_corpus(50_000, seed=3), 400); print(json.dumps([list(p) for p in t.merges]))")
    outputs = set()
    for seed in ("1", "2"):
        env = dict(os.environ, PYTHONHASHSEED=seed, PYTHONPATH=os.pathsep.join(sys.path))
        outputs.add(subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True).stdout)
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
@given(unicode_text)
@settings(max_examples=100, suppress_health_check=[HealthCheck.function_scoped_fixture])
def test_exported_json_same_ids_on_any_unicode(trained, tmp_path, text):
    from tokenizers import Tokenizer

    path = tmp_path / "tokenizer.json"
    if not path.exists():
        trained.to_hf_json(path)
    assert Tokenizer.from_file(str(path)).encode(text).ids == trained.encode(text)


@pytest.mark.parity
@pytest.mark.parametrize("vocab_size", [300, 1000, 3000])
def test_same_merges_and_ids_as_tokenizers_trainer(corpus, vocab_size):
    ours = T.BPETokenizer.train(corpus, vocab_size)
    theirs = hf_bpe(corpus, vocab_size)
    vocab = hf_vocab_bytes(theirs)
    assert len(vocab) == ours.vocab_size
    mismatched = [i for i in range(ours.vocab_size) if vocab[i] != ours.token_bytes(i)]
    assert not mismatched, f"first differing token id {mismatched[0]}: ours {ours.token_bytes(mismatched[0])!r}, theirs {vocab[mismatched[0]]!r}"
    theirs_merges = json.loads(theirs.to_str())["model"]["merges"]
    to_byte = {ch: b for b, ch in T.bytes_to_unicode().items()}
    as_bytes = [tuple(bytes(to_byte[c] for c in part) for part in (m.split(" ") if isinstance(m, str) else m)) for m in theirs_merges]
    assert as_bytes == [(ours.token_bytes(a), ours.token_bytes(b)) for a, b in ours.merges]
    text = generate_corpus(20_000, seed=7)  # unseen text
    assert theirs.encode(text).ids == ours.encode(text)


# --- Unigram ----------------------------------------------------------------------------------

def all_splits(text, log_probs):
    for cuts in itertools.product([0, 1], repeat=max(0, len(text) - 1)):
        pieces, start = [], 0
        for i, cut in enumerate(cuts, 1):
            if cut:
                pieces.append(text[start:i])
                start = i
        pieces.append(text[start:])
        if all(p in log_probs for p in pieces):
            yield pieces


vocab_strategy = st.dictionaries(st.text("abc", min_size=2, max_size=3), st.floats(-6, -0.1), max_size=10).map(
    lambda d: {**d, "a": -2.0, "b": -2.5, "c": -3.0})


@given(vocab_strategy, st.text("abc", max_size=9))
@settings(max_examples=200)
def test_viterbi_is_the_best_split(log_probs, text):
    got = T.viterbi_segment(text, log_probs)
    assert "".join(got) == text
    if text:
        best = max(sum(log_probs[p] for p in split) for split in all_splits(text, log_probs))
        assert math.isclose(sum(log_probs[p] for p in got), best, abs_tol=1e-9)


def test_viterbi_unknown_characters():
    assert T.viterbi_segment("a€b", {"a": -1.0, "b": -1.0, "ab": -1.5}) == ["a", "€", "b"]
    assert T.viterbi_segment("", {"a": -1.0}) == []


@pytest.mark.parity
def test_viterbi_matches_tokenizers_unigram():
    from tokenizers import Tokenizer, models

    rng = random.Random(0)
    pieces = sorted({"".join(rng.choice("lowerns") for _ in range(rng.randrange(1, 5))) for _ in range(80)} | set("lowerns"))
    scores = {p: math.log(rng.uniform(0.01, 1.0)) for p in pieces}
    hf = Tokenizer(models.Unigram([("<unk>", 0.0)] + [(p, scores[p]) for p in pieces], 0, False))
    for _ in range(200):
        text = "".join(rng.choice("lowerns") for _ in range(rng.randrange(1, 15)))
        want = hf.encode(text).tokens
        got = T.viterbi_segment(text, scores)
        assert math.isclose(sum(scores[p] for p in got), sum(scores[p] for p in want), abs_tol=1e-9), (text, got, want)


def brute_em(word_counts, log_probs):
    expected, log_likelihood = Counter(), 0.0
    for word, count in word_counts.items():
        splits = list(all_splits(word, log_probs))
        weights = [math.exp(sum(log_probs[p] for p in s)) for s in splits]
        total = sum(weights)
        log_likelihood += count * math.log(total)
        for split, weight in zip(splits, weights):
            for piece in split:
                expected[piece] += count * weight / total
    norm = sum(expected.values())
    return {p: math.log(v / norm) for p, v in expected.items() if v > 0}, log_likelihood


@given(vocab_strategy, st.dictionaries(st.text("abc", min_size=1, max_size=7), st.integers(1, 5), min_size=1, max_size=5))
@settings(max_examples=100)
def test_em_step_equals_enumeration(log_probs, word_counts):
    got, got_ll = T.em_step(word_counts, log_probs)
    want, want_ll = brute_em(word_counts, log_probs)
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


def test_encode_cache_is_bounded(trained, monkeypatch):
    monkeypatch.setattr(T, "ENCODE_CACHE_SIZE", 3)
    fresh = T.BPETokenizer(list(trained.merges))
    text = "one two three four five six seven"
    assert fresh.decode(fresh.encode(text)) == text
    assert len(fresh._cache) == 3
    assert fresh.encode(text) == trained.encode(text)
