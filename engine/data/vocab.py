"""Tokeniser, question vocabulary and the TF-IDF word-embedding initialisation of ban-vqa.

Light module: numpy only.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable, Sequence

import numpy as np

from .common import PAD, UNK

WORD_DIM = 300  # GloVe's size in ban-vqa; kept so a real GloVe table could be dropped in
_TOKEN = re.compile(r"'s|[a-z0-9]+")


def tokenize(text: str) -> list[str]:
    """Lower-case words and numbers; "man's" -> ["man", "'s"] (as ban-vqa's dictionary)."""
    return _TOKEN.findall(text.lower())


def build_vocab(texts: Iterable[str]) -> list[str]:
    """<pad>, <unk>, then words by descending frequency (ties alphabetical)."""
    counts = Counter(w for t in texts for w in tokenize(t))
    words = sorted(counts, key=lambda w: (-counts[w], w))
    return [PAD, UNK] + [w for w in words if w not in (PAD, UNK)]


def encode(texts: Sequence[str], vocab: Sequence[str], length: int) -> np.ndarray:
    """Texts -> int64 [len(texts), length] ids (0 = pad, 1 = unknown word), truncated."""
    index = {w: i for i, w in enumerate(vocab)}
    out = np.zeros((len(texts), length), np.int64)
    for row, text in enumerate(texts):
        ids = [index.get(w, 1) for w in tokenize(text)[:length]]
        out[row, : len(ids)] = ids
    return out


def base_vectors(vocab_size: int, seed: int = 0) -> np.ndarray:
    """What stands in for GloVe (no download): a seeded normal, std 0.3 like GloVe's spread."""
    rng = np.random.default_rng(seed)
    vectors = rng.normal(0.0, 0.3, (vocab_size, WORD_DIM)).astype(np.float32)
    vectors[0] = 0.0  # <pad>
    return vectors


def tfidf_init(tokens: np.ndarray, vocab_size: int, seed: int = 0) -> np.ndarray:
    """ban-vqa's `tfidf_from_questions` + `init_embedding`: each word's vector is the
    co-occurrence-weighted average of the base vectors of the words it appears with.

    tokens: int64 [texts, L] (0 = pad, 1 = unknown; both ignored). Every ordered pair (a, b) of
    tokens in one text adds 1/df(b) to T[a, b]; rows of T are normalised to sum 1 (a stochastic
    matrix); the init is T @ base. (ban-vqa divides `vals[col]` where it means `vals[idx]`;
    here each pair is weighted as intended.) Words that never co-occur keep their base vector.
    Returns float32 [V, 300].
    """
    base = base_vectors(vocab_size, seed)
    longest = int((tokens != 0).sum(1).max(initial=0))  # texts are left-aligned, pad at the end
    tokens = np.where(tokens > 1, tokens, 0)[:, : max(longest, 1)]  # ignore pad and <unk>
    df = np.bincount(tokens.ravel(), minlength=vocab_size).astype(np.float64)
    i, j = np.triu_indices(tokens.shape[1], k=1)
    keys, counts = [], []
    for s in range(0, len(tokens), 8192):  # bounded memory: 8192 texts x L(L-1)/2 pairs
        a, b = tokens[s : s + 8192, i].ravel(), tokens[s : s + 8192, j].ravel()
        ok = (a > 0) & (b > 0)
        a, b = a[ok], b[ok]
        k, n = np.unique(
            np.concatenate([a * vocab_size + b, b * vocab_size + a]), return_counts=True
        )
        keys.append(k)
        counts.append(n)
    if not keys or not sum(len(k) for k in keys):
        return base
    key, inverse = np.unique(np.concatenate(keys), return_inverse=True)
    count = np.bincount(inverse, weights=np.concatenate(counts))
    r, c = key // vocab_size, key % vocab_size  # sorted by row
    vals = count / df[c]
    vals /= np.bincount(r, weights=vals, minlength=vocab_size)[r]
    out = base.copy()
    out[np.unique(r)] = 0.0
    # out[r] += vals * base[c], in chunks; r is sorted, so reduceat sums each row's run
    for s in range(0, len(r), 1 << 16):
        rr, cc, vv = r[s : s + (1 << 16)], c[s : s + (1 << 16)], vals[s : s + (1 << 16), None]
        starts = np.flatnonzero(np.r_[True, rr[1:] != rr[:-1]])
        out[rr[starts]] += np.add.reduceat(vv * base[cc], starts, axis=0).astype(np.float32)
    return out
