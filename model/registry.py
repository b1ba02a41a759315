"""Imports each engine family's module; each registers its engines with model.engine.register.
ORDER is the order the page and the CLI list them in (the first is the default)."""

# isort: off
from . import transformer  # noqa: F401
from . import recurrent  # noqa: F401
from . import style_vae  # noqa: F401
from . import vae_nn, cnn  # noqa: F401,E401

ORDER = ("transformer", "style-vae", "vae-nn", "cnn", "gru", "lstm", "multi-rnn")
