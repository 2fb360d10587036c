"""Tiny models and inputs shared by test_model.py and test_scratch.py."""
import numpy as np

from charlm import model as models, recipe
from charlm.configs import ModelConfig
from charlm.engine import mx, nd

T, N, V, H = 3, 2, 6, 5  # torch-rnn's habit: tiny, all different, so a transposed shape cannot pass


def model_cfg(**settings):
    """A ModelConfig of the fixed settings but these."""
    fixed = {k.split(".")[1]: v for k, v in recipe.FIXED.items() if k.startswith("model.")}
    return ModelConfig(**{**fixed, **settings})


def ids(seed=0):
    return nd.array(np.random.default_rng(seed).integers(0, V, size=(T, N)))


def build(cell, **kw):
    return models.build(model_cfg(cell=cell, hidden_size=H, embed_size=4, num_layers=2, **kw), V, mx.cpu())


def randomize(model, seed=1):
    rng = np.random.default_rng(seed)
    for p in model.collect_params().values():
        p.set_data(nd.array(rng.normal(0, 0.5, size=p.shape), dtype=p.dtype))
