"""Tests of the offline corpora: generated, standard-library and user files."""

import collections
import hashlib
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

from llmcourse.course import corpus
from llmcourse.course.corpus import generate_corpus, load_text, stdlib_corpus

CJK = re.compile(r"[\u4e00-\u9fff]")
LATIN_LETTER = re.compile(r"[A-Za-z]")
ENGLISH_WORD = re.compile(r"[A-Za-z']+")
# The folder holding the `llmcourse` package under test (llmcourse/course/corpus.py).
PACKAGE_PARENT = Path(corpus.__file__).resolve().parents[2]

# Large enough for stable statistics, small enough to make in a fraction of a second.
SAMPLE_CHARS = 300_000


@pytest.fixture(scope="module")
def sample() -> str:
    return generate_corpus(SAMPLE_CHARS, seed=0)


def chinese_share(text: str) -> float:
    """Share of the characters that lie in paragraphs containing Chinese."""
    paragraphs = text.split("\n\n")
    return sum(len(p) for p in paragraphs if CJK.search(p)) / len(text)


# --- generate_corpus ---------------------------------------------------------

def test_same_seed_gives_identical_text():
    assert generate_corpus(50_000, seed=7) == generate_corpus(50_000, seed=7)


def test_different_seeds_give_different_text():
    texts = {generate_corpus(5_000, seed=seed) for seed in range(5)}
    assert len(texts) == 5, "five seeds should give five different texts"


def test_shorter_corpus_is_prefix_of_longer_one():
    long = generate_corpus(20_000, seed=3)
    assert generate_corpus(7_777, seed=3) == long[:7_777]


@pytest.mark.parametrize("n_chars", [0, 1, 2, 17, 999, 12_345])
def test_exact_length(n_chars):
    text = generate_corpus(n_chars, seed=1)
    assert isinstance(text, str)
    assert len(text) == n_chars, f"asked for {n_chars} characters, got {len(text)}"


# SHA-256 of generate_corpus(100_000, seed=0), the same on every machine.
KNOWN_DIGEST_SEED0_100K = "c9fab10834120faf645f9a649afa7a6e15c4309ec2145835b3d3b9e507918258"


def test_known_text_is_stable():
    # The text for a seed is part of the course's contract (lessons quote it);
    # any change to the grammar or the sampling shows up here first.
    digest = hashlib.sha256(generate_corpus(100_000, seed=0).encode()).hexdigest()
    assert digest == KNOWN_DIGEST_SEED0_100K, (
        "generate_corpus(100_000, seed=0) changed; if on purpose, update the digest")


def test_contains_english_and_chinese(sample):
    assert LATIN_LETTER.search(sample) and CJK.search(sample)
    for mark in ("，", "。"):
        assert mark in sample, f"Chinese punctuation {mark!r} missing"


@pytest.mark.parametrize("fraction", [0.05, 0.2, 0.5, 0.9])
@pytest.mark.parametrize("seed", [0, 1])
def test_chinese_fraction_is_roughly_respected(fraction, seed):
    share = chinese_share(generate_corpus(SAMPLE_CHARS, seed=seed, chinese_fraction=fraction))
    assert abs(share - fraction) < 0.05, (
        f"chinese_fraction={fraction}: {share:.3f} of the characters are in Chinese paragraphs")


def test_chinese_fraction_extremes():
    english = generate_corpus(50_000, seed=2, chinese_fraction=0.0)
    chinese = generate_corpus(50_000, seed=2, chinese_fraction=1.0)
    assert not CJK.search(english), "chinese_fraction=0 must give English only"
    assert not LATIN_LETTER.search(chinese), "chinese_fraction=1 must give Chinese only"


def test_paragraphs_are_separated_by_one_blank_line(sample):
    paragraphs = sample.split("\n\n")
    assert len(paragraphs) > 100
    assert "\n\n\n" not in sample
    assert all(p.strip() == p and p for p in paragraphs[:-1]), "empty or padded paragraph"


def test_natural_looking_english(sample):
    for piece in ("don't", "It's", "'s ", '"', ",", "?"):
        assert piece in sample, f"expected {piece!r} somewhere in the corpus"
    assert re.search(r"\b\d{4}\b", sample), "expected years written with digits"
    assert re.search(r"\. [A-Z]", sample), "sentences should start with a capital"
    assert not re.search(r"\ba [aeiou]", sample), "'a' before a vowel should be 'an'"


def test_word_frequencies_are_heavy_tailed(sample):
    counts = collections.Counter(w.lower() for w in ENGLISH_WORD.findall(sample))
    ranked = [n for _, n in counts.most_common()]
    total = sum(ranked)
    top10_share = sum(ranked[:10]) / total
    assert top10_share > 0.2, f"top 10 words cover only {top10_share:.1%} of the tokens"
    # Zipf: the most common word is far more common than the 100th.
    assert ranked[0] > 20 * ranked[99], f"rank 1: {ranked[0]}, rank 100: {ranked[99]}"
    # ... and there is a long tail of rare words.
    rare = sum(1 for n in ranked if n <= 2)
    assert len(ranked) > 500 and rare > 0.2 * len(ranked), (
        f"{len(ranked)} distinct words, {rare} of them seen at most twice")


def test_rejects_bad_arguments():
    with pytest.raises(ValueError, match="n_chars"):
        generate_corpus(-1)
    with pytest.raises(ValueError, match="n_chars"):
        generate_corpus(10.5)
    with pytest.raises(ValueError, match="chinese_fraction"):
        generate_corpus(10, chinese_fraction=1.5)
    with pytest.raises(TypeError, match="seed"):
        generate_corpus(10, seed="0")


def test_is_fast():
    start = time.perf_counter()
    generate_corpus(1_000_000, seed=0)
    elapsed = time.perf_counter() - start
    assert elapsed < 2.0, f"1M characters took {elapsed:.2f} s (about 0.2 s expected)"


# --- stdlib_corpus -----------------------------------------------------------

def test_stdlib_corpus_is_english_prose():
    text = stdlib_corpus()
    assert len(text) > 100_000, f"only {len(text)} characters of docstrings"
    words = [w.lower() for w in ENGLISH_WORD.findall(text)]
    common = collections.Counter(words)
    for word in ("the", "of", "return", "is"):
        assert common[word] > 100, f"{word!r} appears {common[word]} times"
    letters = sum(c.isalpha() for c in text)
    assert letters > 0.6 * len(text)


def test_stdlib_corpus_is_deterministic_and_truncates():
    assert stdlib_corpus(30_000) == stdlib_corpus(30_000)
    assert len(stdlib_corpus(30_000)) == 30_000
    assert stdlib_corpus(0) == ""
    assert stdlib_corpus(1_000) == stdlib_corpus()[:1_000]


def test_same_text_in_another_process_with_another_hash_seed():
    # Set iteration order depends on PYTHONHASHSEED; the corpora must not.
    script = (
        "import hashlib\n"
        "from llmcourse.course.corpus import generate_corpus, stdlib_corpus\n"
        "text = generate_corpus(100_000, seed=5) + stdlib_corpus(100_000)\n"
        "print(hashlib.sha256(text.encode()).hexdigest())\n"
    )
    digests = set()
    for hash_seed in ("1", "2"):
        env = {**os.environ, "PYTHONHASHSEED": hash_seed}
        result = subprocess.run([sys.executable, "-c", script], env=env, cwd=PACKAGE_PARENT,
                                capture_output=True, text=True, check=True)
        digests.add(result.stdout.strip())
    here = generate_corpus(100_000, seed=5) + stdlib_corpus(100_000)
    digests.add(hashlib.sha256(here.encode()).hexdigest())
    assert len(digests) == 1, "the corpora differ between processes"


# --- load_text ---------------------------------------------------------------

def test_load_text_reads_utf8_exactly(tmp_path):
    content = "Hello, world.\r\n你好，世界。\n\nLast line"
    path = tmp_path / "mine.txt"
    path.write_bytes(content.encode("utf-8"))
    assert load_text(path) == content
    assert load_text(str(path)) == content


def test_load_text_drops_byte_order_mark(tmp_path):
    path = tmp_path / "bom.txt"
    path.write_bytes(b"\xef\xbb\xbfabc")
    assert load_text(path) == "abc"


def test_load_text_missing_file(tmp_path):
    path = tmp_path / "nothing-here.txt"
    with pytest.raises(FileNotFoundError, match="nothing-here.txt"):
        load_text(path)


def test_load_text_directory(tmp_path):
    with pytest.raises(ValueError, match="directory"):
        load_text(tmp_path)


def test_load_text_invalid_utf8(tmp_path):
    path = tmp_path / "latin1.txt"
    path.write_bytes("café".encode("latin-1"))
    with pytest.raises(ValueError, match=r"latin1\.txt.*not UTF-8.*offset 3") as info:
        load_text(path)
    assert info.value.__cause__ is None and info.value.__suppress_context__
