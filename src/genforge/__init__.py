"""genforge: train, sample, evaluate and explore deep generative models."""

__version__ = "0.1.0"
