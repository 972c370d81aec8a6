"""A U-Net deeper than the training images allow fails naming the setting, not torch's norm."""

from __future__ import annotations

import pytest

from tests.helpers import tiny_modl_config, tiny_mri_folders


def test_a_unet_pooled_past_the_training_images_names_the_pooling_setting(tmp_path):
    """Fails if a VarNet whose ``pools`` halve the 32-pixel-wide training images to one pixel
    stops with the U-Net's size message (or, before it, instance norm's "Expected more than 1
    spatial element when training") alone, naming no setting of the training config, or if the
    message loses the U-Net's words."""
    from mrirecon.training.run import train_from_config

    folders = tiny_mri_folders(tmp_path / "data")
    path = tiny_modl_config(tmp_path, folders["train"], folders["val"], tmp_path / "out",
                            max_steps=1, model={"name": "varnet", "params": {
                                "iterations": 1, "chans": 2, "pools": 6, "sens_chans": 2,
                                "sens_pools": 1}})
    with pytest.raises(ValueError, match=r"model\.params: a U-Net pools the training images "
                                         r"down to one pixel \(Unet: image 32x32 is too small for num_pool_layers=6.*"
                                         r"\(pools 6, sens_pools 1\): lower the pooling depth"):
        train_from_config(path, progress=False)
