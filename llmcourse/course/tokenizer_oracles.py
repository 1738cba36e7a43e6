"""Oracles for chapter 1: the definitions written the slow, obvious way, and the `tokenizers`
library set up like our tokenizers.

The package tests (tests/test_tokenizer.py) and the graded cells of the chapter-1 notebook both
compare against these, so each oracle is written once. Nothing here imports
`llmcourse.tokenizer`: an oracle built on the code under test could not catch its mistakes.
"""
from __future__ import annotations

import itertools
import json
import math
from collections import Counter

from tokenizers import Regex, Tokenizer, models, pre_tokenizers, trainers

# --- GPT-2's byte <-> character table, written from its definition ----------------------------

GPT2_PRINTABLE_BYTES = frozenset([*range(0x21, 0x7F), *range(0xA1, 0xAD), *range(0xAE, 0x100)])
"""The 188 bytes GPT-2 writes as the Latin-1 character of the same value (`!`..`~`, `¡`..`¬`,
`®`..`ÿ`); the other 68 bytes take the characters U+0100, U+0101, ... in byte order."""


def gpt2_char_to_byte() -> dict[str, int]:
    """The byte each character of a byte-level vocabulary stands for (256 entries)."""
    shifted = iter(range(0x100, 0x200))
    return {chr(b) if b in GPT2_PRINTABLE_BYTES else chr(next(shifted)): b for b in range(256)}


def byte_level_to_bytes(token: str) -> bytes:
    """A token of a byte-level vocabulary (e.g. 'Ġthe') -> the bytes it stands for (b' the')."""
    char_to_byte = gpt2_char_to_byte()
    return bytes(char_to_byte[ch] for ch in token)


# --- BPE, by the definition ---------------------------------------------------------------------

def naive_pair_counts(ids) -> dict:
    """{(a, b): occurrences} of the adjacent pairs of `ids`."""
    return dict(Counter(zip(ids, ids[1:])))


def merge_by_string_replace(ids, pair, new_id) -> list[int]:
    """`merge` by `str.replace`, which is left to right and never overlaps: one character per id."""
    alphabet = sorted({*ids, *pair, new_id})
    char_of = {token: chr(0xE000 + k) for k, token in enumerate(alphabet)}  # private-use characters
    id_of = {ch: token for token, ch in char_of.items()}
    text = "".join(char_of[i] for i in ids).replace(char_of[pair[0]] + char_of[pair[1]], char_of[new_id])
    return [id_of[ch] for ch in text]


def naive_learn_merges(word_counts: dict, vocab: list, vocab_size: int) -> tuple[dict, list]:
    """BPE training by its definition: recount every pair after every merge.

    word_counts: {tuple of ids: count}; vocab: id -> bytes. Returns ({(a, b): new id} in the
    order learned, the extended vocabulary). The most frequent pair wins, the smallest (a, b) on
    ties; a merge whose bytes already are a token reuses that token's id.
    """
    words, vocab, merges = {tuple(w): c for w, c in word_counts.items()}, list(vocab), {}
    while len(vocab) < vocab_size:
        counts = Counter()
        for word, count in words.items():
            for pair in zip(word, word[1:]):
                counts[pair] += count
        if not counts:
            break
        best = min(counts, key=lambda pair: (-counts[pair], pair))
        token = vocab[best[0]] + vocab[best[1]]
        if token not in vocab:
            vocab.append(token)
        merges[best] = vocab.index(token)
        merged = Counter()
        for word, count in words.items():
            merged[tuple(merge_by_string_replace(list(word), best, merges[best]))] += count
        words = merged
    return merges, vocab


# --- Unigram, by enumeration --------------------------------------------------------------------

def all_segmentations(text: str, vocab):
    """Every split of `text` into pieces of `vocab` (2 ** (len(text) - 1) candidates: short texts only)."""
    for cuts in itertools.product([False, True], repeat=max(0, len(text) - 1)):
        pieces, start = [], 0
        for end, cut in enumerate(cuts, 1):
            if cut:
                pieces.append(text[start:end])
                start = end
        pieces.append(text[start:])
        if all(piece in vocab for piece in pieces):
            yield pieces


def best_segmentation_score(text: str, log_probs: dict) -> float:
    """The highest total log probability of a split of `text` into pieces of `log_probs`."""
    return max(sum(log_probs[p] for p in split) for split in all_segmentations(text, log_probs))


def brute_force_em_step(word_counts: dict, log_probs: dict) -> tuple[dict, float]:
    """One EM step of Unigram training with every segmentation listed: (new log probs, log-likelihood)."""
    expected, log_likelihood = Counter(), 0.0
    for word, count in word_counts.items():
        splits = list(all_segmentations(word, log_probs))
        weights = [math.exp(sum(log_probs[p] for p in split)) for split in splits]
        total = sum(weights)
        log_likelihood += count * math.log(total)
        for split, weight in zip(splits, weights):
            for piece in split:
                expected[piece] += count * weight / total
    norm = sum(expected.values())
    return {p: math.log(v / norm) for p, v in expected.items() if v > 0}, log_likelihood


# --- The tokenizers library, set up like ours ---------------------------------------------------

def hf_byte_level() -> pre_tokenizers.ByteLevel:
    """The library's GPT-2 pre-tokenizer: the GPT-2 split pattern, no space added in front."""
    return pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)


def hf_pretokenize(text: str) -> list[str]:
    """The chunks the library's GPT-2 pre-tokenizer cuts `text` into, as substrings of `text`."""
    return [text[start:end] for _, (start, end) in hf_byte_level().pre_tokenize_str(text)]


def hf_byte_level_bpe(texts, vocab_size: int) -> Tokenizer:
    """The library's byte-level BPE trained on `texts` (a list of strings): 256 bytes, then merges."""
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = hf_byte_level()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                  min_frequency=0, show_progress=False, special_tokens=[])
    tokenizer.train_from_iterator(texts, trainer=trainer, length=len(texts))
    return tokenizer


def hf_vocab_bytes(tokenizer: Tokenizer) -> dict[int, bytes]:
    """{id: the bytes the token stands for} of a byte-level tokenizer."""
    return {i: byte_level_to_bytes(token) for token, i in tokenizer.get_vocab().items()}


def hf_merges_bytes(tokenizer: Tokenizer) -> list[tuple[bytes, bytes]]:
    """The merges of a byte-level BPE tokenizer, in rank order, as pairs of bytes."""
    merges = json.loads(tokenizer.to_str())["model"]["merges"]
    # Older versions of the library store a merge as "a b", newer ones as ["a", "b"].
    pairs = [m.split(" ") if isinstance(m, str) else m for m in merges]
    return [(byte_level_to_bytes(a), byte_level_to_bytes(b)) for a, b in pairs]


def hf_unigram(log_probs: dict, split_pattern: str | None = None, unk_token: str = "<unk>") -> Tokenizer:
    """The library's Unigram model: `unk_token` is id 0, then the pieces of `log_probs` in their order.

    Without `split_pattern` there is no pre-tokenizer (each string given is one chunk); with it,
    the text is cut into the pattern's matches, as `regex.findall` does. The library fuses a run
    of unknown characters into one unknown token; ours gives one per character.
    """
    tokenizer = Tokenizer(models.Unigram([(unk_token, 0.0)] + list(log_probs.items()), 0, False))
    if split_pattern is not None:
        tokenizer.pre_tokenizer = pre_tokenizers.Split(Regex(split_pattern), behavior="isolated")
    return tokenizer
