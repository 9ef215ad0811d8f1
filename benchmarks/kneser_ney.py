"""Interpolated modified Kneser-Ney character n-gram baseline, in numpy.

The model is the one of Chen & Goodman (1998), "An empirical study of smoothing techniques for
language modeling", section 3 (interpolated, modified KN). For an order-N model, with h the
last k-1 tokens and h' the last k-2:

    p_k(w | h) = (max(c_k(hw) - D_k(c_k(hw)), 0) + gamma_k(h) p_{k-1}(w | h')) / c_k(h.)
    gamma_k(h) = D_k1 N1(h.) + D_k2 N2(h.) + D_k3+ N3+(h.)
    p_0(w)     = 1 / V                      (uniform over the whole vocabulary)

where c_k(h.) = sum_w c_k(hw) and Nj(h.) counts the words w with c_k(hw) = j (3 or more for
N3+). When c_k(h.) = 0 the context is unseen and p_k = p_{k-1}. For the top order c_N is the raw
count of the n-gram in the training text; for lower orders it is the continuation count
N1+(.hw), the number of distinct tokens seen before hw. Each order and count type has its own
three discounts, from that order's count-of-counts n1..n4:

    Y = n1 / (n1 + 2 n2),  D1 = 1 - 2Y n2/n1,  D2 = 2 - 3Y n3/n2,  D3+ = 3 - 4Y n4/n3

Tokens are the project's own: `ai_writer.training.corpus.load_corpus` (min_char_count=5) gives the
vocabulary, the training ids (corpus.train) and the held-out ids (corpus.val) exactly as
`ai-writer eval` sees them, '\\n' and the unknown-character id included.

Counting. The training and held-out ids are joined into one stream (train then val) and every
k-gram in it gets an exact integer id, order by order: the id of the k-gram starting at i is
the rank, among all distinct values, of id_{k-1}[i] * V + token[i+k-1]. Ranks are below the
stream length (4.3M) and V = 4836, so the key fits in an int64 at every order: no hashing and
no collisions, at any order. Counts are bincounts of the ids over positions whose k-gram lies
wholly inside the training text, so held-out text never leaks into the counts. The sorted
unique keys of each order double as a lookup table (np.searchsorted) for any (context, token).

Evaluation. Every held-out token is predicted from the tokens before it in that stream, so
the first held-out token's context is the end of the training text (which ends in '\\n'), and
at the boundary between two files' held-out parts the context runs across it. (`ai-writer eval`
starts each file from a lone '\\n'; this touches a few tokens out of 173,063.) The probability
of all held-out tokens is computed order by order, vectorised across all positions.
bits/char = mean over held-out tokens of -log2 p.

    python benchmarks/kneser_ney.py --orders 3-10          # the table in BASELINES.md
    python benchmarks/kneser_ney.py --orders 3-10 --check  # also check that sum_w p(w|h) = 1
"""

from __future__ import annotations

import argparse
import glob
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from ai_writer.training.corpus import load_corpus  # noqa: E402

DEFAULT_FILES = str(ROOT.parent / "shared" / "corpus" / "zh-hans" / "*.txt")


@dataclass
class Level:
    """One order of the model, with one kind of count (raw or continuation)."""

    keys: np.ndarray  # sorted distinct keys context_id * V + token of this order's n-grams
    count: np.ndarray  # count of each key (0 for n-grams seen only in the held-out text)
    denom: np.ndarray  # c(h.) per context id
    gamma: np.ndarray  # D1 N1(h.) + D2 N2(h.) + D3+ N3+(h.) per context id
    discount: np.ndarray  # [0, D1, D2, D3+], indexed by min(count, 3)


def gram_ids(stream: np.ndarray, vocab_size: int, max_order: int):
    """ids[k][i]: exact id of the k-gram stream[i:i+k]; keys[k]: sorted distinct keys (id = rank)."""
    ids = [np.zeros(len(stream) + 1, np.int64), stream.astype(np.int64)]
    keys = [np.zeros(1, np.int64), np.arange(vocab_size, dtype=np.int64)]  # order 1: key = token
    for k in range(2, max_order + 1):
        key = ids[k - 1][:-1] * vocab_size + stream[k - 1:]
        distinct, inverse = np.unique(key, return_inverse=True)
        keys.append(distinct)
        ids.append(inverse.astype(np.int64).reshape(-1))
    return ids, keys


def discounts(count: np.ndarray) -> np.ndarray:
    """[0, D1, D2, D3+] from the count-of-counts n1..n4 (Chen & Goodman, eq. 26)."""
    n1, n2, n3, n4 = (np.count_nonzero(count == j) for j in (1, 2, 3, 4))
    if min(n1, n2, n3, n4) == 0:  # too little data for the estimate: plain absolute discounting
        return np.array([0.0, 0.5, 0.5, 0.5])
    y = n1 / (n1 + 2 * n2)
    return np.array([0.0, 1 - 2 * y * n2 / n1, 2 - 3 * y * n3 / n2, 3 - 4 * y * n4 / n3])


def make_level(keys: np.ndarray, count: np.ndarray, n_contexts: int, vocab_size: int) -> Level:
    context = keys // vocab_size
    d = discounts(count)
    denom = np.bincount(context, weights=count, minlength=n_contexts)
    gamma = sum(d[j] * np.bincount(context, weights=mask, minlength=n_contexts)
                for j, mask in ((1, count == 1), (2, count == 2), (3, count >= 3)))
    return Level(keys, count.astype(np.int32), denom, gamma, d)


def build(train: np.ndarray, val: np.ndarray, vocab_size: int, max_order: int):
    """raw[k], cont[k] (k = 1..max_order), the id arrays, and the stream offset of the held-out text."""
    stream = np.concatenate([train, val]).astype(np.int64)
    n_train = len(train)
    ids, keys = gram_ids(stream, vocab_size, max_order)
    raw, cont = [None], [None]
    for k in range(1, max_order + 1):
        n_contexts = len(keys[k - 1])
        count = np.bincount(ids[k][: n_train - k + 1], minlength=len(keys[k]))  # k-grams inside train
        raw.append(make_level(keys[k], count, n_contexts, vocab_size))
        if k < max_order:  # continuation count N1+(.w): distinct (k+1)-grams of train ending in w
            first = np.unique(ids[k + 1][: n_train - k], return_index=True)[1]
            cont.append(make_level(keys[k], np.bincount(ids[k][first + 1], minlength=len(keys[k])),
                                   n_contexts, vocab_size))
    return raw, cont, ids, n_train


def probability(levels: list[Level], contexts: list[np.ndarray], tokens: np.ndarray, vocab_size: int) -> np.ndarray:
    """p(token | context) for many queries at once; contexts[k] = id of the (k-1)-token context."""
    p = np.full(len(tokens), 1.0 / vocab_size)
    for k, level in enumerate(levels, start=1):
        h = contexts[k]
        key = h * vocab_size + tokens
        pos = np.minimum(np.searchsorted(level.keys, key), len(level.keys) - 1)
        c = np.where(level.keys[pos] == key, level.count[pos], 0)
        denom = level.denom[h]
        seen = denom > 0
        mass = np.maximum(c - level.discount[np.minimum(c, 3)], 0) + level.gamma[h] * p
        p = np.where(seen, mass / np.where(seen, denom, 1.0), p)
    return p


def model_levels(raw, cont, order: int) -> list[Level]:
    return [cont[k] for k in range(1, order)] + [raw[order]]


def contexts_at(ids, positions: np.ndarray, order: int) -> list[np.ndarray]:
    """Context ids, per order, for predicting the tokens at `positions` of the stream."""
    return [None] + [ids[k - 1][positions - k + 1] if k > 1 else np.zeros(len(positions), np.int64)
                     for k in range(1, order + 1)]


def check(raw, cont, ids, stream_positions, targets, order, vocab_size, expected, rng, n=5) -> float:
    """Largest |sum_w p(w | h) - 1| over n random held-out contexts; also checks p(target) matches."""
    worst = 0.0
    for j in rng.choice(len(stream_positions), size=n, replace=False):
        pos = np.full(vocab_size, stream_positions[j])
        p = probability(model_levels(raw, cont, order), contexts_at(ids, pos, order),
                        np.arange(vocab_size, dtype=np.int64), vocab_size)
        worst = max(worst, abs(p.sum() - 1.0))
        assert abs(p[targets[j]] - expected[j]) < 1e-12, "full distribution disagrees with the evaluation"
    return worst


def parse_orders(text: str) -> list[int]:
    if "-" in text:
        lo, hi = map(int, text.split("-"))
        return list(range(lo, hi + 1))
    return [int(x) for x in text.split(",")]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("files", nargs="*", help=f"corpus files (default {DEFAULT_FILES})")
    parser.add_argument("--orders", default="3-10", help="e.g. 3-10 or 4,6,8")
    parser.add_argument("--check", action="store_true", help="check normalisation on random held-out contexts")
    args = parser.parse_args()
    files = args.files or sorted(glob.glob(DEFAULT_FILES))
    orders = parse_orders(args.orders)

    t0 = time.perf_counter()
    corpus = load_corpus(files, min_char_count=5)
    vocab = corpus.tokenizer.vocab_size
    raw, cont, ids, n_train = build(corpus.train, corpus.val, vocab, max(orders))
    t_build = time.perf_counter() - t0
    print(f"{len(files)} files, vocabulary {vocab}, train {len(corpus.train):,} tokens, held-out "
          f"{len(corpus.val):,} tokens ({np.count_nonzero(corpus.val == corpus.tokenizer.unknown_id)} unknown); "
          f"counted orders 1-{max(orders)} in {t_build:.1f} s", flush=True)

    positions = n_train + np.arange(len(corpus.val))
    targets = corpus.val.astype(np.int64)
    rng = np.random.default_rng(0)
    results = []
    for order in orders:
        t1 = time.perf_counter()
        p = probability(model_levels(raw, cont, order), contexts_at(ids, positions, order), targets, vocab)
        bpc = float(-np.log2(p).mean())
        seconds = time.perf_counter() - t1
        d = raw[order].discount
        line = f"order {order:2d}: {bpc:.5f} bits/char  (top discounts {d[1]:.3f} {d[2]:.3f} {d[3]:.3f}; {seconds:.1f} s)"
        if args.check:
            worst = check(raw, cont, ids, positions, targets, order, vocab, p, rng)
            assert worst < 1e-6, f"order {order}: probabilities sum to 1 +- {worst}"
            line += f"  check: max |sum p - 1| = {worst:.1e}"
        print(line, flush=True)
        results.append((order, bpc))
    best = min(results, key=lambda r: r[1])
    print(f"best: order {best[0]}, {best[1]:.5f} bits/char; wall time {time.perf_counter() - t0:.1f} s")
    print("\n| order | bits/char |\n|---|---|")
    for order, bpc in results:
        mark = f"**{bpc:.5f}** (best)" if order == best[0] else f"{bpc:.5f}"
        print(f"| {order} | {mark} |")


if __name__ == "__main__":
    main()
