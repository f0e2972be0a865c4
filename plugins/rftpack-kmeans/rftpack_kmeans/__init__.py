"""An example third-party rftpack plugin: a per-block k-means (Lloyd–Max) codebook quantizer."""

__version__ = "0.1.0"
