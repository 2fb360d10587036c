"""charlm: character-level language models on MXNet Gluon; `import charlm` imports no MXNet (see docs/api.md)."""
__version__ = "0.1.0"

from .api import LM, config, load, train  # noqa: E402
from .errors import CharlmError, Interrupted  # noqa: E402

__all__ = ["LM", "CharlmError", "Interrupted", "config", "load", "train"]
