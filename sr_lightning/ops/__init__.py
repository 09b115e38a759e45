"""Image operations shared by data, losses, metrics and inference (MATLAB-compatible resize and colour)."""
from sr_lightning.ops.color import rgb2y_uint8, rgb2ycbcr, rgb2ycbcr_uint8, ycbcr2rgb, ycbcr2rgb_uint8
from sr_lightning.ops.imresize import imresize, imresize_np

__all__ = ["imresize", "imresize_np", "rgb2ycbcr", "ycbcr2rgb", "rgb2y_uint8", "rgb2ycbcr_uint8",
           "ycbcr2rgb_uint8"]
