"""Our tokenizers (llmcourse.tokenizer) side by side with Hugging Face `tokenizers`.

`--task bpe` (the default), byte-level BPE. One run, one corpus, the same vocabulary
size, the same GPT-2 pre-tokenization:

1. training: `BPETokenizer.train(text, V)` against `BpeTrainer` through
   `train_from_iterator` (one run each);
2. encoding: our `encode` on the whole corpus against the library's
   `encode_batch` and its plain `encode` called line by line (one warm-up run,
   then the best of `--repeat`);
3. agreement: whether both learned the same merges, compared as byte strings,
   and whether they split the corpus into the same tokens.

`--task unigram`, Unigram encoding. A `UnigramTokenizer` trained to `--pieces` pieces
on `--chars` characters encodes those characters three ways: the way it did before the
tokenizer kept its longest piece and unknown score with the vocabulary (Viterbi recomputing
both for every chunk), `encode` as it is, and the library's Unigram model on the same
pieces and scores with the same pre-tokenization (`encode` on the whole text, one call).

Usage (from the repository root):

    .venv/bin/python bench/bench_tokenizer.py --mb 4
    .venv/bin/python bench/bench_tokenizer.py --text my_corpus.txt --vocab-size 16000
    .venv/bin/python bench/bench_tokenizer.py --task unigram --chars 100000 --pieces 1000

The library runs on several threads (Rayon); ours on one. `--hf-threads N` sets
RAYON_RS_NUM_THREADS before the library is imported, for a one-thread-each
comparison. The figures are wall-clock seconds from `time.perf_counter`; the
"cpu/wall" column shows how many cores a task kept busy on average.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from dataclasses import dataclass
from pathlib import Path

# Run from anywhere: the package is the one in this repository.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import regex  # noqa: E402

from llmcourse.course.corpus import generate_corpus, load_text  # noqa: E402

BYTES_PER_MB = 1_000_000
"""A megabyte here is 10**6 bytes of UTF-8 text."""

DEFAULT_MB = 4.0
DEFAULT_VOCAB_SIZE = 8000
DEFAULT_REPEAT = 3
DEFAULT_UNIGRAM_CHARS = 100_000
DEFAULT_UNIGRAM_PIECES = 1000

TRAIN_TARGET = 3.0
"""Our training may take at most this many times the library's time."""

ENCODE_TARGET = 5.0
"""Our encoding may take at most this many times the library's `encode_batch`."""

RAYON_THREADS_VARIABLE = "RAYON_RS_NUM_THREADS"
"""The environment variable `tokenizers` reads for its thread-pool size."""


@dataclass
class Timing:
    wall: float  # seconds, time.perf_counter
    cpu: float  # seconds of CPU used by this process in the same interval

    @property
    def cores_busy(self) -> float:
        return self.cpu / self.wall if self.wall > 0 else 0.0


def timed(function, *args, **kwargs):
    """(result, Timing) of one call."""
    cpu_start, wall_start = time.process_time(), time.perf_counter()
    result = function(*args, **kwargs)
    return result, Timing(time.perf_counter() - wall_start, time.process_time() - cpu_start)


def best_of_fresh(repeat: int, make, call):
    """The fastest of `repeat` calls, each on a newly made object (empty caches): Timing."""
    best = None
    for _ in range(repeat):
        fresh = make()
        _, timing = timed(call, fresh)
        if best is None or timing.wall < best.wall:
            best = timing
    return best


def best_of(repeat: int, function, *args):
    """Warm up once, then the fastest of `repeat` calls: (result, cold Timing, best Timing)."""
    result, cold = timed(function, *args)
    best = None
    for _ in range(repeat):
        result, timing = timed(function, *args)
        if best is None or timing.wall < best.wall:
            best = timing
    return result, cold, best


# --- The corpus ----------------------------------------------------------------

def cut_to_bytes(text: str, n_bytes: int) -> str:
    """The longest prefix of `text` whose UTF-8 encoding fits in `n_bytes`."""
    return text.encode("utf-8")[:n_bytes].decode("utf-8", errors="ignore")


def build_corpus(args) -> tuple[str, str]:
    """(text, a line describing where it came from)."""
    if args.text is not None:
        text = load_text(args.text)
        if args.mb is not None:
            text = cut_to_bytes(text, int(args.mb * BYTES_PER_MB))
        return text, f"file {args.text}"
    mb = DEFAULT_MB if args.mb is None else args.mb
    n_bytes = int(mb * BYTES_PER_MB)
    # Every character is at least one byte, so n_bytes characters are enough.
    text = cut_to_bytes(generate_corpus(n_bytes, seed=args.seed), n_bytes)
    return text, f"generate_corpus(seed={args.seed}) (English, about 20% Chinese)"


def split_lines(text: str, pattern: str) -> list[str]:
    """Cut `text` into lines for the library, without changing its pre-tokenization.

    The library pre-tokenizes each string it is given on its own. A cut is made
    after a pre-tokenization chunk that ends with a newline and follows a chunk
    that does not end in whitespace: the whitespace run then ends exactly at the
    cut, and the GPT-2 pattern has no look-behind, so every piece splits into
    the same chunks as the whole text does. A newline inside a longer run of
    whitespace (an indented next line) is not cut, so a piece may hold a few lines.
    """
    pieces, start, position, previous = [], 0, 0, ""
    for chunk in regex.findall(pattern, text):
        position += len(chunk)
        if chunk.endswith("\n") and not previous[-1:].isspace():
            pieces.append(text[start:position])
            start = position
        previous = chunk
    if start < len(text):
        pieces.append(text[start:])
    return pieces


def same_pretokenization(text: str, pieces: list[str], pattern: str) -> bool:
    """Do the pieces, pre-tokenized one by one, give the chunks of the whole text?"""
    piece_chunks = [chunk for piece in pieces for chunk in regex.findall(pattern, piece)]
    return piece_chunks == regex.findall(pattern, text)


# --- The two tokenizers --------------------------------------------------------

def train_ours(text: str, vocab_size: int):
    from llmcourse.tokenizer import BPETokenizer
    return BPETokenizer.train(text, vocab_size)


def train_theirs(lines: list[str], vocab_size: int):
    # Imported here, not at the top: --hf-threads must be set before `tokenizers` is imported.
    from llmcourse.course.tokenizer_oracles import hf_byte_level_bpe
    return hf_byte_level_bpe(lines, vocab_size)


def their_merges_as_bytes(tokenizer) -> list[tuple[bytes, bytes]]:
    """The library's merges, its GPT-2 characters turned back into bytes."""
    from llmcourse.course.tokenizer_oracles import hf_merges_bytes
    return hf_merges_bytes(tokenizer)


def our_merges_as_bytes(tok) -> list[tuple[bytes, bytes]]:
    return [(tok.token_bytes(a), tok.token_bytes(b)) for a, b in tok.merges]


def compare_merges(ours: list, theirs: list) -> dict:
    first_difference = next(
        (i for i, (a, b) in enumerate(zip(ours, theirs)) if a != b), min(len(ours), len(theirs)))
    shared = len(set(ours) & set(theirs))
    return {
        "ours": len(ours),
        "theirs": len(theirs),
        "identical": ours == theirs,
        "same_prefix": first_difference,
        "shared": shared,
    }


def compare_tokens(tok, our_ids: list[int], their_tokenizer, their_encodings) -> tuple[bool, int]:
    """Do both split the corpus into the same byte strings? (same?, first differing token)"""
    from llmcourse.course.tokenizer_oracles import hf_vocab_bytes
    their_text = hf_vocab_bytes(their_tokenizer)
    our_tokens = [tok.token_bytes(i) for i in our_ids]
    their_tokens = [their_text[i] for encoding in their_encodings for i in encoding.ids]
    for k, (a, b) in enumerate(zip(our_tokens, their_tokens)):
        if a != b:
            return False, k
    return len(our_tokens) == len(their_tokens), min(len(our_tokens), len(their_tokens))


# --- Unigram encoding ----------------------------------------------------------

def unigram_text(args) -> tuple[str, str]:
    """(text, a line describing where it came from): `--chars` characters."""
    if args.text is not None:
        return load_text(args.text)[:args.chars], f"file {args.text}"
    text = generate_corpus(args.chars, seed=args.seed)[:args.chars]
    return text, f"generate_corpus(seed={args.seed}) (English, about 20% Chinese)"


def encode_rescanning_the_vocabulary(uni, text: str) -> list[int]:
    """Unigram encoding as it was before the tokenizer kept its longest piece and unknown score
    with the vocabulary: `viterbi_segment` recomputes both, a pass over the vocabulary, per chunk."""
    from llmcourse.tokenizer import pretokenize, viterbi_segment
    log_probs = dict(uni.log_probs)
    return [uni.piece_to_id.get(piece, uni.unk_id)
            for chunk in pretokenize(text, uni.pattern) for piece in viterbi_segment(chunk, log_probs)]


def their_unigram(uni):
    """The library's Unigram model with our pieces, scores, ids and pre-tokenization."""
    from llmcourse.course.tokenizer_oracles import hf_unigram
    pieces = {piece: uni.log_probs[piece] for piece in uni.pieces[uni.unk_id + 1:]}
    return hf_unigram(pieces, split_pattern=uni.pattern, unk_token=uni.pieces[uni.unk_id])


def fuse_unknown_runs(ids: list[int], unk_id: int) -> list[int]:
    """A run of unknown ids as one, the way the library reports unknown characters in a chunk."""
    return [i for k, i in enumerate(ids) if i != unk_id or k == 0 or ids[k - 1] != unk_id]


def compare_unigram_ids(uni, text: str, their_ids: list[int]) -> tuple[bool, int]:
    """Same ids, chunk by chunk, once runs of unknown characters are fused? (same?, first difference)"""
    from llmcourse.tokenizer import pretokenize
    ours = [i for chunk in pretokenize(text, uni.pattern) for i in fuse_unknown_runs(uni.encode(chunk), uni.unk_id)]
    for k, (a, b) in enumerate(zip(ours, their_ids)):
        if a != b:
            return False, k
    return len(ours) == len(their_ids), min(len(ours), len(their_ids))


def run_unigram(args, parser) -> int:
    from llmcourse.tokenizer import UnigramTokenizer
    if args.chars < 1:
        parser.error("--chars must be at least 1")
    try:
        text, source = unigram_text(args)
    except (FileNotFoundError, ValueError) as error:  # no such file, or not UTF-8 text
        parser.error(str(error))
    import tokenizers
    print(f"text: {source}: {len(text):,} characters")
    print(f"Python {platform.python_version()}, tokenizers {tokenizers.__version__}, "
          f"{platform.machine()} {platform.system()}; both sides encode on one thread")
    print(thread_report()[0])
    try:
        uni, train = timed(UnigramTokenizer.train, text, args.pieces)
    except ValueError as error:  # fewer pieces than the text has distinct characters
        parser.error(str(error))
    print(f"trained our Unigram on the text in {train.wall:.2f} s: {uni.vocab_size - 1} pieces "
          f"(longest {uni.max_piece_len} characters) and the unknown id\n", flush=True)
    theirs = their_unigram(uni)

    before_ids, _, before = best_of(args.repeat, encode_rescanning_the_vocabulary, uni, text)
    our_ids, _, after = best_of(args.repeat, uni.encode, text)
    encoding, _, library = best_of(args.repeat, theirs.encode, text)
    if before_ids != our_ids:
        raise SystemExit("internal error: the two ways of encoding give different ids")

    rows = [[f"encode {len(text):,} characters", f"s (best of {args.repeat})", "ratio to tokenizers"]]
    for name, timing in [("ours before: Viterbi rescans the vocabulary for every chunk", before),
                         ("ours after: longest piece and unknown score kept with the vocabulary", after),
                         ("tokenizers: Unigram model, encode(text)", library)]:
        rows.append([name, f"{timing.wall:.3f}", f"{timing.wall / library.wall:.2f}×"])
    print(table(rows))
    print(f"\nspeed-up of `encode`: {before.wall / after.wall:.1f}x "
          f"({before.wall:.3f} s -> {after.wall:.3f} s, {len(our_ids):,} tokens)")
    same, position = compare_unigram_ids(uni, text, encoding.ids)
    print("same ids as the library (runs of unknown characters fused, as the library does): "
          + ("yes" if same else f"no (first difference at token {position})"))
    print(f"ours decode(encode(text)) == text: {'yes' if uni.decode(our_ids) == text else 'no (unknown characters)'}")
    return 0


# --- Report --------------------------------------------------------------------

def thread_report() -> list[str]:
    cpus = os.cpu_count()
    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        usable = cpus
    rayon = os.environ.get(RAYON_THREADS_VARIABLE)
    parallelism = os.environ.get("TOKENIZERS_PARALLELISM")
    load = ", ".join(f"{x:.2f}" for x in os.getloadavg()) if hasattr(os, "getloadavg") else "n/a"
    return [
        f"CPUs: {cpus} logical, {usable} usable by this process; load average {load} "
        "(other work on the machine slows both sides)",
        f"tokenizers threads: {RAYON_THREADS_VARIABLE}="
        + (rayon if rayon else f"unset (Rayon uses one thread per usable CPU: {usable})")
        + f", TOKENIZERS_PARALLELISM={parallelism if parallelism is not None else 'unset (on)'}",
        "ours: one Python thread",
    ]


def table(rows: list[list[str]]) -> str:
    widths = [max(len(row[c]) for row in rows) for c in range(len(rows[0]))]
    lines = ["| " + " | ".join(cell.ljust(width) for cell, width in zip(row, widths)) + " |"
             for row in rows]
    lines.insert(1, "|" + "|".join("-" * (w + 2) for w in widths) + "|")
    return "\n".join(lines)


def ratio_row(task: str, ours: Timing, theirs: Timing, target: float | None) -> list[str]:
    ratio = ours.wall / theirs.wall
    met = "—" if target is None else ("yes" if ratio <= target else "NO")
    return [task, f"{ours.wall:.3f}", f"{theirs.wall:.3f}", f"{ratio:.2f}×",
            "—" if target is None else f"≤ {target:g}×", met]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--mb", type=float, default=None,
                        help=f"corpus size in MB of UTF-8 (default {DEFAULT_MB:g}; "
                             "with --text: cut the file to this size)")
    parser.add_argument("--text", type=Path, default=None, help="a UTF-8 text file of your own")
    parser.add_argument("--vocab-size", type=int, default=DEFAULT_VOCAB_SIZE)
    parser.add_argument("--repeat", type=int, default=DEFAULT_REPEAT,
                        help="encoding runs after the warm-up; the best counts")
    parser.add_argument("--seed", type=int, default=0, help="seed of the generated corpus")
    parser.add_argument("--hf-threads", type=int, default=None,
                        help=f"set {RAYON_THREADS_VARIABLE} for the library (default: leave as is)")
    parser.add_argument("--task", choices=["bpe", "unigram"], default="bpe",
                        help="byte-level BPE training and encoding, or Unigram encoding (default: bpe)")
    parser.add_argument("--chars", type=int, default=DEFAULT_UNIGRAM_CHARS,
                        help=f"unigram: characters to train on and encode (default {DEFAULT_UNIGRAM_CHARS:,})")
    parser.add_argument("--pieces", type=int, default=DEFAULT_UNIGRAM_PIECES,
                        help=f"unigram: vocabulary size (default {DEFAULT_UNIGRAM_PIECES})")
    args = parser.parse_args(argv)
    if args.repeat < 1:
        parser.error("--repeat must be at least 1")
    if args.hf_threads is not None:
        # Must happen before `tokenizers` is imported: the pool is made once.
        os.environ[RAYON_THREADS_VARIABLE] = str(args.hf_threads)
    if args.task == "unigram":
        return run_unigram(args, parser)

    try:
        text, source = build_corpus(args)
    except (FileNotFoundError, ValueError) as error:
        parser.error(str(error))
    from llmcourse.tokenizer import GPT2_SPLIT_PATTERN
    lines = split_lines(text, GPT2_SPLIT_PATTERN)
    if not same_pretokenization(text, lines, GPT2_SPLIT_PATTERN):
        raise SystemExit("internal error: the lines pre-tokenize differently from the whole text")
    n_bytes = len(text.encode("utf-8"))
    import tokenizers
    from tokenizers import Tokenizer

    print(f"corpus: {source}: {n_bytes / BYTES_PER_MB:.2f} MB, {len(text):,} characters, "
          f"{len(lines):,} lines")
    print(f"Python {platform.python_version()}, tokenizers {tokenizers.__version__}, "
          f"{platform.machine()} {platform.system()}")
    for line in thread_report():
        print(line)
    print(f"vocab size {args.vocab_size}; the library trains on the corpus cut into lines "
          f"(each keeps its newline; checked to pre-tokenize exactly like the whole text); "
          f"ours trains on the whole text\n")

    ours, ours_train = timed(train_ours, text, args.vocab_size)
    print(f"trained ours in {ours_train.wall:.2f} s", flush=True)
    theirs, theirs_train = timed(train_theirs, lines, args.vocab_size)
    print(f"trained theirs in {theirs_train.wall:.2f} s", flush=True)

    our_ids, ours_cold, ours_encode = best_of(args.repeat, ours.encode, text)
    batch, batch_cold, batch_encode = best_of(args.repeat, theirs.encode_batch, lines)
    _, serial_cold, serial_encode = best_of(
        args.repeat, lambda: [theirs.encode(line) for line in lines])
    their_token_count = sum(len(encoding.ids) for encoding in batch)
    # Both keep a cache of encoded chunks; a copy made from the merges starts empty.
    ours_fresh = best_of_fresh(args.repeat, lambda: type(ours)(list(ours.merges)),
                               lambda tok: tok.encode(text))
    batch_fresh = best_of_fresh(args.repeat, lambda: Tokenizer.from_str(theirs.to_str()),
                                lambda tok: tok.encode_batch(lines))

    rows = [["task", "ours (s)", "tokenizers (s)", "ratio (ours/theirs)", "target", "met?"],
            ratio_row(f"train, vocab {args.vocab_size} (1 run)", ours_train, theirs_train,
                      TRAIN_TARGET),
            ratio_row(f"encode vs encode_batch (best of {args.repeat})", ours_encode, batch_encode,
                      ENCODE_TARGET),
            ratio_row(f"encode vs serial encode (best of {args.repeat})", ours_encode,
                      serial_encode, None),
            ratio_row("encode vs encode_batch, first call", ours_cold, batch_cold, None),
            ratio_row(f"encode vs encode_batch, empty caches (best of {args.repeat})",
                      ours_fresh, batch_fresh, None)]
    print()
    print(table(rows))
    print("\nThe encoding target is judged against encode_batch (the library's fast path, all "
          "threads), after a warm-up run.\nBoth tokenizers cache the ids of chunks they have "
          "seen; the last two rows show encoding with those caches empty.\n")

    mb = n_bytes / BYTES_PER_MB
    throughput = [["encoder", "s", "MB/s", "tokens/s", "tokens", "cpu/wall"]]
    encoders = [("ours: encode(text)", ours_encode, len(our_ids)),
                ("tokenizers: encode_batch(lines)", batch_encode, their_token_count),
                ("tokenizers: encode(line), serial", serial_encode, their_token_count)]
    for name, timing, count in encoders:
        throughput.append([name, f"{timing.wall:.3f}", f"{mb / timing.wall:.2f}",
                           f"{count / timing.wall:,.0f}", f"{count:,}", f"{timing.cores_busy:.2f}"])
    print(table(throughput))
    print(f"\ntraining cpu/wall: ours {ours_train.cores_busy:.2f}, tokenizers "
          f"{theirs_train.cores_busy:.2f}\n")

    merges = compare_merges(our_merges_as_bytes(ours), their_merges_as_bytes(theirs))
    print(f"merges: ours {merges['ours']}, theirs {merges['theirs']}; identical in order: "
          f"{'yes' if merges['identical'] else 'no'}; same first {merges['same_prefix']}; "
          f"{merges['shared']} in common as byte pairs")
    same, position = compare_tokens(ours, our_ids, theirs, batch)
    print("same tokens on the corpus: "
          + ("yes" if same else f"no (first difference at token {position})")
          + f"; ours {len(our_ids):,} tokens, theirs {their_token_count:,}")
    round_trip = ours.decode(our_ids) == text
    print(f"ours decode(encode(text)) == text: {'yes' if round_trip else 'NO'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
