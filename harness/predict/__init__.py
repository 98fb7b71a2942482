"""Use the winner: mask whole Landsat-8 scenes with a trained network (``cloudmask predict``).

- :mod:`~harness.predict.preprocessing`: :class:`Preprocessing` (band order, scaling, statistics, threshold);
- :mod:`~harness.predict.model`: :func:`load_model` (a harness checkpoint, its preprocessing with it);
- :mod:`~harness.predict.scene`: :func:`find_scene` (a scene folder's band GeoTIFFs, checked, rasterio);
- :mod:`~harness.predict.tiling`: overlapping tiles and their blending weights (numpy);
- :mod:`~harness.predict.infer`: :func:`predict_scene` (tiled, blended, strip by strip, GeoTIFF out).
"""

from harness.predict.infer import CLEAR, CLOUD, NODATA, mask_path, predict_scene, probability_path
from harness.predict.model import TrainedNetwork, load_model
from harness.predict.preprocessing import Preprocessing
from harness.predict.scene import LandsatScene, find_scene

__all__ = [
    "CLEAR",
    "CLOUD",
    "NODATA",
    "LandsatScene",
    "Preprocessing",
    "TrainedNetwork",
    "find_scene",
    "load_model",
    "mask_path",
    "predict_scene",
    "probability_path",
]
