"""The command line: commands that take a user's text file, and their errors."""
from __future__ import annotations

import subprocess
import sys
from types import SimpleNamespace

import pytest

pytestmark = [pytest.mark.course_infra]


def llmcourse(*args, cwd):
    return subprocess.run([sys.executable, "-m", "llmcourse", *args], cwd=cwd, capture_output=True, text=True)


def test_train_tokenizer_on_a_user_file(root, tmp_path):
    from tokenizers import Tokenizer

    from llmcourse.tokenizer import BPETokenizer

    text = tmp_path / "mine.txt"
    text.write_text("low lower lowest newer wider 新的 更新的\n" * 50, encoding="utf-8")
    result = llmcourse("train-tokenizer", "--text", str(text), "--vocab-size", "300", "--special", "<|endoftext|>",
                       "--out", str(tmp_path / "tok.json"), "--hf-json", str(tmp_path / "hf.json"), cwd=root)
    assert result.returncode == 0, result.stderr
    ours = BPETokenizer.load(tmp_path / "tok.json")
    sample = "lowest 更新的<|endoftext|>"
    assert Tokenizer.from_file(str(tmp_path / "hf.json")).encode(sample).ids == ours.encode(sample)


def test_missing_text_file_is_a_clear_error(root, tmp_path):
    result = llmcourse("train-tokenizer", "--text", str(tmp_path / "nope.txt"), "--out", str(tmp_path / "t.json"),
                       cwd=root)
    assert result.returncode == 2 and "nope.txt" in result.stderr and "Traceback" not in result.stderr
    assert not (tmp_path / "t.json").exists()


def test_corpus_command_writes_the_generated_corpus(root, tmp_path):
    from llmcourse.course.corpus import generate_corpus

    result = llmcourse("corpus", "--chars", "5000", "--seed", "3", "--out", str(tmp_path / "c.txt"), cwd=root)
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "c.txt").read_text(encoding="utf-8") == generate_corpus(5000, seed=3)


def test_unknown_arguments_are_refused(root):
    assert llmcourse("export", "--bogus", cwd=root).returncode == 2


def test_grade_and_check_refuse_bad_arguments_clearly(root, tmp_path):
    missing = llmcourse("grade", "01-tokenizers", str(tmp_path / "nowhere"), cwd=root)
    assert missing.returncode == 2 and "is not a folder" in missing.stderr, missing.stderr
    unknown = llmcourse("grade", "99-nothing", str(tmp_path), cwd=root)
    assert unknown.returncode == 2 and "01-tokenizers" in unknown.stderr, unknown.stderr
    stray = tmp_path / "notes.ipynb"
    stray.write_text("{}", encoding="utf-8")
    check = llmcourse("check", str(stray), cwd=root)
    assert check.returncode == 2 and "not a chapter notebook" in check.stdout, check.stdout
    absent = llmcourse("check", str(tmp_path / "01-tokenizers" / "tokenizers.ipynb"), cwd=root)
    assert absent.returncode == 2 and "no such notebook" in absent.stdout


def test_test_command_runs_only_the_files_it_is_given(root, monkeypatch):
    """`./course test tests/test_x.py` runs that file, not the whole suite plus that file."""
    from llmcourse.course import cli

    commands = []

    def run(command, **kwargs):
        commands.append(command)
        return SimpleNamespace(returncode=0)

    monkeypatch.setattr(cli.subprocess, "run", run)
    cli.run_package_tests(None, [], ["tests/test_cli.py", "-q"])
    cli.run_package_tests(None, [], ["-q"])
    cli.run_package_tests(None, ["test_attention.py"], [])
    assert commands[0][3:] == ["tests/test_cli.py", "-q"]
    assert commands[1][3:] == [str(root / "tests"), "-q"]
    assert commands[2][3:] == [str(root / "tests" / "test_attention.py")]
