"""Datasets: IDX files, the bundled MNIST subset, downloads, in-memory uint8 tensors."""
