"""Typed data containers, torch datasets and synthetic data generation."""

from mrirecon.containers import Header, Image, ImageGeometry, KSpace, Sinogram
from mrirecon.data.dataset import SliceBatch, SliceDataset, SliceSample, VolumeInfo, collate_samples
from mrirecon.operators.ct_geometry import CTGeometry

__all__ = ["CTGeometry", "Header", "Image", "ImageGeometry", "KSpace", "Sinogram",
           "SliceBatch", "SliceDataset", "SliceSample", "VolumeInfo", "collate_samples"]
