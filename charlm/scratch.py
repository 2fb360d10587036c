"""The tutorial's cells (RNN, LSTM, GRU) as written-out step equations, and the ScratchLM on them."""
from .engine import gluon, mx
from .generate import Blocks, Generation, greedy_steps

GATES = {"scratch-rnn": 1, "scratch-lstm": 4, "scratch-gru": 3}
SCRATCH_PARAMS = ["W_xh", "W_hh", "b_h", "W_hq", "b_q"]
MAX_UNROLL = 64  # longer sequences run as pieces of this many steps, the state carried from piece to piece


def _tanh(F, x):
    return F.Activation(x, act_type="tanh")  # oneDNN's vectorised kernel: F.tanh is far slower on CPU


def _sigmoid(F, x):
    return F.Activation(x, act_type="sigmoid")


def _gates(F, z, n, H):
    """z (N, n*H) cut into its n gates: slice_axis is faster than split, backward included."""
    return [F.slice_axis(z, axis=-1, begin=k * H, end=(k + 1) * H) for k in range(n)]


def _rnn_step(F, x, state, hh, H):
    h = _tanh(F, x + hh(state[0]))  # H = tanh(X·Wxh + bh + H·Whh)
    return h, [h]


def _lstm_step(F, x, state, hh, H):
    h, c = state
    z = x + hh(h)
    # One sigmoid over all four gates (MXNet's fused order i, f, g, o), then g's slice of z: fewer, larger ops.
    i, f, _, o = _gates(F, _sigmoid(F, z), 4, H)
    g = _tanh(F, F.slice_axis(z, axis=-1, begin=2 * H, end=3 * H))
    c = f * c + i * g  # forget gate keeps, input gate writes the candidate
    h = o * _tanh(F, c)
    return h, [h, c]


def _gru_step(F, x, state, hh, H):
    h = state[0]
    hx = hh(h)  # its n columns hold bhn: the reset gate scales H·Whn + bhn, as the fused GRU does
    # r and z from one sum and one sigmoid over their 2H columns: fewer ops per step.
    r, z = _gates(F, _sigmoid(F, F.slice_axis(x + hx, axis=-1, begin=0, end=2 * H)), 2, H)
    xn, hn = (F.slice_axis(a, axis=-1, begin=2 * H, end=3 * H) for a in (x, hx))
    n = _tanh(F, xn + r * hn)
    h = (1 - z) * n + z * h
    return h, [h]


STEPS = {"scratch-rnn": _rnn_step, "scratch-lstm": _lstm_step, "scratch-gru": _gru_step}


def state_kinds(cell):
    """How many state arrays a cell carries: the hidden state, and an LSTM's cell state too."""
    return 2 if cell.endswith("lstm") else 1


class ScratchLM(Generation, gluon.Block):
    """The tutorial's model: one-hot input, the cell's equations written out, a linear output layer."""
    # A hybridized graph per sequence length, the time loop unrolled: faster than MXNet's foreach.

    def __init__(self, cell, vocab_size, hidden_size, **kwargs):
        super().__init__(**kwargs)
        self.cell, self.vocab_size, self.hidden_size = cell, vocab_size, hidden_size
        width = GATES[cell] * hidden_size
        normal = mx.init.Normal(0.01)  # the tutorial's N(0, 1) * 0.01
        with self.name_scope():
            self.W_xh = self.params.get("W_xh", shape=(vocab_size, width), init=normal)
            self.W_hh = self.params.get("W_hh", shape=(hidden_size, width), init=normal)
            self.b_h = self.params.get("b_h", shape=(width,), init="zeros")
            if cell == "scratch-gru":
                self.b_hn = self.params.get("b_hn", shape=(hidden_size,), init="zeros")
            self.W_hq = self.params.get("W_hq", shape=(hidden_size, vocab_size), init=normal)
            self.b_q = self.params.get("b_q", shape=(vocab_size,), init="zeros")
        self.unrolled = Blocks(lambda steps: Unrolled(self, steps), active=False)  # a graph per length
        self.generation = Blocks(lambda greedy: Unrolled(self, greedy or 1, greedy > 0),
                                 static_alloc=True, static_shape=True)

    state_batch_axis = 0

    def begin_state(self, batch_size, ctx):
        """Zero hidden state (and cell state for the LSTM), each (N, H)."""
        return [mx.nd.zeros((batch_size, self.hidden_size), ctx=ctx) for _ in range(state_kinds(self.cell))]

    def hybridize(self, active=True, **kwargs):
        """Hybridize (or not) the per-length graphs, as HybridBlock.hybridize does a block."""
        self.unrolled.hybridize(active, **kwargs)

    def forward(self, X, state):
        pieces = []
        for start in range(0, X.shape[0], MAX_UNROLL):
            piece = X[start:start + MAX_UNROLL]
            logits, state = self.unrolled[piece.shape[0]](piece, state)
            pieces.append(logits)
        return (pieces[0] if len(pieces) == 1 else mx.nd.concat(*pieces, dim=0)), state


class Unrolled(gluon.HybridBlock):
    """A ScratchLM unrolled over `steps` given ids (T = steps, N), or greedy: `steps` steps after logits (1, N, V)."""

    def __init__(self, lm, steps, greedy=False):
        super().__init__(prefix=lm.prefix, params=lm.params)
        self.cell, self.vocab_size, self.hidden_size, self.steps = lm.cell, lm.vocab_size, lm.hidden_size, steps
        self.greedy = greedy
        for name in SCRATCH_PARAMS + (["b_hn"] if lm.cell == "scratch-gru" else []):
            setattr(self, name, self.params.get(name))  # the ScratchLM's own Parameter, found by its name

    def hybrid_forward(self, F, X, state, W_xh, W_hh, b_h, W_hq, b_q, b_hn=None):
        # one_hot(X)·Wxh + bh as a take of rows, per step: no V-wide GEMM, no (T, N, G*H) copy to split.
        table = F.broadcast_add(W_xh, b_h)  # (V, G*H)
        # FullyConnected (oneDNN) beats dot (OpenBLAS) here; it wants (out, in), transposed once per call.
        W_hh_t, W_hq_t, H = F.transpose(W_hh), F.transpose(W_hq), self.hidden_size
        width = GATES[self.cell] * H
        # the GRU's bhn, added to the n columns of H·Whh
        b_hh = None if b_hn is None else F.concat(F.zeros_like(F.slice_axis(b_h, axis=0, begin=0, end=2 * H)),
                                                  b_hn, dim=0)

        def hh(h):
            return F.FullyConnected(h, W_hh_t, b_hh, no_bias=b_hh is None, num_hidden=width)  # H·Whh

        def cell(ids, state):  # ids (N,): h (N, H) and the new state
            return STEPS[self.cell](F, F.take(table, ids), state, hh, H)

        if self.greedy:
            def advance(ids, state):
                h, state = cell(ids, state)
                return F.FullyConnected(h, W_hq_t, b_q, num_hidden=self.vocab_size), state
            return greedy_steps(F, X, list(state), advance, self.steps)
        ids = (F.split(X, num_outputs=self.steps, axis=0, squeeze_axis=True) if self.steps > 1
               else [F.squeeze(X, axis=0)])  # each (N,)
        state, hs = list(state), []
        for ids_t in ids:
            h, state = cell(ids_t, state)
            hs.append(h)
        out = F.stack(*hs, axis=0)  # (T, N, H)
        return F.FullyConnected(out, W_hq_t, b_q, num_hidden=self.vocab_size, flatten=False), state
