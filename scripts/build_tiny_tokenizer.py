"""Build the course's tiny BPE tokenizer: data_samples/tokenizer/tiny_bpe.json, bit for bit.

    python scripts/build_tiny_tokenizer.py                 # rewrites the shipped file
    python scripts/build_tiny_tokenizer.py --out /tmp/x.json

A byte-level BPE of 512 tokens (<|endoftext|>, <pad>, 256 bytes, 254 merges), digits split one by one, trained on
molmo_lite.data.corpus.course_corpus(n=CORPUS_LINES, seed=0). Runs single-threaded so the output never depends on
thread scheduling; tests/test_tokenizer.py rebuilds it and compares bytes.
"""

from __future__ import annotations

import os

# Before tokenizers is imported: one thread, so training and serialisation are deterministic.
os.environ["RAYON_NUM_THREADS"] = "1"
os.environ["TOKENIZERS_PARALLELISM"] = "false"

import argparse  # noqa: E402
from pathlib import Path  # noqa: E402

from molmo_lite.data.corpus import course_corpus  # noqa: E402
from molmo_lite.tokenizer import TINY_BPE_PATH, train_bpe  # noqa: E402

VOCAB_SIZE = 512
CORPUS_LINES = 10000
SEED = 0


def build(out: Path, n: int = CORPUS_LINES, vocab_size: int = VOCAB_SIZE, seed: int = SEED) -> Path:
    """Train on course_corpus(n, seed) and write the tokenizer JSON to out; returns out."""
    tok = train_bpe(course_corpus(n=n, seed=seed), vocab_size=vocab_size)
    if tok.get_vocab_size() != vocab_size:
        raise RuntimeError(f"the corpus gave only {tok.get_vocab_size()} tokens, not {vocab_size}: enlarge it")
    out.parent.mkdir(parents=True, exist_ok=True)
    tok.save(str(out), pretty=True)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=TINY_BPE_PATH, help="where to write (default: the shipped file)")
    parser.add_argument("--lines", type=int, default=CORPUS_LINES, help="corpus lines to train on")
    args = parser.parse_args()
    print(f"wrote {build(args.out, n=args.lines)}")


if __name__ == "__main__":
    main()
