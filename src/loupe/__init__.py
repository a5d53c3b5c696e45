"""Loupe: model-assisted labeling for scientific and medical images."""

__version__ = "0.1.0"
