"""The memory task: lines `a+b=c`, and the exact-match accuracy of greedy completions after `=`."""
import numpy as np

from .engine import nd
from .errors import CharlmError

MAX_BASE = 10  # digits are 0-9
MEMORY = 2 * 10**9  # bytes the lines may take: they are all built in memory, then written at once


def write_number(n, base, msd_first, width=0):
    """n in base, zero-padded to width digits, least significant digit first unless msd_first."""
    digits = np.base_repr(int(n), base).zfill(width)
    return digits if msd_first else digits[::-1]


def make_lines(digits, count, seed, base=10, msd_first=False, pad=False, mixed=False):
    """count lines `a+b=c`, a and b uniform below base**digits (fixed width if pad), or of uniform length if mixed."""
    if not 2 <= base <= MAX_BASE:
        raise CharlmError(f"--base must be between 2 and {MAX_BASE}, got {base}")
    if digits < 1 or count < 1:
        raise CharlmError(f"--digits and --count must be at least 1, got {digits} and {count}")
    if seed < 0:
        raise CharlmError(f"--seed must not be negative, got {seed}")
    if digits > 62 or base ** digits > 2**62:  # too large in any base past 62: spares computing base ** a huge --digits
        raise CharlmError(f"--digits {digits} in base {base} is too large (at most {int(62 / np.log2(base))})")
    # measured: about 100 bytes per line (its string object, list slot and draws), then 3 per character
    limit = MEMORY // (100 + 3 * (3 * digits + 4))
    if count > limit:
        raise CharlmError(f"--count {count:,} is too many: the lines are built in memory, and with --digits {digits} "
                          f"at most {limit:,} fit in about {MEMORY / 1e9:.0f} GB")
    rng = np.random.default_rng(seed)
    if mixed:
        # uniform lengths (uniform values are almost all full length) put easy sums in every batch
        if base ** digits > 2**53:  # a float draw scaled to the range is unbiased only below that
            raise CharlmError(f"--mixed takes numbers below 2**53: --digits at most {int(53 / np.log2(base))} "
                              f"in base {base}")
        lengths = rng.integers(1, digits + 1, size=(2, count))
        low = np.where(lengths > 1, base ** (lengths - 1), 0)
        a, b = low + (rng.random((2, count)) * (base ** lengths - low)).astype(np.int64)
    else:
        a, b = rng.integers(0, base ** digits, size=(2, count), dtype=np.int64)
    # padded, digit i of a, b and c sits at one offset in every line; c has one digit more for the carry
    width = digits if pad else 0
    return [f"{write_number(x, base, msd_first, width)}+{write_number(y, base, msd_first, width)}="
            f"{write_number(x + y, base, msd_first, width + pad)}" for x, y in zip(a, b)]


def split_line(line):
    """A line `a+b=c` as (prompt `a+b=`, answer `c`)."""
    prompt, eq, answer = line.partition("=")
    if not eq or not answer:
        raise CharlmError(f"not an addition line (a+b=c): {line!r}")
    return prompt + eq, answer


def accuracy(model, vocab, line_start, lines, ctx, batch_size=256):
    """Exact-match accuracy of greedy completions after each line_start + `a+b=`, and that of each answer position."""
    if not lines:
        raise CharlmError("no addition lines to evaluate")
    pairs = [split_line(line) for line in lines]
    prompts = [np.concatenate([[line_start], vocab.encode(p)]) for p, _ in pairs]
    correct, longest_answer = 0, max(len(answer) for _, answer in pairs)
    right, seen = np.zeros(longest_answer), np.zeros(longest_answer)
    by_length = {}
    for i, p in enumerate(prompts):
        by_length.setdefault(len(p), []).append(i)
    for length, members in by_length.items():
        for start in range(0, len(members), batch_size):
            group = members[start:start + batch_size]
            longest = max(len(pairs[i][1]) for i in group) + 1  # the answer and its line end
            X = nd.array(np.stack([prompts[i] for i in group], axis=1), ctx=ctx)  # (T, N)
            logits, state = model(X, model.begin_state(len(group), ctx))
            out, _, _ = model.greedy(logits[-1:], state, longest)
            out = out.asnumpy().astype(int)  # (longest, N)
            for n, i in enumerate(group):
                ids, answer = list(out[:, n]), pairs[i][1]
                written = vocab.decode(ids[:ids.index(vocab.eos)] if vocab.eos in ids else ids)
                correct += vocab.eos in ids and written == answer  # an answer must end its line
                seen[:len(answer)] += 1
                right[:len(answer)] += [k < len(written) and written[k] == c for k, c in enumerate(answer)]
    return correct / len(lines), list(right / seen)
