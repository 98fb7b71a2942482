"""Reference benchmark harness for cloud-mask segmentation on Landsat-8 imagery."""

__version__ = "0.1.0"
