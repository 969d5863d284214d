"""Models: timm backbones with explicit norm modes, temporal heads, task layers (see model.py)."""
from surgflow.registry import NORM_MODES
from surgflow.models.backbones import Backbone, build_backbone, norm_layers
from surgflow.models.heads import HEADS, build_head
from surgflow.models.model import SurgflowModel, build_model
from surgflow.models.tasks import TASKS, build_task, median_frequency_weights

__all__ = ["NORM_MODES", "Backbone", "build_backbone", "norm_layers", "HEADS", "build_head",
           "SurgflowModel", "build_model", "TASKS", "build_task", "median_frequency_weights"]
