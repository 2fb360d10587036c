"""The fused Gluon model (RNNLM), its loss and training objective, and `build` for every cell; all models share
one interface: `begin_state(batch_size, ctx)`, `model(X, state) -> (logits (T, N, V), state)`, `step`, `greedy`."""
import functools

import numpy as np

from . import scratch
from .engine import gluon, mx
from .errors import CharlmError
from .generate import Blocks, Generation, greedy_steps
from .scratch import GATES, STEPS, ScratchLM, state_kinds

MAX_ARRAY = 2**31 - 1  # elements of one array in MXNet's release builds (int32 indexing)
MODES = {"rnn": "rnn_tanh", "lstm": "lstm", "gru": "gru"}  # MXNet's RNN operator's names for the cells


class _Xavier(mx.init.Initializer):
    """Initialise a flat fused-layer vector as Gluon's layers do theirs: Xavier matrices and zero biases."""

    def __init__(self, pieces):
        super().__init__()
        self.pieces = pieces

    def _init_weight(self, name, arr):
        offset = 0
        for piece, shape in self.pieces:
            size = int(np.prod(shape))
            if piece.endswith("weight"):
                matrix = mx.nd.zeros(shape, ctx=arr.context)
                mx.init.Xavier()._init_weight(piece, matrix)
                arr[offset:offset + size] = matrix.reshape((-1,))
            else:
                arr[offset:offset + size] = 0
            offset += size


class FusedLayer(gluon.HybridBlock):
    """MXNet's fused RNN/LSTM/GRU operator on one flat weight vector (Gluon's layers concatenate theirs per call)."""

    def __init__(self, cell, hidden_size, num_layers, dropout, input_size, weight_drop=0.0, **kwargs):
        super().__init__(**kwargs)
        self.cell, self.hidden_size, self.num_layers, self.dropout = cell, hidden_size, num_layers, dropout
        self.weight_drop = weight_drop  # applied around each training step by WeightDrop, not in the graph
        width = GATES["scratch-" + cell] * hidden_size
        # The operator's layout: every layer's i2h and h2h matrices, then every layer's i2h and h2h biases.
        self.pieces = [(f"l{layer}_{kind}_weight", (width, input_size if layer == 0 and kind == "i2h" else hidden_size))
                       for layer in range(num_layers) for kind in ("i2h", "h2h")]
        self.pieces += [(f"l{layer}_{kind}_bias", (width,)) for layer in range(num_layers) for kind in ("i2h", "h2h")]
        size = sum(int(np.prod(shape)) for _, shape in self.pieces)
        with self.name_scope():
            self.parameters = self.params.get("parameters", shape=(size,), init=_Xavier(self.pieces))

    def begin_state(self, batch_size, ctx):
        """Zero states, each (layers, N, H): the hidden state, and the cell state for the LSTM."""
        return [mx.nd.zeros((self.num_layers, batch_size, self.hidden_size), ctx=ctx)
                for _ in range(state_kinds(self.cell))]

    def spans(self):
        """(name, shape, begin, end) of each piece of the flat vector, in order."""
        offset = 0
        for name, shape in self.pieces:
            size = int(np.prod(shape))
            yield name, shape, offset, offset + size
            offset += size

    def _slices(self, F, parameters):
        """(name, shape, flat slice) of each piece of the flat vector, in order."""
        for name, shape, begin, end in self.spans():
            yield name, shape, F.slice_axis(parameters, axis=0, begin=begin, end=end)

    def unpack(self, F, parameters):
        """The flat vector as {piece name: matrix or bias}, in Gluon's names and shapes."""
        return {name: piece.reshape(shape) for name, shape, piece in self._slices(F, parameters)}

    def hybrid_forward(self, F, x, state, parameters):
        out = F.RNN(x, parameters, *state, state_size=self.hidden_size, num_layers=self.num_layers,
                    mode=MODES[self.cell], p=self.dropout, state_outputs=True)
        return out[0], list(out[1:])


class WeightDrop:
    """Weight drop for a training step: each device's hidden-to-hidden matrices scaled in place by a fresh dropout
    mask before the forward pass, put back before the update; the model's graph stays the plain one, so
    evaluation, generation and export hold nothing for it."""

    def __init__(self, layer, ctxs):
        self.p = layer.weight_drop
        spans = [(begin, end) for name, _, begin, end in layer.spans() if name.endswith("h2h_weight")]
        self.parts = []  # (weights, gradients, kept weights, mask) of each h2h matrix on each device
        for ctx in ctxs:
            weights, grads = layer.parameters.data(ctx), layer.parameters.grad(ctx)
            for begin, end in spans:
                kept, mask = mx.nd.empty(end - begin, ctx), mx.nd.empty(end - begin, ctx)
                self.parts.append((weights[begin:end], grads[begin:end], kept, mask))

    @classmethod
    def of(cls, model, ctxs):
        """The model's weight drop on the current arrays of ctxs, or None without one."""
        return cls(model.rnn, ctxs) if isinstance(model, RNNLM) and model.rnn.weight_drop else None

    def drop(self):
        """Keep the weights, then scale them by the mask: 0 with probability p, else 1 / (1 - p)."""
        for weights, _, kept, mask in self.parts:
            weights.copyto(kept)
            mask[:] = mx.nd.random.uniform(shape=mask.shape, ctx=mask.context) >= self.p
            mask *= 1 / (1 - self.p)
            weights *= mask

    def restore(self):
        """Scale the gradients by the mask (the chain rule through the scaling), and put the weights back."""
        for weights, grads, kept, mask in self.parts:
            grads *= mask
            kept.copyto(weights)


class RNNLM(Generation, gluon.HybridBlock):
    """Embedding (or one-hot) -> MXNet's fused RNN/LSTM/GRU layers -> Dense, with dropout."""

    def __init__(self, cell, vocab_size, embed_size, hidden_size, num_layers, dropout, tie_weights=False,
                 variational=False, weight_drop=0.0, **kwargs):
        super().__init__(**kwargs)
        self.cell, self.vocab_size = cell, vocab_size
        with self.name_scope():
            # tied, the embedding is also the output layer, and Xavier's fan would count the whole vocabulary:
            # a large one (Chinese, words) starts it so small that training stalls at the tokens' frequencies
            fan = min(vocab_size, embed_size) + embed_size
            tied_init = {"weight_initializer": mx.init.Uniform((6 / fan) ** 0.5)} if tie_weights else {}
            self.embedding = gluon.nn.Embedding(vocab_size, embed_size, **tied_init) if embed_size else None
            # variational: one mask per sequence, broadcast over the time axis (TNC)
            self.drop = gluon.nn.Dropout(dropout, axes=(0,) if variational else ())
            self.rnn = FusedLayer(cell, hidden_size, num_layers, dropout, embed_size or vocab_size, weight_drop)
            # Tied: the output layer takes its weight from the embedding, found by the embedding's name.
            tied = {"prefix": self.embedding.prefix, "params": self.embedding.params} if tie_weights else {}
            self.decoder = gluon.nn.Dense(vocab_size, flatten=False, in_units=hidden_size, **tied)
        self.generation = Blocks(lambda greedy: FusedSteps(self, greedy), static_alloc=True, static_shape=True)

    state_batch_axis = 1

    def begin_state(self, batch_size, ctx):
        """Zero states of the rnn layer, each (layers, N, H)."""
        return self.rnn.begin_state(batch_size, ctx)

    def hybrid_forward(self, F, X, state):
        x = self.embedding(X) if self.embedding else F.one_hot(X, self.vocab_size)  # (T, N, E)
        out, state = self.rnn(self.drop(x), state)  # (T, N, H)
        return self.decoder(self.drop(out)), state  # logits: (T, N, V)


class FusedSteps(gluon.HybridBlock):
    """An RNNLM's steps by the scratch equations on its fused weights: one from ids (1, N), or `greedy` greedy ones."""
    # At T = 1 the fused operator costs far more than the step, and MXNet's unfused cells use its slow tanh.

    def __init__(self, lm, greedy):
        super().__init__(prefix=lm.rnn.prefix, params=lm.rnn.params)
        self.layer, self.vocab_size, self.greedy = lm.rnn, lm.vocab_size, greedy
        self.cell = "scratch-" + lm.cell  # the same equations, gate order and bias placement as the fused layer
        self.embedding, self.decoder = lm.embedding, lm.decoder
        self.parameters = self.params.get("parameters")  # the fused layer's own Parameter, found by its name

    def hybrid_forward(self, F, X, state, parameters):
        w, layers = self.layer.unpack(F, parameters), self.layer.num_layers
        # Per layer [h] or [h, c], each (N, H): split from (layers, N, H) once per call, not once per step.
        per_kind = [F.split(s, num_outputs=layers, axis=0, squeeze_axis=True) for s in state]
        cells = [[kind if layers == 1 else kind[layer] for kind in per_kind] for layer in range(layers)]

        advance = functools.partial(self._step, F, w)  # ids (N,), cells -> logits (N, V), cells
        if self.greedy:
            chosen, logits, cells = greedy_steps(F, X, cells, advance, self.greedy)
        else:
            logits, cells = advance(X.reshape((-1,)), cells)
            logits = logits.expand_dims(axis=0)  # (1, N, V)
        state = [F.stack(*[cell[k] for cell in cells], axis=0) for k in range(len(state))]  # (layers, N, H)
        return (chosen, logits, state) if self.greedy else (logits, state)

    def _step(self, F, w, ids, cells):
        x = self.embedding(ids) if self.embedding else F.one_hot(ids, self.vocab_size)  # (N, E)
        H = self.layer.hidden_size
        width, new = GATES[self.cell] * H, []
        for layer, cell in enumerate(cells):
            def hh(h, layer=layer):
                return F.FullyConnected(h, w[f"l{layer}_h2h_weight"], w[f"l{layer}_h2h_bias"], num_hidden=width)

            x = F.FullyConnected(x, w[f"l{layer}_i2h_weight"], w[f"l{layer}_i2h_bias"], num_hidden=width)
            x, cell = STEPS[self.cell](F, x, cell, hh, H)
            new.append(cell)
        return self.decoder(x), new


class TokenNLL(gluon.HybridBlock):
    """Each target's NLL in nats, (T, N, V), (T, N) -> (T, N); when masked, targets below 0 (padding) cost 0."""

    def __init__(self, masked=False, **kwargs):
        super().__init__(**kwargs)
        self.masked = masked

    def hybrid_forward(self, F, logits, Y):
        nll = -F.pick(F.log_softmax(logits, axis=-1), Y, axis=-1)
        return nll * (Y >= 0) if self.masked else nll


def _sums(F, nll, Y, mean, share=1):
    """(NLL sum, loss to differentiate): the sum, or when mean, over the real targets' count times share."""
    total = F.sum(nll)
    if not mean:
        return total, total
    count = F.maximum(F.sum(Y >= 0), 1)
    return total, F.broadcast_div(total, count * share if share != 1 else count)


class _Objective(gluon.HybridBlock):
    """A HybridBlock model and its loss as one graph (see objective)."""

    def __init__(self, model, masked, mean, share=1, **kwargs):
        super().__init__(**kwargs)
        self.model, self.nll, self.mean, self.share = model, TokenNLL(masked), mean, share

    def hybrid_forward(self, F, X, Y, state):
        logits, state = self.model(X, state)
        return (*_sums(F, self.nll(logits, Y), Y, self.mean, self.share), state)


def objective(model, masked=False, mean=True, share=1):
    """The training objective: `total, loss, state = objective(X, Y, state)`, the NLL sum and what is differentiated."""
    # Model and loss as one graph (a ScratchLM's, one per length): two graphs cost host time the device waits.
    if isinstance(model, gluon.HybridBlock):
        block = _Objective(model, masked, mean, share)
        block.hybridize(static_alloc=True, static_shape=True)
        return block
    nll = TokenNLL(masked)
    nll.hybridize(static_alloc=True, static_shape=True)
    graphs = Blocks(lambda steps: _Objective(model.unrolled[steps], masked, mean, share),
                    static_alloc=True, static_shape=True)

    def run(X, Y, state):
        steps = X.shape[0]
        if steps > scratch.MAX_UNROLL:  # run in pieces by the model, its loss beside them
            logits, state = model(X, state)
            return (*_sums(mx.nd, nll(logits, Y), Y, mean, share), state)
        return graphs[steps](X, Y, state)
    return run


def build(model_cfg, vocab_size, ctx):
    """A hybridized, initialised model for a ModelConfig."""
    if model_cfg.cell in GATES:
        model = ScratchLM(model_cfg.cell, vocab_size, model_cfg.hidden_size)
    else:
        model = RNNLM(model_cfg.cell, vocab_size, model_cfg.embed_size, model_cfg.hidden_size,
                      model_cfg.num_layers, model_cfg.dropout, model_cfg.tie_weights,
                      model_cfg.variational_dropout, model_cfg.weight_drop)
    for param in model.collect_params().values():
        size = int(np.prod(param.shape))
        if size > MAX_ARRAY:
            raise CharlmError(f"the model is too large for MXNet: {param.name} would hold {size:,} numbers, "
                              f"more than the {MAX_ARRAY:,} one array can; lower --hidden-size, --embed-size or "
                              f"--num-layers")
    model.initialize(mx.init.Xavier(), ctx=ctx)
    model.hybridize(static_alloc=True, static_shape=True)
    return model
