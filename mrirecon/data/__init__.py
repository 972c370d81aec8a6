"""Typed data containers, torch datasets and synthetic data generation."""

from mrirecon.data.containers import Header, Image, ImageGeometry, KSpace, Sinogram
from mrirecon.operators.ct_geometry import CTGeometry

__all__ = ["CTGeometry", "Header", "Image", "ImageGeometry", "KSpace", "Sinogram"]
