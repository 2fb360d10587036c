"""charlm: character-level language models on MXNet Gluon."""
__version__ = "0.1.0"
