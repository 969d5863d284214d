"""Issue 22 item 5: what timm already knows is not typed again here. freeze_stages takes the stem
and the stages from the model's own group_matcher, so any timm family freezes, not only the ones a
table of ours named."""
from __future__ import annotations

import pytest
import timm
import torch

from surgflow.io_utils import SurgflowError
from surgflow.models.backbones import freeze_first_stages, stem_and_stages


def test_freeze_stages_of_a_family_no_table_of_ours_named():
    # a tiny swin (stages are `layers.N`, stem `patch_embed`): before, "don't know the stages"
    model = timm.create_model("swin_tiny_patch4_window7_224", num_classes=0, embed_dim=16,
                              depths=(1, 1, 1, 1), num_heads=(1, 1, 1, 1), img_size=64,
                              window_size=2)
    stem, stages = stem_and_stages(model, "swin")
    assert stem == [model.patch_embed] and stages == [model.get_submodule(f"layers.{i}") for i in range(4)]
    n = freeze_first_stages(model, 2, "swin")
    frozen = {k for k, p in model.named_parameters() if not p.requires_grad}
    assert frozen == {k for k, _ in model.named_parameters()
                      if k.startswith(("patch_embed.", "layers.0.", "layers.1."))}
    assert n == sum(p.numel() for k, p in model.named_parameters() if k in frozen)
    model(torch.rand(2, 3, 64, 64)).sum().backward()
    assert all((p.grad is None) == (k in frozen) for k, p in model.named_parameters())
    with pytest.raises(SurgflowError, match="freeze_stages: 5 is more than the 4 stages"):
        freeze_first_stages(model, 5, "swin")

