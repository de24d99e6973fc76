"""Tiny random-weight models built from configs, saved to disk like real checkpoints (no download).

Every builder writes a folder that loads with `from_pretrained(path, local_files_only=True)` through the
same code production uses. Output is noise; shapes, dtypes, batching and every branch are real.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from engines.torch_compat import prepare

prepare()  # before diffusers or transformers: torchvision needs it on a CPU-only torch

TOKEN_MAX_LENGTH = 77


def tiny_clip_tokenizer(folder: Path, max_length: int = TOKEN_MAX_LENGTH) -> Path:
    """A byte-level CLIP tokenizer with no merges (each character is a token): 514 ids, 512 = start, 513 = end.

    Handles any text (Chinese included, as UTF-8 bytes). Saved with `save_pretrained` into `folder`."""
    from transformers import CLIPTokenizer
    from transformers.convert_slow_tokenizer import bytes_to_unicode

    folder.mkdir(parents=True, exist_ok=True)
    raw = folder / "_raw"
    raw.mkdir(exist_ok=True)
    chars = list(bytes_to_unicode().values())
    vocab: dict[str, int] = {}
    for c in chars:
        vocab.setdefault(c, len(vocab))
    for c in chars:
        vocab.setdefault(c + "</w>", len(vocab))
    for special in ("<|startoftext|>", "<|endoftext|>"):
        vocab[special] = len(vocab)
    (raw / "vocab.json").write_text(json.dumps(vocab), encoding="utf-8")
    (raw / "merges.txt").write_text("#version: 0.2\n", encoding="utf-8")
    tokenizer = CLIPTokenizer(str(raw / "vocab.json"), str(raw / "merges.txt"), model_max_length=max_length)
    tokenizer.save_pretrained(folder)
    return folder


TINY_VOCAB = 514  # the tokenizer above: text models built for it take this vocab_size


def _tokenizer() -> Any:
    import tempfile

    from transformers import CLIPTokenizer

    with tempfile.TemporaryDirectory() as tmp:
        return CLIPTokenizer.from_pretrained(tiny_clip_tokenizer(Path(tmp)))


# -- Stable Diffusion ---------------------------------------------------------------------------------------
# Configs after diffusers' own pipeline tests: a 2-level UNet (32, 64), a 2-level VAE (latents are 1/2 of the
# image, not 1/8), a 2-layer CLIP text model over the tiny tokenizer. 64 x 64 images take ~0.05 s a step.
TINY_TEXT_DIM = 32


def _tiny_unet(in_channels: int = 4) -> Any:
    from diffusers import UNet2DConditionModel

    return UNet2DConditionModel(
        block_out_channels=(32, 64), layers_per_block=1, sample_size=32, in_channels=in_channels, out_channels=4,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"), up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        cross_attention_dim=TINY_TEXT_DIM, attention_head_dim=4, norm_num_groups=8)


def _tiny_vae(levels: int = 2) -> Any:
    from diffusers import AutoencoderKL

    channels = [32, 32, 64][-levels:]
    return AutoencoderKL(block_out_channels=channels, in_channels=3, out_channels=3, latent_channels=4,
                         down_block_types=["DownEncoderBlock2D"] * levels, up_block_types=["UpDecoderBlock2D"] * levels,
                         layers_per_block=1, norm_num_groups=8, sample_size=64)


def _tiny_text_encoder() -> Any:
    from transformers import CLIPTextConfig, CLIPTextModel

    config = CLIPTextConfig(bos_token_id=512, eos_token_id=513, pad_token_id=513, hidden_size=TINY_TEXT_DIM,
                            intermediate_size=37, layer_norm_eps=1e-05, num_attention_heads=4, num_hidden_layers=2,
                            vocab_size=TINY_VOCAB, max_position_embeddings=TOKEN_MAX_LENGTH)
    return CLIPTextModel(config)


def _tiny_safety_checker(flag_all: bool) -> tuple[Any, Any]:
    """A StableDiffusionSafetyChecker over a tiny CLIP vision tower, and its image processor.

    A concept is flagged when cosine(image, concept) exceeds its weight: weights of 2 never flag, -2 always."""
    import torch
    from diffusers.pipelines.stable_diffusion.safety_checker import StableDiffusionSafetyChecker
    from transformers import CLIPConfig, CLIPImageProcessor

    config = CLIPConfig(
        text_config={"hidden_size": 32, "intermediate_size": 37, "num_attention_heads": 4, "num_hidden_layers": 1,
                     "vocab_size": TINY_VOCAB, "bos_token_id": 512, "eos_token_id": 513, "pad_token_id": 513},
        vision_config={"hidden_size": 32, "intermediate_size": 37, "num_attention_heads": 4, "num_hidden_layers": 1,
                       "image_size": 32, "patch_size": 8},
        projection_dim=16)
    checker = StableDiffusionSafetyChecker(config)
    with torch.no_grad():
        checker.concept_embeds_weights.fill_(-2.0 if flag_all else 2.0)
        checker.special_care_embeds_weights.fill_(2.0)
    processor = CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32})
    return checker, processor


def tiny_sd(folder: Path, safety: bool = True, flag_all: bool = False, seed: int = 0) -> Path:
    """A tiny StableDiffusionPipeline (DDIM) saved to `folder`; with `safety`, a safety checker and feature
    extractor that flag nothing (`flag_all`: every image)."""
    import torch
    from diffusers import DDIMScheduler, StableDiffusionPipeline

    torch.manual_seed(seed)
    unet, vae, text_encoder = _tiny_unet(), _tiny_vae(), _tiny_text_encoder()
    checker, processor = _tiny_safety_checker(flag_all) if safety else (None, None)
    scheduler = DDIMScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", clip_sample=False,
                              set_alpha_to_one=False, steps_offset=1)
    tokenizer = _tokenizer()
    pipe: Any = StableDiffusionPipeline(vae=vae, text_encoder=text_encoder, tokenizer=tokenizer, unet=unet,
                                   scheduler=scheduler, safety_checker=checker, feature_extractor=processor,
                                   requires_safety_checker=safety)
    pipe.save_pretrained(folder)
    return folder


def tiny_upscaler(folder: Path, seed: int = 0) -> Path:
    """A tiny StableDiffusionUpscalePipeline (the x4 upscaler's layout: a 7-channel UNet, a 1/4 VAE), no checker."""
    import torch
    from diffusers import DDIMScheduler, DDPMScheduler, StableDiffusionUpscalePipeline, UNet2DConditionModel

    torch.manual_seed(seed)
    unet = UNet2DConditionModel(
        block_out_channels=(32, 64), layers_per_block=1, sample_size=32, in_channels=7, out_channels=4,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"), up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        cross_attention_dim=TINY_TEXT_DIM, attention_head_dim=4, norm_num_groups=8, num_class_embeds=100)
    vae = _tiny_vae(levels=3)
    vae.register_to_config(scaling_factor=0.08333)
    tokenizer = _tokenizer()
    pipe: Any = StableDiffusionUpscalePipeline(
        vae=vae, text_encoder=_tiny_text_encoder(), tokenizer=tokenizer, unet=unet,
        low_res_scheduler=DDPMScheduler(), scheduler=DDIMScheduler(prediction_type="v_prediction"),
        max_noise_level=350)
    pipe.save_pretrained(folder)
    return folder


def tiny_controlnet(folder: Path, sd_folder: Path, seed: int = 0) -> Path:
    """A ControlNet for `tiny_sd`'s UNet; its conditioning embedding halves the image, as the tiny VAE does."""
    import torch
    from diffusers import ControlNetModel, UNet2DConditionModel

    torch.manual_seed(seed)
    unet = UNet2DConditionModel.from_pretrained(sd_folder, subfolder="unet")
    controlnet = ControlNetModel.from_unet(unet, conditioning_embedding_out_channels=(16, 32))
    with torch.no_grad():  # from_unet zero-initialises the outputs: make the control matter
        for module in [*controlnet.controlnet_down_blocks, controlnet.controlnet_mid_block,
                       controlnet.controlnet_cond_embedding.conv_out]:
            module.weight.normal_(0, 0.1)
    controlnet.save_pretrained(folder)
    return folder


def tiny_lora(path: Path, sd_folder: Path, seed: int = 0, rank: int = 4) -> Path:
    """A LoRA for `tiny_sd`'s UNet attention, random (non-zero) weights. `path`: a folder, or a .safetensors file."""
    import torch
    from diffusers import StableDiffusionPipeline, UNet2DConditionModel
    from peft import LoraConfig
    from peft.utils import get_peft_model_state_dict

    torch.manual_seed(seed)
    unet = UNet2DConditionModel.from_pretrained(sd_folder, subfolder="unet")
    unet.add_adapter(LoraConfig(r=rank, lora_alpha=rank, init_lora_weights=False,
                                target_modules=["to_q", "to_k", "to_v", "to_out.0"]))
    with torch.no_grad():
        for name, parameter in unet.named_parameters():
            if "lora_" in name:
                parameter.normal_(0, 0.3)
    layers = get_peft_model_state_dict(unet)
    if path.suffix == ".safetensors":
        StableDiffusionPipeline.save_lora_weights(path.parent, unet_lora_layers=layers, weight_name=path.name)
    else:
        StableDiffusionPipeline.save_lora_weights(path, unet_lora_layers=layers)
    return path


def _save_constant_weights(module_factory: Any, file: Path, strip_first: bool = False) -> None:
    """Save a state dict for the model `module_factory()` builds, every tensor a broadcast constant (tiny files;
    `load_state_dict` copies them into the full-size parameters). `strip_first`: drop the first name component,
    as controlnet_aux's openpose `transfer` expects."""
    import torch

    with torch.device("meta"):
        model = module_factory()
    state: dict[str, object] = {}
    for index, (name, tensor) in enumerate(model.state_dict().items()):
        key = name.split(".", 1)[1] if strip_first else name
        value = 0.01 * ((index % 7) - 3) if tensor.dtype.is_floating_point else 0
        state[key] = torch.full((1,) * tensor.dim(), value, dtype=tensor.dtype).expand(tensor.shape)
    file.parent.mkdir(parents=True, exist_ok=True)
    torch.save(state, file)


def tiny_openpose_annotators(folder: Path) -> Path:
    """body_pose_model.pth, hand_pose_model.pth and facenet.pth for `OpenposeDetector.from_pretrained(folder)`:
    the real architectures, constant weights (no pose is ever found; the map is black)."""
    from engines.torch_compat import prepare

    prepare()
    from controlnet_aux.open_pose.face import FaceNet
    from controlnet_aux.open_pose.model import bodypose_model, handpose_model

    _save_constant_weights(bodypose_model, folder / "body_pose_model.pth", strip_first=True)
    _save_constant_weights(handpose_model, folder / "hand_pose_model.pth", strip_first=True)
    _save_constant_weights(FaceNet, folder / "facenet.pth")
    return folder


def tiny_hed_annotators(folder: Path) -> Path:
    """ControlNetHED.pth for `HEDdetector.from_pretrained(folder)` (constant weights)."""
    from engines.torch_compat import prepare

    prepare()
    from controlnet_aux.hed import ControlNetHED_Apache2

    _save_constant_weights(ControlNetHED_Apache2, folder / "ControlNetHED.pth")
    return folder
