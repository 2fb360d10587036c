"""Character language models behind one interface:
`begin_state(batch_size, ctx)` and `model(X, state) -> (logits (T, N, V), state)`."""
import weakref

from .engine import gluon, mx

GATES = {"scratch-rnn": 1, "scratch-lstm": 4, "scratch-gru": 3}
_STEPPERS = weakref.WeakKeyDictionary()  # RNNLM -> its one-step generation block
LAYERS = {"rnn": gluon.rnn.RNN, "lstm": gluon.rnn.LSTM, "gru": gluon.rnn.GRU}


def _rnn_step(F, x, state, W_hh, b_hn):
    h = F.tanh(x + F.dot(state[0], W_hh))  # H = tanh(X·Wxh + bh + H·Whh)
    return h, [h]


def _lstm_step(F, x, state, W_hh, b_hn):
    h, c = state
    i, f, g, o = F.split(x + F.dot(h, W_hh), num_outputs=4, axis=-1)  # MXNet's fused gate order
    c = F.sigmoid(f) * c + F.sigmoid(i) * F.tanh(g)  # forget gate keeps, input gate writes the candidate
    h = F.sigmoid(o) * F.tanh(c)
    return h, [h, c]


def _gru_step(F, x, state, W_hh, b_hn):
    h = state[0]
    xr, xz, xn = F.split(x, num_outputs=3, axis=-1)
    hr, hz, hn = F.split(F.dot(h, W_hh), num_outputs=3, axis=-1)
    r, z = F.sigmoid(xr + hr), F.sigmoid(xz + hz)  # reset and update gates
    # The reset gate scales H·Whn after the product (cuDNN's and MXNet's fused GRU), hence its own bias.
    n = F.tanh(xn + r * F.broadcast_add(hn, b_hn))
    h = (1 - z) * n + z * h
    return h, [h]


STEPS = {"scratch-rnn": _rnn_step, "scratch-lstm": _lstm_step, "scratch-gru": _gru_step}


class ScratchLM(gluon.HybridBlock):
    """The tutorial's model: one-hot input, the cell's equations written out, a linear output layer."""

    def __init__(self, cell, vocab_size, hidden_size, **kwargs):
        super().__init__(**kwargs)
        self.cell, self.hidden_size = cell, hidden_size
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

    state_batch_axis = 0

    def begin_state(self, batch_size, ctx):
        """Zero hidden state (and cell state for the LSTM), each (N, H)."""
        n = 2 if self.cell == "scratch-lstm" else 1
        return [mx.nd.zeros((batch_size, self.hidden_size), ctx=ctx) for _ in range(n)]

    def stepper(self):
        """The block that runs one time step for generation: the model itself."""
        return self

    def hybrid_forward(self, F, X, state, W_xh, W_hh, b_h, W_hq, b_q, b_hn=None):
        # one_hot(X)·Wxh selects rows of Wxh: take() is the same product and gradient without a V-wide GEMM.
        x = F.broadcast_add(F.take(W_xh, X), b_h)  # (T, N, G*H)
        step = STEPS[self.cell]
        H, state = F.contrib.foreach(lambda x_t, s: step(F, x_t, s, W_hh, b_hn), x, list(state))
        return F.broadcast_add(F.dot(H, W_hq), b_q), state  # logits: (T, N, V)


class RNNLM(gluon.HybridBlock):
    """Embedding (or one-hot) -> Gluon's fused RNN/LSTM/GRU layers -> Dense, with dropout."""

    def __init__(self, cell, vocab_size, embed_size, hidden_size, num_layers, dropout, tie_weights=False, **kwargs):
        super().__init__(**kwargs)
        self.vocab_size = vocab_size
        extra = {"activation": "tanh"} if cell == "rnn" else {}  # Gluon's RNN defaults to relu
        with self.name_scope():
            self.embedding = gluon.nn.Embedding(vocab_size, embed_size) if embed_size else None
            self.drop = gluon.nn.Dropout(dropout)
            self.rnn = LAYERS[cell](hidden_size, num_layers, dropout=dropout, input_size=embed_size or vocab_size,
                                    **extra)
            # Tied: the output layer takes its weight from the embedding, found by the embedding's name.
            tied = {"prefix": self.embedding.prefix, "params": self.embedding.params} if tie_weights else {}
            self.decoder = gluon.nn.Dense(vocab_size, flatten=False, in_units=hidden_size, **tied)

    state_batch_axis = 1

    def begin_state(self, batch_size, ctx):
        """Zero states of the rnn layer, each (layers, N, H)."""
        return self.rnn.begin_state(batch_size=batch_size, ctx=ctx)

    def stepper(self):
        """The block that runs one time step for generation: same weights, same states, T = 1 only."""
        if self not in _STEPPERS:  # kept outside the Block: a child Block would be saved with the parameters
            _STEPPERS[self] = _Step(self)
            _STEPPERS[self].hybridize(static_alloc=True, static_shape=True)
        return _STEPPERS[self]

    def hybrid_forward(self, F, X, state):
        x = self.embedding(X) if self.embedding else F.one_hot(X, self.vocab_size)  # (T, N, E)
        out, state = self.rnn(self.drop(x), state)  # (T, N, H)
        return self.decoder(self.drop(out)), state  # logits: (T, N, V)


class _Step(gluon.HybridBlock):
    """One time step of an RNNLM through unfused cells that share its weights.

    The fused layer concatenates all its weights on every call, which costs 10x the step itself at
    T = 1 (2.3 ms vs 0.27 ms for 2 x 256 measured here); generation calls it once per character."""

    def __init__(self, lm, **kwargs):
        super().__init__(prefix=lm.prefix + "step_", **kwargs)
        self.vocab_size, self.num_layers = lm.vocab_size, lm.rnn._num_layers
        self.embedding, self.decoder = lm.embedding, lm.decoder
        self.cells = lm.rnn._unfuse()  # MXNet's own unfused stack with the fused layer's parameters

    def hybrid_forward(self, F, X, state):
        x = X.reshape((-1,))  # (1, N) -> (N,)
        x = self.embedding(x) if self.embedding else F.one_hot(x, self.vocab_size)  # (N, E)
        per_kind = [F.split(s, num_outputs=self.num_layers, axis=0, squeeze_axis=True) for s in state]
        if self.num_layers == 1:
            per_kind = [[p] for p in per_kind]
        cell_states = [kind[layer] for layer in range(self.num_layers) for kind in per_kind]  # (N, H) each
        out, cell_states = self.cells(x, cell_states)
        kinds = len(state)
        state = [F.stack(*cell_states[k::kinds], axis=0) for k in range(kinds)]  # back to (layers, N, H)
        return self.decoder(out).expand_dims(axis=0), state  # logits: (1, N, V)


class TokenNLL(gluon.HybridBlock):
    """Negative log-likelihood of each target token, in nats: (T, N, V), (T, N) -> (T, N); when masked,
    targets below 0 are padding and cost 0 (so they add nothing to the gradient either)."""

    def __init__(self, masked=False, **kwargs):
        super().__init__(**kwargs)
        self.masked = masked

    def hybrid_forward(self, F, logits, Y):
        nll = -F.pick(F.log_softmax(logits, axis=-1), Y, axis=-1)
        return nll * (Y >= 0) if self.masked else nll


def build(model_cfg, vocab_size, ctx):
    """A hybridized, initialised model for a ModelConfig."""
    if model_cfg.cell in GATES:
        model = ScratchLM(model_cfg.cell, vocab_size, model_cfg.hidden_size)
    else:
        model = RNNLM(model_cfg.cell, vocab_size, model_cfg.embed_size, model_cfg.hidden_size,
                      model_cfg.num_layers, model_cfg.dropout, model_cfg.tie_weights)
    model.initialize(mx.init.Xavier(), ctx=ctx)
    model.hybridize(static_alloc=True, static_shape=True)
    return model
