"""SGD and Adam that apply the gradient-clipping factor inside their update, read from the device."""
import math

from . import engine
from .engine import mx, nd


class _Scaled:
    """An optimizer whose `grad_scale`, when set, is a (1,) array on the device that every gradient is
    multiplied by as part of the update. Scaling each gradient in place first is a pass over every
    gradient per step: 0.2 ms of a 4.5 ms tm-rnn step, measured."""

    grad_scale = None

    def __getstate__(self):  # Trainer.save_states pickles the optimizer: the factor is a step's, not state
        state = super().__getstate__()
        state.pop("grad_scale", None)
        state.pop("_on_device", None)
        return state

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
        if self.momentum or multi_precision or not many:
            engine.scale(grads if many else [grads], self.grad_scale)
            return super()._update_impl(indices, weights, grads, states, multi_precision)
        self._update_count(indices)
        ctx = weights[0].context
        lrs = self._device_array(self._get_lrs(indices), ctx) * self.grad_scale
        wds = self._device_array(self._get_wds(indices), ctx)
        kwargs = {"clip_gradient": self.clip_gradient} if self.clip_gradient else {}
        nd.preloaded_multi_sgd_update(*[a for pair in zip(weights, grads) for a in pair], lrs, wds, out=weights,
                                      num_weights=len(weights), rescale_grad=self.rescale_grad, **kwargs)


class Adam(_Scaled, mx.optimizer.Adam):
    """MXNet's Adam; without weight decay the factor goes in as adamw_update's rescale_grad array (AdamW
    with no decay and eta 1 is Adam), which skips the update when the factor is not finite or 0."""

    def update(self, index, weight, grad, state):
        if self.grad_scale is None:
            return super().update(index, weight, grad, state)
        if self._get_wd(index) or grad.stype != "default":
            engine.scale([grad], self.grad_scale)
            return super().update(index, weight, grad, state)
        self._update_count(index)
        t = self._index_update_count[index]
        lr = self._get_lr(index) * math.sqrt(1.0 - self.beta2 ** t) / (1.0 - self.beta1 ** t)  # Adam's bias correction
        rescale = self.grad_scale if self.rescale_grad == 1 else self.grad_scale * self.rescale_grad
        mean, var = state
        nd.contrib.adamw_update(weight, grad, mean, var, rescale, lr=lr, eta=1.0, beta1=self.beta1, beta2=self.beta2,
                                epsilon=self.epsilon, wd=0.0, clip_gradient=self.clip_gradient or -1, out=weight)


OPTIMIZERS = {"sgd": SGD, "adam": Adam}


def create(name, learning_rate):
    """The optimizer `name` (sgd or adam) at learning_rate."""
    return OPTIMIZERS[name](learning_rate=learning_rate)


def clip(trainer, grads, max_norm):
    """Clip grads (flat views of the gradients) to a global L2 norm of at most max_norm (none at 0) for
    trainer's next step: the factor goes to the optimizer when it takes one, else grads are scaled in place
    (an optimizer unpickled from a run saved before this module). Returns the norm before, (1,) on the device."""
    norm, factor = engine.global_norm(grads, max_norm)
    if isinstance(trainer.optimizer, _Scaled):
        trainer.optimizer.grad_scale = factor
    elif factor is not None:
        engine.scale(grads, factor)
    return norm
