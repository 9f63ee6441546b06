"""sdlab.tokenizer gives CLIP's real ids offline, agrees with OpenAI's BPE algorithm, and saves a loadable folder."""
import json
import os
import subprocess
import sys
import textwrap
import warnings
from pathlib import Path

import pytest
import torch
from transformers import CLIPTokenizer

from sdlab import tokenizer as T

ROOT = Path(__file__).resolve().parents[1]
CAT_IDS = [49406, 320, 1125, 539, 320, 2368, 49407]

# The course's scene captions, plain prompts and odd ones; HF and the plain-Python reference must agree on all.
PROMPTS = [
    "a photo of a cat",
    "a small red cat on the left, blue background",
    "a large green giraffe on the right, purple background",
    "a small white bird in the centre, black background",
    "a large orange zebra on the left, yellow background",
    "an astronaut riding a horse on the moon, highly detailed, 4k",
    "A PHOTO OF A DOG",
    "  lots   of\n\nspaces\tand\ttabs  ",
    "it's a dog's life, we're sure they'll say I'd've",
    "don't DON'T",
    "1234567890",
    "3.14159 and 2,718",
    "Café crème brûlée",
    "Über grün, Straße",
    "İstanbul",
    "e\u0301 decomposed accent",
    "猫が好き 東京",
    "고양이 사진",
    "🐱🐶 emoji 👍🏽 and 🇫🇷",
    "!!!???...",
    "a-b_c/d\\e|f",
    "<|endoftext|> inside a prompt",
    "zero\u200bwidth and nbsp\xa0space",
    "ideographic\u3000space",
    "x" * 100,
    "photography photographer photographic",
    "pneumonoultramicroscopicsilicovolcanoconiosis",
    "it’s curly",
    "",
    "   ",
]


@pytest.fixture(scope="module")
def tok():
    return T.load_tokenizer()


# ----------------------------------------------------------------------------- the vocabulary


def test_a_photo_of_a_cat(tok):
    assert tok("a photo of a cat")["input_ids"] == CAT_IDS
    assert T.reference_encode("a photo of a cat") == CAT_IDS


def test_vocabulary_size_and_special_ids(tok):
    assert len(tok) == T.VOCAB_SIZE == 49408
    assert (tok.bos_token_id, tok.eos_token_id, tok.pad_token_id) == (T.BOS_ID, T.EOS_ID, T.PAD_ID) == (49406, 49407, 49407)
    assert (tok.bos_token, tok.eos_token, tok.pad_token) == ("<|startoftext|>", "<|endoftext|>", "<|endoftext|>")
    assert tok.model_max_length == T.CONTEXT_LENGTH == 77


def test_vocabulary_layout(tok):
    # bytes, bytes + </w>, one token per merge (first "i n", last "jeky ll</w>"), then BOS and EOS
    ids = [0, 255, 256, 511, 512, 49405, 49406, 49407]
    assert tok.convert_ids_to_tokens(ids) == ["!", "Ń", "!</w>", "Ń</w>", "in", "jekyll</w>", T.BOS_TOKEN, T.EOS_TOKEN]
    merges = T.load_merges()
    assert len(merges) == 48894 and merges[:2] == [("i", "n"), ("t", "h")] and merges[-1] == ("jeky", "ll</w>")
    merges.clear()  # a copy: the cached merges are untouched
    assert len(T.load_merges()) == 48894


def test_bytes_to_unicode_is_a_printable_alphabet():
    table = T.bytes_to_unicode()
    assert list(table) == list(range(ord("!"), ord("~") + 1)) + list(range(161, 173)) + list(range(174, 256)) + [
        b for b in range(256) if not (33 <= b <= 126 or 161 <= b <= 172 or 174 <= b <= 255)]
    assert sorted(table) == list(range(256)) and len(set(table.values())) == 256
    assert not any(c.isspace() for c in table.values())
    assert table[ord("a")] == "a" and table[ord(" ")] == "Ġ"


def test_load_tokenizer_is_cached(tok):
    assert T.load_tokenizer() is tok
    assert type(tok) is CLIPTokenizer


# ----------------------------------------------------------------------------- text handling


@pytest.mark.parametrize(("text", "expected"), [
    ("1234", ["1</w>", "2</w>", "3</w>", "4</w>"]),  # CLIP splits numbers into single digits
    ("A PHOTO of a CAT", ["a</w>", "photo</w>", "of</w>", "a</w>", "cat</w>"]),  # lower case
    ("  a photo\n\nof a\tcat  ", ["a</w>", "photo</w>", "of</w>", "a</w>", "cat</w>"]),  # spaces and newlines
    ("café", ["café</w>"]),
    ("über", ["ü", "ber</w>"]),
    ("🐱", ["🐱</w>"]),
    ("猫", ["\\xe7", "\\x8c", "\\xab</w>"]),  # one CJK character, three byte pieces
    ("cats!", ["cats</w>", "!</w>"]),
])
def test_pieces(text, expected, tok):
    got = T.pieces(text)
    assert got[0] == (T.BOS_TOKEN, T.BOS_ID) and got[-1] == (T.EOS_TOKEN, T.EOS_ID)
    assert [piece for piece, _ in got[1:-1]] == expected
    assert [i for _, i in got] == tok(text)["input_ids"]


@pytest.mark.parametrize("text", ["Café crème brûlée", "Über grün", "猫が好き 東京", "🐱🐶 emoji 👍🏽", "HELLO\n\n  World"])
def test_unicode_round_trip(text, tok):
    """Byte-level BPE loses only case and spacing: decoding gives back the normalised text."""
    ids = tok(text)["input_ids"]
    assert tok.decode(ids, skip_special_tokens=True) == " ".join(text.lower().split())


def test_digits_decode_one_by_one(tok):
    """Each digit is a word of its own ("4</w>"), so decoding cannot tell 42 from 4 2."""
    assert tok.decode(tok("42 cats")["input_ids"], skip_special_tokens=True) == "4 2 cats"


def test_pieces_are_not_truncated():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert len(T.pieces("word " * 80)) == 82


# ----------------------------------------------------------------------------- tokenize


def test_tokenize_pads_to_77(tok):
    batch = T.tokenize(["a photo of a cat", "a small red cat on the left, blue background"])
    ids, mask = batch["input_ids"], batch["attention_mask"]
    assert set(batch) == {"input_ids", "attention_mask"}
    assert ids.shape == mask.shape == (2, 77) and ids.dtype == mask.dtype == torch.int64
    assert ids[0, :7].tolist() == CAT_IDS and (ids[0, 7:] == T.PAD_ID).all()
    assert mask.sum(1).tolist() == [7, len(tok(PROMPTS[1])["input_ids"])]
    assert mask[0, :7].all() and not mask[0, 7:].any()


def test_tokenize_one_string_and_tuple_and_short_length():
    assert T.tokenize("a photo of a cat")["input_ids"].shape == (1, 77)
    assert T.tokenize(("a", "b"))["input_ids"].shape == (2, 77)
    assert T.tokenize("a photo of a cat", max_length=7)["input_ids"][0].tolist() == CAT_IDS


def test_tokenize_with_a_given_tokenizer(tmp_path, tok):
    other = CLIPTokenizer.from_pretrained(T.save_tokenizer(tok, tmp_path), local_files_only=True)
    assert torch.equal(T.tokenize(PROMPTS, tokenizer=other)["input_ids"], T.tokenize(PROMPTS)["input_ids"])


def test_long_prompt_is_truncated_with_a_warning(tok):
    prompt = "word " * 80  # 80 pieces + BOS + EOS = 82 ids
    with pytest.warns(UserWarning, match=r"1 of 2 prompts.*\n.*prompt 1 has 82 tokens .*the last 5 .*'word word word word word'"):
        batch = T.tokenize(["a cat", prompt])
    full = tok(prompt, verbose=False)["input_ids"]
    assert batch["input_ids"][1].tolist() == full[:76] + [T.EOS_ID]
    assert batch["attention_mask"][1].all()


def test_warning_points_at_the_callers_line():
    with pytest.warns(UserWarning) as record:
        T.tokenize("word " * 76)  # 78 ids: one dropped
    assert "the last 1 " in str(record[0].message) and record[0].filename == __file__


def test_77_tokens_is_not_truncated():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        batch = T.tokenize("word " * 75)  # exactly 77 ids
    assert batch["input_ids"][0, -1] == T.EOS_ID and batch["attention_mask"].all()


# ----------------------------------------------------------------------------- the plain-Python reference


@pytest.mark.parametrize("prompt", PROMPTS)
def test_transformers_agrees_with_the_reference_bpe(prompt, tok):
    assert tok(prompt, verbose=False)["input_ids"] == T.reference_encode(prompt)


@pytest.mark.parametrize(("text", "transformers_ids", "reference_ids"), [
    ("&amp;", [261, 6259, 282], [261]),  # OpenAI unescapes HTML: "&"; transformers keeps "& amp ;"
    ("ΟΔΟΣ", [138, 123, 138, 112, 138, 123, 139, 481], [138, 123, 138, 112, 138, 123, 139, 480]),  # σ vs final ς
    ("<|ENDOFTEXT|>", [27, 347, 40786, 4160, 91, 285], [T.EOS_ID]),  # special token found before lower-casing
])
def test_known_differences_from_openai(text, transformers_ids, reference_ids, tok):
    """The differences the module docstring lists, pinned so that a change in transformers shows up here."""
    assert tok(text)["input_ids"][1:-1] == transformers_ids
    assert T.reference_encode(text)[1:-1] == reference_ids


def test_bpe_steps_merge_the_highest_priority_pair_first():
    assert T.bpe_steps("cat") == [("c", "a", "t</w>"), ("c", "at</w>"), ("cat</w>",)]
    assert T.bpe("photography") == ("photography</w>",)
    assert T.bpe("é") == ("Ã©</w>",)  # byte-level characters: the two UTF-8 bytes of é


def test_bpe_with_toy_merges():
    ranks = {("a", "b"): 0, ("ab", "a"): 1}
    assert T.bpe_steps("abab", ranks) == [("a", "b", "a", "b</w>"), ("ab", "a", "b</w>"), ("aba", "b</w>")]
    assert T.bpe("x", ranks) == ("x</w>",)
    assert T.get_pairs(("c", "a", "t</w>")) == {("c", "a"), ("a", "t</w>")}


# ----------------------------------------------------------------------------- save and load


def test_save_and_load_round_trip(tmp_path, tok):
    folder = T.save_tokenizer(tok, str(tmp_path / "tokenizer"))
    assert folder == tmp_path / "tokenizer"
    assert {"tokenizer.json", "tokenizer_config.json", "vocab.json", "merges.txt"} <= {p.name for p in folder.iterdir()}
    config = json.loads((folder / "tokenizer_config.json").read_text())
    assert config["model_max_length"] == 77 and config["pad_token"] == "<|endoftext|>"
    loaded = CLIPTokenizer.from_pretrained(folder, local_files_only=True)
    assert len(loaded) == 49408 and loaded.pad_token_id == T.PAD_ID and loaded.model_max_length == 77
    for prompt in PROMPTS:
        assert loaded(prompt, verbose=False)["input_ids"] == tok(prompt, verbose=False)["input_ids"], prompt


def test_saved_vocab_and_merges_alone_rebuild_the_tokenizer(tmp_path, tok):
    """vocab.json + merges.txt are what transformers 4's CLIPTokenizer reads: they must hold the whole vocabulary."""
    folder = T.save_tokenizer(tok, tmp_path)
    vocab = json.loads((folder / "vocab.json").read_text(encoding="utf-8"))
    lines = (folder / "merges.txt").read_text(encoding="utf-8").splitlines()
    assert vocab == tok.get_vocab() and len(vocab) == 49408
    assert lines[0] == "#version: 0.2" and len(lines) == 1 + 48894 and lines[1] == "i n"
    rebuilt = CLIPTokenizer(vocab=vocab, merges=[tuple(line.split()) for line in lines[1:]], model_max_length=77)
    for prompt in PROMPTS:
        assert rebuilt(prompt, verbose=False)["input_ids"] == tok(prompt, verbose=False)["input_ids"], prompt


# ----------------------------------------------------------------------------- bad input


@pytest.mark.parametrize(("call", "error", "message"), [
    (lambda: T.tokenize(3), TypeError, r"prompts must be a str or a list or tuple of str; got int"),
    (lambda: T.tokenize(b"a cat"), TypeError, r"prompts must be a str or a list or tuple of str; got bytes"),
    (lambda: T.tokenize(["a cat", 3]), TypeError, r"prompts\[1\] must be a str; got int \(3\)"),
    (lambda: T.tokenize(["a cat", None]), TypeError, r"prompts\[1\] must be a str; got NoneType"),
    (lambda: T.tokenize([]), ValueError, r"prompts must hold at least one prompt; got an empty list"),
    (lambda: T.tokenize("a cat", tokenizer="clip"), TypeError, r"tokenizer must be None or a transformers tokenizer .*; got str"),
    (lambda: T.tokenize("a cat", max_length=78), ValueError, r"max_length must be an int in \[2, 77\]; got 78"),
    (lambda: T.tokenize("a cat", max_length=1), ValueError, r"max_length must be an int in \[2, 77\]; got 1"),
    (lambda: T.tokenize("a cat", max_length=7.0), ValueError, r"max_length must be an int in \[2, 77\]; got 7.0"),
    (lambda: T.tokenize("a cat", max_length=True), ValueError, r"max_length must be an int in \[2, 77\]; got True"),
    (lambda: T.pieces(["a cat"]), TypeError, r"prompt must be a str; got list \(\['a cat'\]\)"),
    (lambda: T.reference_encode(None), TypeError, r"text must be a str; got NoneType"),
    (lambda: T.bpe_steps(""), TypeError, r"word must be a non-empty str; got ''"),
    (lambda: T.save_tokenizer("clip", "folder"), TypeError, r"tokenizer must be a transformers tokenizer with a BPE backend.*; got str"),
    (lambda: T.save_tokenizer(T.load_tokenizer(), 3), TypeError, r"folder must be a str or a path; got int"),
])
def test_bad_input_is_refused_clearly(call, error, message):
    with pytest.raises(error, match=message):
        call()


# ----------------------------------------------------------------------------- offline


OFFLINE_SCRIPT = textwrap.dedent("""
    import json, socket, sys

    def refuse(*args, **kwargs):
        raise OSError("network access attempted")

    socket.socket.connect = socket.socket.connect_ex = socket.create_connection = socket.getaddrinfo = refuse
    from sdlab import tokenizer as T

    ids = T.tokenize(["a photo of a cat"])["input_ids"][0, :7].tolist()
    print(json.dumps({"ids": ids, "clip": "clip" in sys.modules, "torchvision": "torchvision" in sys.modules}))
""")


def test_loads_offline_without_importing_clip(tmp_path):
    """No hub, no network, an empty HF cache; and neither `clip` nor torchvision is ever imported."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf"),
           "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    result = subprocess.run([sys.executable, "-c", OFFLINE_SCRIPT], capture_output=True, text=True, env=env,
                            cwd=tmp_path, timeout=300)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout.splitlines()[-1]) == {"ids": CAT_IDS, "clip": False, "torchvision": False}
    assert not (tmp_path / "hf").exists() or not any((tmp_path / "hf").rglob("*.json"))


def test_tokenize_can_pad_to_the_longest_prompt_and_still_warns_when_cutting():
    from sdlab.tokenizer import tokenize

    longest = tokenize(["a cat", "a small red cat on the left"], padding="longest")
    full = tokenize(["a cat", "a small red cat on the left"])
    assert longest["input_ids"].shape == (2, 9) and torch.equal(longest["input_ids"], full["input_ids"][:, :9])
    with pytest.warns(UserWarning, match="truncated"):
        assert tokenize(["cat " * 90], padding="longest")["input_ids"].shape == (1, 77)
    with pytest.raises(ValueError, match="padding must be one of"):
        tokenize("a cat", padding="shortest")
