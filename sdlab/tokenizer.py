"""CLIP's tokenizer, offline: OpenAI's BPE vocabulary as a ``transformers.CLIPTokenizer``, and a readable BPE.

The vocabulary is OpenAI's ``bpe_simple_vocab_16e6.txt.gz`` (MIT licence), read from the files of the PyPI
wheel ``clip-anytorch`` (installed with ``--no-deps``; its ``clip`` module is never imported, because it
imports torchvision). No model hub, no network.

How the file becomes CLIP's 49 408 ids (the rule of OpenAI's ``simple_tokenizer.py``):

- ids 0-255: the 256 bytes, each as a printable character (``bytes_to_unicode``);
- ids 256-511: the same 256 characters with ``</w>`` ("end of word") appended;
- ids 512-49 405: one token per merge, in file order: the first 48 894 merge lines (line 0 is a header);
- 49 406 ``<|startoftext|>`` (BOS) and 49 407 ``<|endoftext|>`` (EOS).

Every prompt becomes ``[BOS, pieces..., EOS]`` padded to 77 ids, CLIP's context length. The pad token is
``<|endoftext|>`` (id 49 407), as in the tokenizer folders of ``openai/clip-vit-large-patch14`` and Stable
Diffusion v1: all 77 output vectors of the text encoder reach SD v1's U-Net, which was trained on prompts
padded that way. (OpenAI's own ``clip.tokenize`` pads with id 0, the character ``!``, and so does Stable
Diffusion 2's OpenCLIP tokenizer; ``attention_mask`` tells real tokens from padding either way.)

``bpe``, ``bpe_steps`` and ``reference_encode`` redo OpenAI's algorithm in plain Python, for reading and for
checking the transformers tokenizer. Where they differ from it, and from each other:

- OpenAI runs ``ftfy.fix_text`` first (not installed here): it repairs mojibake (``cafÃ©`` -> ``café``),
  straightens curly quotes (``it’s`` -> ``it's``), splits ligatures and folds full-width letters. Neither
  ``reference_encode`` nor transformers does; both apply only ftfy's last step, Unicode NFC.
- OpenAI (and ``reference_encode``) unescape HTML twice (``&amp;`` -> ``&``); transformers does not.
- Python lower-cases a word-final Greek ``Σ`` to ``ς``, transformers to ``σ``; and transformers finds
  ``<|endoftext|>`` in a prompt before lower-casing, so ``<|ENDOFTEXT|>`` stays text there.

Plain prompts, such as the course's captions, come out the same in all three.
"""

from __future__ import annotations

import functools
import gzip
import hashlib
import html
import importlib.metadata
import json
import math
import os
import tempfile
import unicodedata
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from sdlab.validation import int_in_range, one_of

if TYPE_CHECKING:  # transformers is imported on first use: `import sdlab` stays quick
    import torch
    from transformers import CLIPTokenizer, PreTrainedTokenizerBase

__all__ = [
    "CONTEXT_LENGTH",
    "VOCAB_SIZE",
    "BOS_TOKEN",
    "EOS_TOKEN",
    "BOS_ID",
    "EOS_ID",
    "PAD_ID",
    "END_OF_WORD",
    "SPLIT_PATTERN",
    "load_tokenizer",
    "save_tokenizer",
    "tokenize",
    "pieces",
    "load_merges",
    "bytes_to_unicode",
    "get_pairs",
    "bpe_steps",
    "bpe",
    "reference_encode",
]

CONTEXT_LENGTH = 77  # CLIP's text encoder has 77 positions: BOS, up to 75 pieces, EOS
VOCAB_SIZE = 49_408
BOS_TOKEN, EOS_TOKEN = "<|startoftext|>", "<|endoftext|>"
BOS_ID, EOS_ID = 49_406, 49_407
PAD_ID = EOS_ID  # pad with <|endoftext|>, as Stable Diffusion v1's tokenizer does
END_OF_WORD = "</w>"
# OpenAI's pre-tokenizer: the special tokens, English contractions, runs of letters, single digits, and runs
# of anything else that is not a space. Needs the `regex` package for \p{L} (letters) and \p{N} (numbers).
SPLIT_PATTERN = r"<\|startoftext\|>|<\|endoftext\|>|'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+"

_DISTRIBUTION = "clip-anytorch"
_VOCAB_FILE = "clip/bpe_simple_vocab_16e6.txt.gz"
_VOCAB_SHA256 = "924691ac288e54409236115652ad4aa250f48203de50a9e4722a6ecd48d6804a"  # the file in openai/CLIP
_PIP_HINT = "pip install --no-deps clip-anytorch==2.6.0"
_N_MERGES = 49152 - 256 - 2  # OpenAI's slice lines[1 : 49152-256-2+1]: 48 894 merges
_SPECIALS = {"bos_token": BOS_TOKEN, "eos_token": EOS_TOKEN, "unk_token": EOS_TOKEN, "pad_token": EOS_TOKEN}

# ----------------------------------------------------------------------------- the vocabulary file


def _vocab_path() -> Path:
    """Path of OpenAI's BPE file inside the installed clip-anytorch wheel, found without importing ``clip``."""
    try:
        path = Path(importlib.metadata.distribution(_DISTRIBUTION).locate_file(_VOCAB_FILE))
    except importlib.metadata.PackageNotFoundError:
        raise ImportError(f"CLIP's BPE vocabulary comes from the PyPI package clip-anytorch; install it "
                          f"without its dependencies: {_PIP_HINT}") from None
    if not path.is_file():
        raise ImportError(f"clip-anytorch is installed without {_VOCAB_FILE}; reinstall it: {_PIP_HINT}")
    return path


@functools.cache
def _merges() -> tuple[tuple[str, str], ...]:
    """The 48 894 merge rules of CLIP's BPE, highest priority first, checked against OpenAI's file hash."""
    path = _vocab_path()
    data = path.read_bytes()
    if hashlib.sha256(data).hexdigest() != _VOCAB_SHA256:
        raise RuntimeError(f"{path} is not OpenAI's bpe_simple_vocab_16e6.txt.gz (sha256 differs); "
                           f"reinstall: {_PIP_HINT}")
    lines = gzip.decompress(data).decode("utf-8").split("\n")[1:_N_MERGES + 1]
    return tuple((first, second) for first, second in (line.split() for line in lines))


def load_merges() -> list[tuple[str, str]]:
    """Return CLIP's merge rules in priority order, e.g. ``[('i', 'n'), ('t', 'h'), ...]`` (48 894 pairs).

    Returns:
        A new list of ``(left, right)`` pairs of byte-level strings; merge ``k`` makes the token of id 512 + k.
    """
    return list(_merges())


@functools.cache
def bytes_to_unicode() -> dict[int, str]:
    """Return OpenAI's map from each byte (0-255) to a printable character, the alphabet of CLIP's BPE.

    Printable Latin-1 bytes (``!`` to ``~``, ``¡`` to ``¬``, ``®`` to ``ÿ``) stand for themselves; the other 68
    (space, control bytes, ...) become the characters 256, 257, ... so that no piece contains a space.

    Returns:
        A dict byte -> one-character str, in the order that gives the ids 0-255.
    """
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    others = [b for b in range(256) if b not in printable]
    codes = printable + [256 + n for n in range(len(others))]
    return dict(zip(printable + others, map(chr, codes)))


@functools.cache
def _vocabulary() -> dict[str, int]:
    """CLIP's token -> id map: 256 bytes, 256 bytes + ``</w>``, one token per merge, BOS, EOS."""
    alphabet = list(bytes_to_unicode().values())
    tokens = [*alphabet, *(c + END_OF_WORD for c in alphabet), *(a + b for a, b in _merges()), BOS_TOKEN, EOS_TOKEN]
    vocab = {token: i for i, token in enumerate(tokens)}
    if len(vocab) != VOCAB_SIZE:
        raise RuntimeError(f"CLIP's vocabulary should have {VOCAB_SIZE} tokens; got {len(vocab)}: {_PIP_HINT}")
    return vocab


# ----------------------------------------------------------------------------- the transformers tokenizer


@functools.cache
def load_tokenizer() -> CLIPTokenizer:
    """Return CLIP's tokenizer as a ``transformers.CLIPTokenizer``, built from the local BPE file (no hub).

    It is built once per process (about 0.1 s after importing transformers) and the same object is returned
    afterwards: do not add tokens to it; work on ``copy.deepcopy(load_tokenizer())`` instead.

    Returns:
        A tokenizer with 49 408 ids, BOS 49 406, EOS and pad 49 407, ``model_max_length`` 77.
    """
    import transformers

    vocab, merges = _vocabulary(), _merges()
    if int(transformers.__version__.split(".")[0]) >= 5:
        # vocab=/merges= objects: transformers 5 ignores vocab_file=/merges_file= (a 3-token tokenizer results).
        return transformers.CLIPTokenizer(vocab=dict(vocab), merges=list(merges), model_max_length=CONTEXT_LENGTH,
                                          **_SPECIALS)
    with tempfile.TemporaryDirectory() as folder:  # transformers 4: the fast tokenizer reads the two files
        _write_vocab_files(Path(folder), vocab, merges)
        return transformers.CLIPTokenizerFast(vocab_file=os.path.join(folder, "vocab.json"),
                                              merges_file=os.path.join(folder, "merges.txt"),
                                              model_max_length=CONTEXT_LENGTH, **_SPECIALS)


def _write_vocab_files(folder: Path, vocab: dict[str, int], merges: Any) -> None:
    """Write ``vocab.json`` and ``merges.txt`` in the layout of transformers 4's ``CLIPTokenizer.save_vocabulary``."""
    folder.mkdir(parents=True, exist_ok=True)
    text = json.dumps(vocab, indent=2, sort_keys=True, ensure_ascii=False) + "\n"
    (folder / "vocab.json").write_text(text, encoding="utf-8")
    lines = [m if isinstance(m, str) else " ".join(m) for m in merges]
    (folder / "merges.txt").write_text("\n".join(["#version: 0.2", *lines]) + "\n", encoding="utf-8")


def save_tokenizer(tokenizer: PreTrainedTokenizerBase, folder: str | os.PathLike) -> Path:
    """Save a BPE tokenizer so that transformers 4 and 5 can both load it with ``from_pretrained(folder)``.

    ``save_pretrained`` of transformers 5 writes only ``tokenizer.json``; this also writes ``vocab.json`` and
    ``merges.txt``, the files transformers 4's ``CLIPTokenizer`` reads.

    Args:
        tokenizer: a transformers tokenizer with a BPE backend, e.g. ``load_tokenizer()``.
        folder: the folder to write (created if missing; files of the same names are replaced).

    Returns:
        The folder, as a ``Path``.
    """
    model = _bpe_backend(tokenizer, "tokenizer")
    if not isinstance(folder, (str, os.PathLike)):
        raise TypeError(f"folder must be a str or a path; got {type(folder).__name__}")
    folder = Path(folder)
    tokenizer.save_pretrained(folder)
    _write_vocab_files(folder, model["vocab"], model["merges"])
    return folder


def _bpe_backend(tokenizer: Any, name: str) -> dict[str, Any]:
    """The serialised BPE model (``vocab``, ``merges``) of a transformers tokenizer, or a TypeError."""
    backend = getattr(tokenizer, "backend_tokenizer", None)
    model = json.loads(backend.to_str())["model"] if backend is not None else {}
    if model.get("type") != "BPE":
        raise TypeError(f"{name} must be a transformers tokenizer with a BPE backend, such as "
                        f"sd.tokenizer.load_tokenizer(); got {type(tokenizer).__name__}")
    return model


def _checked_tokenizer(tokenizer: Any) -> PreTrainedTokenizerBase:
    """``load_tokenizer()`` for None, the tokenizer itself when it is a transformers tokenizer, else TypeError."""
    if tokenizer is None:
        return load_tokenizer()
    from transformers import PreTrainedTokenizerBase

    if not isinstance(tokenizer, PreTrainedTokenizerBase):
        raise TypeError(f"tokenizer must be None or a transformers tokenizer such as sd.tokenizer.load_tokenizer(); "
                        f"got {type(tokenizer).__name__}")
    return tokenizer


def _prompt_list(prompts: Any) -> list[str]:
    """The prompts as a list of str: one str, or a non-empty list or tuple of str."""
    if isinstance(prompts, str):
        return [prompts]
    if not isinstance(prompts, (list, tuple)):
        raise TypeError(f"prompts must be a str or a list or tuple of str; got {type(prompts).__name__}")
    if not prompts:
        raise ValueError(f"prompts must hold at least one prompt; got an empty {type(prompts).__name__}")
    for i, prompt in enumerate(prompts):
        if not isinstance(prompt, str):
            raise TypeError(f"prompts[{i}] must be a str; got {type(prompt).__name__} ({prompt!r})")
    return list(prompts)


def tokenize(prompts: str | list[str] | tuple[str, ...], *, tokenizer: PreTrainedTokenizerBase | None = None,
             max_length: int = CONTEXT_LENGTH, padding: Literal["max_length", "longest"] = "max_length"
             ) -> dict[str, torch.Tensor]:
    """Turn prompts into CLIP's input ids, padded with ``<|endoftext|>`` and cut to ``max_length`` ids.

    A prompt with more than ``max_length`` ids (BOS and EOS included) keeps its first ``max_length - 1`` ids
    and its EOS, with a ``UserWarning`` saying how many tokens were dropped and which words they were.

    Args:
        prompts: one prompt, or a list or tuple of prompts.
        tokenizer: a transformers tokenizer; None for ``load_tokenizer()``.
        max_length: ids per prompt, 2 to 77 (CLIP's text encoder has 77 positions).
        padding: ``"max_length"`` pads every prompt to ``max_length`` (what Stable Diffusion feeds its U-Net);
            ``"longest"`` only to the longest prompt of the batch (faster for training a text encoder).

    Returns:
        ``{"input_ids": (B, max_length) int64, "attention_mask": (B, max_length) int64}``, mask 1 on the real
        tokens (BOS to EOS) and 0 on the padding. Stable Diffusion v1 passes only ``input_ids`` to its encoder.
    """
    texts = _prompt_list(prompts)
    tok = _checked_tokenizer(tokenizer)
    max_length = int_in_range(max_length, "max_length", 2, CONTEXT_LENGTH)
    padding = one_of(padding, "padding", ("max_length", "longest"))
    _warn_if_truncated(tok, texts, tok(texts, verbose=False)["input_ids"], max_length)
    batch = tok(texts, padding=padding, truncation=True, max_length=max_length, return_tensors="pt")
    return {"input_ids": batch["input_ids"].long(), "attention_mask": batch["attention_mask"].long()}


def _warn_if_truncated(tok: Any, texts: list[str], ids: list[list[int]], max_length: int) -> None:
    """One UserWarning naming every prompt longer than ``max_length`` ids, its length and its dropped words."""
    long = [(i, row) for i, row in enumerate(ids) if len(row) > max_length]
    if not long:
        return
    lines = [f"prompt {i} has {len(row)} tokens (BOS and EOS included); the last {len(row) - max_length} before EOS "
             f"were dropped: {tok.decode(row[max_length - 1:-1])!r}" for i, row in long]
    warnings.warn(f"CLIP reads at most {max_length} tokens per prompt, so {len(long)} of {len(texts)} prompts were "
                  "truncated:\n" + "\n".join(lines), UserWarning, stacklevel=3)


def pieces(prompt: str, *, tokenizer: PreTrainedTokenizerBase | None = None) -> list[tuple[str, int]]:
    """Return the BPE pieces of one prompt with their ids, from BOS to EOS, for the words -> pieces -> ids display.

    A piece ending in ``</w>`` ends a word (``"cat</w>"``); a piece without it continues into the next one.
    Bytes are shown as text; the bytes of a character that spans several pieces are shown as ``\\xe7``-style
    escapes. Nothing is truncated: ids past position 76 are the ones ``tokenize`` would drop.

    Args:
        prompt: one prompt.
        tokenizer: a transformers tokenizer; None for ``load_tokenizer()``.

    Returns:
        A list of ``(piece, id)``, e.g. ``[('<|startoftext|>', 49406), ('a</w>', 320), ('cat</w>', 2368), ...]``.
    """
    if not isinstance(prompt, str):
        raise TypeError(f"prompt must be a str; got {type(prompt).__name__} ({prompt!r})")
    tok = _checked_tokenizer(tokenizer)
    ids = tok(prompt, verbose=False)["input_ids"]  # verbose=False: no "longer than 77" log line
    return [(_readable(token), int(i)) for token, i in zip(tok.convert_ids_to_tokens(ids), ids)]


def _readable(token: str) -> str:
    """A vocabulary token as text: byte-level characters decoded to UTF-8, ``</w>`` kept."""
    if token in (BOS_TOKEN, EOS_TOKEN):
        return token
    decoder = {c: b for b, c in bytes_to_unicode().items()}
    body, end = (token[:-len(END_OF_WORD)], END_OF_WORD) if token.endswith(END_OF_WORD) else (token, "")
    if not all(c in decoder for c in body):
        return token  # an added token, not a byte-level piece
    return bytes(decoder[c] for c in body).decode("utf-8", errors="backslashreplace") + end


# ----------------------------------------------------------------------------- BPE in plain Python


def get_pairs(word: tuple[str, ...]) -> set[tuple[str, str]]:
    """Return the set of neighbouring symbol pairs of a word, e.g. ``('c', 'a', 't</w>')`` -> ``{('c', 'a'), ...}``.

    Args:
        word: the word as a tuple of symbols (strings).

    Returns:
        The pairs ``(word[i], word[i + 1])``.
    """
    return set(zip(word, word[1:]))


def _merge_pair(word: tuple[str, ...], pair: tuple[str, str]) -> tuple[str, ...]:
    """``word`` with every occurrence of ``pair`` fused into one symbol, scanning left to right."""
    out, i = [], 0
    while i < len(word):
        if i + 1 < len(word) and (word[i], word[i + 1]) == pair:
            out.append(word[i] + word[i + 1])
            i += 2
        else:
            out.append(word[i])
            i += 1
    return tuple(out)


def bpe_steps(word: str, ranks: dict[tuple[str, str], int] | None = None) -> list[tuple[str, ...]]:
    """Return every stage of byte-pair encoding one pre-token, from single bytes to the final pieces.

    Start from the word's bytes (the last one marked ``</w>``); repeatedly fuse the neighbouring pair whose
    merge rule comes first in the file; stop when no pair has a rule.

    Args:
        word: one pre-token of ``SPLIT_PATTERN`` (a word, a digit or a run of punctuation), as text.
        ranks: merge pair -> priority (0 is first); None for CLIP's 48 894 merges.

    Returns:
        The stages, e.g. for "cat": ``[('c', 'a', 't</w>'), ('c', 'at</w>'), ('cat</w>',)]``; the symbols are
        byte-level strings (vocabulary keys), so ``é`` shows as ``Ã©``.
    """
    if not isinstance(word, str) or not word:
        raise TypeError(f"word must be a non-empty str; got {word!r}")
    ranks = _ranks() if ranks is None else ranks
    encoder = bytes_to_unicode()
    symbols = [encoder[b] for b in word.encode("utf-8")]
    stages = [(*symbols[:-1], symbols[-1] + END_OF_WORD)]
    while len(stages[-1]) > 1:
        best = min(get_pairs(stages[-1]), key=lambda pair: ranks.get(pair, math.inf))
        if best not in ranks:
            break
        stages.append(_merge_pair(stages[-1], best))
    return stages


def bpe(word: str, ranks: dict[tuple[str, str], int] | None = None) -> tuple[str, ...]:
    """Return the BPE pieces of one pre-token: the last stage of ``bpe_steps``.

    Args:
        word: one pre-token (a word, a digit or a run of punctuation), as text.
        ranks: merge pair -> priority; None for CLIP's merges.

    Returns:
        The pieces as vocabulary keys, e.g. ``('cat</w>',)``.
    """
    return bpe_steps(word, ranks)[-1]


@functools.cache
def _ranks() -> dict[tuple[str, str], int]:
    """CLIP's merge pair -> priority (its line number in the file, from 0)."""
    return {pair: rank for rank, pair in enumerate(_merges())}


@functools.cache
def _regexes() -> tuple[Any, Any]:
    """OpenAI's pre-tokenizer and its whitespace, compiled with the `regex` package (`re` has no \\p{L})."""
    import regex  # transformers depends on it

    return regex.compile(SPLIT_PATTERN, regex.IGNORECASE), regex.compile(r"\s+")


def reference_encode(text: str) -> list[int]:
    """Return CLIP's ids of a text by OpenAI's algorithm, from the BPE file alone: ``[BOS, ..., EOS]``.

    Steps: Unicode NFC (where OpenAI runs ``ftfy.fix_text``), HTML unescaping twice, spaces collapsed and
    stripped, lower case; split with ``SPLIT_PATTERN``; ``bpe`` on each pre-token; look up the ids.
    Neither padded nor truncated.

    Args:
        text: one prompt.

    Returns:
        The ids as a list of int.
    """
    if not isinstance(text, str):
        raise TypeError(f"text must be a str; got {type(text).__name__} ({text!r})")
    text = html.unescape(html.unescape(unicodedata.normalize("NFC", text)))
    split, spaces = _regexes()
    text = spaces.sub(" ", text).strip().lower()
    vocab, ids = _vocabulary(), [BOS_ID]
    for word in split.findall(text):
        ids.extend([vocab[word]] if word in (BOS_TOKEN, EOS_TOKEN) else [vocab[p] for p in bpe(word)])
    return [*ids, EOS_ID]
