"""genforge: train, sample, evaluate and explore deep generative models.

``genforge.load(RUN_DIR)`` gives a trained model ready to use; ``genforge.api`` has the rest
(see docs/api.md). Nothing heavy is imported until it is used, so the command starts fast.
"""

from genforge import threads as _threads  # first: OpenMP's wait policy must be set before torch loads
from genforge._version import __version__


def load(path, device: str = "cpu"):
    """A trained run's model, ready to sample from: see :func:`genforge.api.load`."""
    from genforge.api import load as load_run

    return load_run(path, device)
