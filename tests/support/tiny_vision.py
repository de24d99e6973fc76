"""Tiny random-weight CLIP and OWL-ViT checkpoints, built from configs and saved like real ones (no download).

Both folders load with `from_pretrained(folder, local_files_only=True)` (model and processor), through the
same Auto classes `engines/vision.py` uses. Outputs are noise; shapes, preprocessing and post-processing are real.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tests.support.tiny_models import TINY_VOCAB, tiny_clip_tokenizer

BOS, EOS = TINY_VOCAB - 2, TINY_VOCAB - 1  # 512, 513: the tiny tokenizer's start and end tokens
OWL_MAX_LENGTH = 16


def _text_config(max_positions: int) -> dict[str, Any]:
    return {"vocab_size": TINY_VOCAB, "hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2,
            "num_attention_heads": 4, "max_position_embeddings": max_positions,
            "bos_token_id": BOS, "eos_token_id": EOS, "pad_token_id": EOS}


def _vision_config(image_size: int, patch_size: int) -> dict[str, Any]:
    return {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4,
            "image_size": image_size, "patch_size": patch_size}


def tiny_clip(folder: Path, seed: int = 0) -> Path:
    """A CLIP model (projection 16, 32x32 images in 8x8 patches) with its processor, saved into `folder`."""
    from engines.torch_compat import prepare

    prepare()  # before transformers: its image utilities import torchvision
    import torch
    from transformers import AutoTokenizer, CLIPConfig, CLIPImageProcessor, CLIPModel, CLIPProcessor

    torch.manual_seed(seed)
    config = CLIPConfig(text_config=_text_config(77), vision_config=_vision_config(32, 8), projection_dim=16)
    CLIPModel(config).eval().save_pretrained(folder)
    tokenizer = AutoTokenizer.from_pretrained(tiny_clip_tokenizer(folder / "_tokenizer"), local_files_only=True)
    images = CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32})
    CLIPProcessor(image_processor=images, tokenizer=tokenizer).save_pretrained(folder)
    return folder


def tiny_owlvit(folder: Path, seed: int = 0) -> Path:
    """An OWL-ViT detector (32x32 images in 8x8 patches: 16 candidate boxes) with its processor (queries of at
    most 16 tokens), saved into `folder`."""
    from engines.torch_compat import prepare

    prepare()  # before transformers: its image utilities import torchvision
    import torch
    from transformers import (
        AutoTokenizer,
        OwlViTConfig,
        OwlViTForObjectDetection,
        OwlViTImageProcessor,
        OwlViTProcessor,
    )

    torch.manual_seed(seed)
    config = OwlViTConfig(text_config=_text_config(OWL_MAX_LENGTH), vision_config=_vision_config(32, 8),
                          projection_dim=32)  # the class head needs projection_dim == the text hidden size
    model = OwlViTForObjectDetection(config).eval()
    with torch.no_grad():  # random box heads predict zero-size boxes: make each patch predict a box of half the
        # image centred on the patch, so neighbours overlap (IoU 1/3 in a row) and suppression has work to do
        model.box_head.dense2.weight.zero_()
        model.box_head.dense2.bias.copy_(torch.tensor([0.0, 0.0, 1.0986, 1.0986]))  # logit(1/4) -> logit(1/2)
    model.save_pretrained(folder)
    tokenizer = AutoTokenizer.from_pretrained(tiny_clip_tokenizer(folder / "_tokenizer", max_length=OWL_MAX_LENGTH),
                                              local_files_only=True)
    images = OwlViTImageProcessor(size={"height": 32, "width": 32}, crop_size={"height": 32, "width": 32})
    OwlViTProcessor(image_processor=images, tokenizer=tokenizer).save_pretrained(folder)
    return folder
