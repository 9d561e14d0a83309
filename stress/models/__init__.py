"""The networks under test: SimpleCNN and the registry that builds any other image classifier."""

from stress.models.layers import check_cam_layer, cifar_stem, embed, embedding_layer, find_cam_layer, spatial_layers
from stress.models.registry import check_model, create_model, probe_batch
from stress.models.simple_cnn import GRADCAM_LAYER, SimpleCNN

__all__ = ["GRADCAM_LAYER", "SimpleCNN", "check_cam_layer", "check_model", "cifar_stem", "create_model", "embed", "embedding_layer",
           "find_cam_layer", "probe_batch", "spatial_layers"]
