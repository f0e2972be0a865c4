"""An example third-party rftpack plugin: the orthonormal DCT-II as a transform stage."""

__version__ = "0.1.0"
