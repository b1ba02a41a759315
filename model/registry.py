"""Imports each engine family's module; each registers its engines with model.engine.register."""

# isort: off
from . import transformer  # noqa: F401  (first: the default engine of the page and the CLI)
from . import recurrent  # noqa: F401
from . import style_vae  # noqa: F401
from . import vae_nn, cnn  # noqa: F401,E401
