"""Text to ids and back, with Molmo's image tokens (chapter 05).

Molmo keeps its LLM's tokenizer (Qwen2's, OLMo's) and adds five tokens for the image (allenai/molmo,
olmo/tokenizer.py): ``<im_start>``, ``<im_end>``, ``<im_patch>``, ``<im_col>`` and ``<|image|>``. They get the ids right
AFTER the base vocabulary, so the LLM's embedding table becomes ``[base rows ; new rows]`` and only the new rows need
training. Two more details from the same file:

- Qwen2 and OLMo have no BOS token; Molmo uses EOS as BOS ("a generic separator").
- When the LLM's embedding has more rows than its tokenizer has tokens (Qwen2-7B: 152064 rows, 151646 tokens), Molmo
  pads the tokenizer (``pad_tokenizer_to``) so the image tokens land after the embedding's rows, not the tokenizer's.
  ``MolmoTokenizer(base, pad_to=152064)`` does the same without adding filler tokens.

How it works: ``encode`` cuts the text at the image tokens, lets the base tokenizer encode the pieces between them and
puts each image token's id in its place; ``decode`` does the reverse. The base never sees the image tokens, so any
Hugging Face tokenizer works unchanged.

The course's own tiny byte-level BPE (512 tokens incl. ``<|endoftext|>`` and ``<pad>``) lives in
``data_samples/tokenizer/tiny_bpe.json``; ``scripts/build_tiny_tokenizer.py`` rebuilds it bit for bit with
``train_bpe`` below.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import torch

from .config import IMAGE_TOKENS

TINY_BPE_PATH = Path(__file__).resolve().parents[1] / "data_samples" / "tokenizer" / "tiny_bpe.json"
TINY_SPECIAL_TOKENS = ("<|endoftext|>", "<pad>")  # the tiny BPE's own specials: EOS (id 0) and padding (id 1)
EOS_CANDIDATES = ("<|endoftext|>", "<|end_of_text|>", "</s>", "<eos>")  # EOS names when the base does not say
PAD_CANDIDATES = ("<pad>", "<|pad|>", "<|padding|>")
_IMAGE_TOKEN_RE = re.compile("(" + "|".join(re.escape(t) for t in IMAGE_TOKENS) + ")")


class _Base:
    """The base tokenizer behind one small interface: a ``tokenizers.Tokenizer`` or a ``transformers`` tokenizer."""

    def __init__(self, tok: Any):
        self.tok = tok
        self.is_hf = hasattr(tok, "convert_tokens_to_ids")  # transformers' PreTrainedTokenizerBase
        if not self.is_hf and not hasattr(tok, "get_vocab_size"):
            raise TypeError(f"expected a transformers tokenizer, a tokenizers.Tokenizer or a path, got {type(tok)}")
        self.vocab = tok.get_vocab() if self.is_hf else tok.get_vocab(with_added_tokens=True)

    def __len__(self) -> int:
        return len(self.tok) if self.is_hf else self.tok.get_vocab_size(with_added_tokens=True)

    def encode(self, text: str) -> list[int]:
        if self.is_hf:
            return list(self.tok.encode(text, add_special_tokens=False))
        return self.tok.encode(text, add_special_tokens=False).ids

    def decode(self, ids: list[int], skip_special: bool) -> str:
        if self.is_hf:
            return self.tok.decode(ids, skip_special_tokens=skip_special, clean_up_tokenization_spaces=False)
        return self.tok.decode(ids, skip_special_tokens=skip_special)

    def special_id(self, role: str, candidates: tuple[str, ...]) -> int | None:
        """Id of the base's BOS / EOS / PAD token: what a transformers tokenizer declares, else a known name."""
        if self.is_hf:
            return getattr(self.tok, f"{role}_token_id", None)
        return next((self.vocab[name] for name in candidates if name in self.vocab), None)


class MolmoTokenizer:
    """A Hugging Face tokenizer plus Molmo's image tokens (``config.IMAGE_TOKENS``) as extra ids.

    base: a ``transformers`` tokenizer, a ``tokenizers.Tokenizer``, or a path (a tokenizer.json, or a folder with
    one or with a saved transformers tokenizer). pad_to: the LLM's embedding rows when larger than the base vocabulary
    (Molmo's ``pad_tokenizer_to``); the image tokens then start at ``pad_to``. A base that already holds all five
    image tokens (a released Molmo tokenizer) keeps its ids for them.
    """

    def __init__(self, base: Any, pad_to: int | None = None):
        if isinstance(base, (str, Path)):
            base = _load_base(base)
        self.base = _Base(base)
        known = [self.base.vocab.get(t) for t in IMAGE_TOKENS]
        # A released Molmo tokenizer holds the image tokens itself (Molmo-7B-O's sit inside its LLM's embedding rows)
        self.holds_image_tokens = all(i is not None for i in known)
        if self.holds_image_tokens:  # already a Molmo tokenizer
            ids = known
            self._base_vocab_size = min(ids)
        else:
            self._base_vocab_size = max(len(self.base), pad_to or 0)
            ids = range(self._base_vocab_size, self._base_vocab_size + len(IMAGE_TOKENS))
        self.image_token_ids: dict[str, int] = dict(zip(IMAGE_TOKENS, ids))
        self._id_to_image_token = {i: t for t, i in self.image_token_ids.items()}
        self._eos = self.base.special_id("eos", EOS_CANDIDATES)
        if self._eos is None:
            raise ValueError("the base tokenizer has no EOS token; Molmo needs one (it ends every answer)")
        self._bos = self.base.special_id("bos", ())
        self._pad = self.base.special_id("pad", PAD_CANDIDATES)

    @classmethod
    def from_file(cls, path: str | Path, pad_to: int | None = None) -> "MolmoTokenizer":
        """Load the base from a tokenizer.json file or a folder (see the class docstring)."""
        return cls(_load_base(path), pad_to=pad_to)

    @classmethod
    def tiny(cls, pad_to: int | None = None) -> "MolmoTokenizer":
        """The course's tiny BPE (data_samples/tokenizer/tiny_bpe.json) with the image tokens: 512 + 5 = 517 ids.
        pad_to: an LLM embedding with more base rows than 512 (the image ids then start there)."""
        return cls.from_file(TINY_BPE_PATH, pad_to=pad_to)

    # ---- sizes and special ids -------------------------------------------------------------------------------------

    @property
    def base_vocab_size(self) -> int:
        """Rows of the LLM's own embedding: the image tokens' ids start here."""
        return self._base_vocab_size

    @property
    def vocab_size(self) -> int:
        """Ids in use, image tokens included (the embedding needs at least this many rows)."""
        return max(len(self.base), max(self.image_token_ids.values()) + 1)

    def __len__(self) -> int:
        return self.vocab_size

    @property
    def eos_id(self) -> int:
        return self._eos

    @property
    def bos_id(self) -> int:
        """The base's BOS, or EOS when it has none (Qwen2, OLMo, the tiny BPE), as Molmo does."""
        return self._eos if self._bos is None else self._bos

    @property
    def pad_id(self) -> int:
        """The base's padding token, else EOS (padding is masked out, so any id works)."""
        return self._eos if self._pad is None else self._pad

    def token_to_id(self, token: str) -> int:
        """Id of one token (an image token or a base vocabulary entry); KeyError if it is not a single token."""
        if token in self.image_token_ids:
            return self.image_token_ids[token]
        if token in self.base.vocab:
            return self.base.vocab[token]
        raise KeyError(f"{token!r} is not a single token of this tokenizer")

    # ---- encode / decode -------------------------------------------------------------------------------------------

    def encode(self, text: str, add_bos: bool = False) -> list[int]:
        """Text -> ids. Image tokens written in the text become their single ids; add_bos puts bos_id first."""
        if not isinstance(text, str):
            raise TypeError(f"encode expects a str, got {type(text).__name__}")
        ids = [self.bos_id] if add_bos else []
        for piece in _IMAGE_TOKEN_RE.split(text):
            if piece in self.image_token_ids:
                ids.append(self.image_token_ids[piece])
            elif piece:
                ids.extend(self.base.encode(piece))
        return ids

    def decode(self, ids: Any, skip_special: bool = False) -> str:
        """Ids (a list, or a 1-D tensor / array) -> text. skip_special drops image tokens and the base's specials."""
        ids = ids.tolist() if hasattr(ids, "tolist") else list(ids)
        bad = [i for i in ids if not (0 <= i < self.vocab_size) or self._base_vocab_size > i >= len(self.base)]
        if bad:
            raise ValueError(f"ids {bad[:5]} are not tokens of this tokenizer (valid: 0-{len(self.base) - 1} and "
                             f"the image tokens {sorted(self._id_to_image_token)})")
        out, run = [], []
        for i in ids:
            if i in self._id_to_image_token:
                out.append(self.base.decode(run, skip_special) if run else "")
                out.append("" if skip_special else self._id_to_image_token[i])
                run = []
            else:
                run.append(i)
        out.append(self.base.decode(run, skip_special) if run else "")
        return "".join(out)

    def encode_batch(self, texts: list[str], pad_side: str = "right",
                     add_bos: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
        """Texts -> (ids LongTensor [B, T], attention_mask LongTensor [B, T]), T = the longest; pad with pad_id on
        pad_side ("right" for training, "left" for batched generation); the mask is 1 on real tokens, 0 on padding."""
        if pad_side not in ("right", "left"):
            raise ValueError(f"pad_side must be 'right' or 'left', got {pad_side!r}")
        rows = [self.encode(t, add_bos=add_bos) for t in texts]
        length = max((len(r) for r in rows), default=0)
        ids = torch.full((len(rows), length), self.pad_id, dtype=torch.long)
        mask = torch.zeros((len(rows), length), dtype=torch.long)
        for b, row in enumerate(rows):
            span = slice(length - len(row), length) if pad_side == "left" else slice(0, len(row))
            ids[b, span] = torch.tensor(row, dtype=torch.long)
            mask[b, span] = 1
        return ids, mask

    def save(self, directory: str | Path) -> Path:
        """Write the base tokenizer into ``directory`` (tokenizer.json, or a transformers tokenizer's files) so that
        ``MolmoTokenizer.from_file(directory, pad_to=...)`` loads it back."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        if self.base.is_hf:
            self.base.tok.save_pretrained(directory)
        else:
            self.base.tok.save(str(directory / "tokenizer.json"))
        return directory

    def __repr__(self) -> str:
        return (f"MolmoTokenizer(base={type(self.base.tok).__name__}, base_vocab_size={self.base_vocab_size}, "
                f"vocab_size={self.vocab_size}, eos_id={self.eos_id}, bos_id={self.bos_id}, pad_id={self.pad_id})")


def _load_base(path: str | Path) -> Any:
    """A tokenizer.json -> tokenizers.Tokenizer; a folder with tokenizer_config.json -> transformers' AutoTokenizer
    (local files only); a folder with only tokenizer.json -> tokenizers.Tokenizer."""
    path = Path(path)
    if path.is_dir() and (path / "tokenizer_config.json").exists():
        from transformers import AutoTokenizer

        return AutoTokenizer.from_pretrained(path, local_files_only=True)
    file = path / "tokenizer.json" if path.is_dir() else path
    if not file.is_file():
        raise FileNotFoundError(f"no tokenizer at {path} (expected a tokenizer.json or a folder holding one)")
    from tokenizers import Tokenizer

    return Tokenizer.from_file(str(file))


def train_bpe(lines: list[str], vocab_size: int = 512, special_tokens: tuple[str, ...] = TINY_SPECIAL_TOKENS) -> Any:
    """Train a byte-level BPE (GPT-2 / Qwen2 style, digits split one by one) on lines -> tokenizers.Tokenizer.

    The specials get the first ids (0, 1, ...), then the 256 byte symbols, then the merges. No normaliser, no
    prefix space: decode(encode(text)) == text for any text. Deterministic for the same lines (run single-threaded:
    set RAYON_NUM_THREADS=1 before importing tokenizers, as scripts/build_tiny_tokenizer.py does).
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Digits(individual_digits=True),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True),
    ])
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=list(special_tokens), min_frequency=2,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator(lines, trainer=trainer)
    return tok
