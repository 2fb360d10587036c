"""The optimizers, learning-rate schedules, clipping by global norm (SGD applies the clipping factor inside its
update) and the moving average of the weights."""
import math
from contextlib import contextmanager

from .engine import gluon, mx, nd


class _NormScale(gluon.HybridBlock):
    """The global L2 norm of some flat arrays, and the factor that scales it down to at most max_norm."""

    def __init__(self, max_norm, **kwargs):
        super().__init__(**kwargs)
        self.max_norm = max_norm

    def hybrid_forward(self, F, *flat):
        norm = F.sqrt(F.add_n(*[F.dot(x, x) for x in flat]))
        return norm, F.clip(self.max_norm / (norm + 1e-8), 0, 1)  # gluon.utils.clip_global_norm's formula


_NORM_SCALES = {}  # (max_norm, number of arrays) -> its _NormScale


def global_norm(flat, max_norm):
    """The global L2 norm of flat arrays, (1,) on their device, and the factor to max_norm (None at 0)."""
    # One cached graph on views the caller flattens once: Gluon's clip_global_norm, and a reshape per call,
    # cost host time the device waits for.
    key = (max_norm or 0.0, len(flat))
    if key not in _NORM_SCALES:
        _NORM_SCALES[key] = _NormScale(max_norm or 0.0)
        _NORM_SCALES[key].hybridize(static_alloc=True, static_shape=True)
    norm, factor = _NORM_SCALES[key](*flat)
    return norm, factor if max_norm else None


def scale(arrays, factor):
    """Multiply each array in place by factor, a (1,) array on their device."""
    for a in arrays:
        a *= factor


class _Scaled:
    """An optimizer whose update multiplies every gradient by `grad_scale`, a (1,) device array, when set."""

    grad_scale = None  # in the update: scaling in place first would be a pass over every gradient per step

    def _device_array(self, values, ctx):
        """values as an array on ctx, copied once: a copy per step waited for the device (measured)."""
        cache = self.__dict__.setdefault("_on_device", {})
        key = (tuple(values), str(ctx))
        if key not in cache:
            if len(cache) > 8:  # learning rates that decay make a new key each epoch
                cache.clear()
            cache[key] = nd.array(values, ctx=ctx)
        return cache[key]


class SGD(_Scaled, mx.optimizer.SGD):
    """MXNet's SGD; without momentum the factor scales the learning rates (preloaded_multi_sgd_update)."""

    def _update_impl(self, indices, weights, grads, states, multi_precision=False):
        if self.grad_scale is None:
            return super()._update_impl(indices, weights, grads, states, multi_precision)
        many = isinstance(indices, (tuple, list))
        # with weight decay the factor must scale the gradient alone, not the lr that multiplies wd * weight too
        if self.momentum or multi_precision or not many or self.wd:
            scale(grads if many else [grads], self.grad_scale)
            return super()._update_impl(indices, weights, grads, states, multi_precision)
        self._update_count(indices)
        ctx = weights[0].context
        lrs = self._device_array(self._get_lrs(indices), ctx) * self.grad_scale
        wds = self._device_array(self._get_wds(indices), ctx)
        kwargs = {"clip_gradient": self.clip_gradient} if self.clip_gradient else {}
        nd.preloaded_multi_sgd_update(*[a for pair in zip(weights, grads) for a in pair], lrs, wds, out=weights,
                                      num_weights=len(weights), rescale_grad=self.rescale_grad, **kwargs)


class AdamW(mx.optimizer.Adam):
    """Adam with decoupled weight decay (PyTorch's AdamW): weights shrink by lr * wd outside the moments."""

    def __init__(self, learning_rate, decay):
        super().__init__(learning_rate=learning_rate)
        self.decay = decay

    def update(self, index, weight, grad, state):
        weight *= 1 - self._get_lr(index) * self.decay  # the scheduled lr, without Adam's bias correction
        super().update(index, weight, grad, state)


# Adam keeps MXNet's own update, its gradients scaled in place first: adamw_update, which takes the factor as an
# array, makes each step slower.
OPTIMIZERS = {"sgd": SGD, "adam": mx.optimizer.Adam}


def create(name, learning_rate, weight_decay=0.0):
    """The optimizer `name` (sgd or adam) at learning_rate; weight decay is L2 for sgd, decoupled for adam."""
    if name == "adam" and weight_decay:
        return AdamW(learning_rate, weight_decay)
    return OPTIMIZERS[name](learning_rate=learning_rate, wd=weight_decay)


def cosine(progress):
    """The cosine schedule's factor at progress 0..1 of the run: from 1 down to 0, then 0."""
    return (1 + math.cos(math.pi * min(progress, 1.0))) / 2


def ramp(update, warmup):
    """Linear warmup's factor at update number `update` (from 1): update / warmup, 1 after warmup updates."""
    return min(1.0, update / warmup) if warmup else 1.0


def clip(optimizer, grads, max_norm, summed=True):
    """Clip grads[device] to a global norm of at most max_norm (of their sum unless summed); the norm before."""
    first = grads[0]
    if not summed and len(grads) > 1:
        first = [nd.add_n(*(g.as_in_context(first[0].context) for g in same)) for same in zip(*grads)]
    norm, factor = global_norm(first, max_norm)
    if len(grads) == 1 and isinstance(optimizer, _Scaled):
        optimizer.grad_scale = factor
    elif factor is not None:
        for device in grads:
            scale(device, factor.as_in_context(device[0].context))
    return norm


class Average:
    """The moving average of the model's weights (train.ema), kept on the first device and swapped into the model
    to be scored or saved: no second model, whose evaluation would hold its own buffers."""

    def __init__(self, model, ctx, decay):
        self.model, self.ctx, self.decay = model, ctx, decay
        self.values = [w.data(ctx).copy() for w in model.collect_params().values()]
        self.pairs = []

    def bind(self):
        """Pair each average with its weight on the first device (a rollback may have made new arrays)."""
        self.pairs = list(zip(self.values, (w.data(self.ctx) for w in self.model.collect_params().values())))

    def reset(self):
        """Start the average at the model's weights."""
        self.bind()
        for a, w in self.pairs:
            w.copyto(a)

    def update(self):
        """average = decay * average + (1 - decay) * weight, in place."""
        for a, w in self.pairs:
            a *= self.decay
            a += w * (1 - self.decay)

    @contextmanager
    def swapped(self):
        """The model with the averaged weights on every device, its own put back after."""
        params = list(self.model.collect_params().values())
        kept = [w.data(self.ctx).copy() for w in params]  # every device holds the same weights
        try:
            _copy_into(params, self.values)
            yield self.model
        finally:
            _copy_into(params, kept)

    def save_parameters(self, path):
        """Save the averaged weights as the model's parameter file."""
        with self.swapped() as model:
            model.save_parameters(path)

    def load_parameters(self, path, ctx):
        """Load a parameter file (save_parameters') as the averaged weights."""
        with self.swapped() as model:
            model.load_parameters(path, ctx=ctx)
            for a, w in zip(self.values, model.collect_params().values()):
                w.data(self.ctx).copyto(a)


def _copy_into(params, values):
    """Copy values into each parameter on every device (not set_data, which resets a kvstore that updates)."""
    for w, value in zip(params, values):
        for array in w.list_data():
            value.copyto(array)
