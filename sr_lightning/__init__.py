"""sr-lightning: PyTorch Lightning + Hydra experiments for single-image super-resolution GANs."""

__version__ = "0.1.0"
