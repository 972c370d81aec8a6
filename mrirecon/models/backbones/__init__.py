"""CNN backbones (real channels) and the complex-image adapter."""

from mrirecon.models.backbones.complex import (
    ComplexImageCNN,
    flatten_image_batch,
    from_channels,
    to_channels,
    unflatten_image_batch,
)
from mrirecon.models.backbones.dncnn import DnCNN
from mrirecon.models.backbones.normunet import NormUnet
from mrirecon.models.backbones.resnet import ResidualBlock, ResNet
from mrirecon.models.backbones.unet import ConvBlock, TransposeConvBlock, Unet

__all__ = [
    "ComplexImageCNN",
    "ConvBlock",
    "DnCNN",
    "NormUnet",
    "ResNet",
    "ResidualBlock",
    "TransposeConvBlock",
    "Unet",
    "flatten_image_batch",
    "from_channels",
    "to_channels",
    "unflatten_image_batch",
]
