"""Lines mode: every line its own sequence (line start, tokens, line end), grouped by length into
buckets and padded; padded targets are -1, which the loss masks out."""
import numpy as np

from .errors import CharlmError

PAD = -1
LONGEST = 1024  # the largest padded length: a longer line is split, as a stream would be, not padded to its length


def split(ids, val_frac, eos):
    """Split ids into training lines and a tail of whole lines holding about val_frac of the tokens."""
    if not val_frac:
        return ids, ids[:0]
    cut = len(ids) - int(len(ids) * val_frac)
    ends = np.flatnonzero(ids[:cut] == eos)
    cut = int(ends[-1]) + 1 if len(ends) else 0  # back to the end of the line the cut falls in
    return ids[:cut], ids[cut:]


def auto_buckets(lengths):
    """Padded lengths, multiples of 8: quartiles, 90th and 99th percentiles, and the longest up to 4x the 99th;
    none past LONGEST."""
    top = np.percentile(lengths, 99)
    cuts = list(np.percentile(lengths, [25, 50, 75, 90, 99])) + [min(lengths.max(), 4 * top)]
    return sorted({min(int(-(-c // 8) * 8), LONGEST) for c in cuts})


class LineBatches:
    """(X, Y) batches of batch_size line sequences, (bucket, N), one bucket each; shuffled when given rng."""

    carries_state, padded = False, True

    def __init__(self, ids, bos, eos, batch_size, buckets=(), rng=None):
        if not len(ids):
            raise CharlmError("no lines to train on")
        tgt = ids if ids[-1] == eos else np.append(ids, np.array([eos], dtype=ids.dtype))
        src = np.empty_like(tgt)
        src[0], src[1:] = bos, tgt[:-1]
        src[src == eos] = bos  # every line opens with the line-start token
        self.src, self.tgt = src, tgt
        ends = np.flatnonzero(tgt == eos)
        starts = np.concatenate([[0], ends[:-1] + 1])
        lengths = ends - starts + 1  # (input, target) pairs of each line, its line end included
        # A padded length past the longest line pads with nothing but padding: the longest line is enough.
        self.buckets = sorted({min(b, int(lengths.max())) for b in buckets}) or auto_buckets(lengths)
        longest = self.buckets[-1]
        pieces = -(-lengths // longest)
        self.num_split = int((pieces > 1).sum())
        line = np.repeat(np.arange(len(lengths)), pieces)
        part = np.arange(len(line)) - np.repeat(np.cumsum(pieces) - pieces, pieces)
        self.starts = starts[line] + part * longest
        self.lengths = np.minimum(longest, lengths[line] - part * longest)
        which = np.searchsorted(self.buckets, self.lengths)
        self.batches = []
        for b in range(len(self.buckets)):
            members = np.flatnonzero(which == b)
            if rng is not None:
                members = rng.permutation(members)
            self.batches += [(self.buckets[b], members[i:i + batch_size]) for i in range(0, len(members), batch_size)]
        if rng is not None:
            self.batches = [self.batches[i] for i in rng.permutation(len(self.batches))]
        self.batch_size = batch_size

    def __len__(self):
        return len(self.batches)

    def __getitem__(self, i):
        """Batch i as (X, Y), each (bucket length, N), padded with 0 in X and PAD in Y to N columns."""
        length, members = self.batches[i]
        X = np.zeros((length, self.batch_size), dtype=np.int64)
        Y = np.full((length, self.batch_size), PAD, dtype=np.int64)
        for n, seq in enumerate(members):
            start, size = self.starts[seq], self.lengths[seq]
            X[:size, n] = self.src[start:start + size]
            Y[:size, n] = self.tgt[start:start + size]
        return X, Y
