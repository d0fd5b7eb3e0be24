"""
The embedded default: a tiny ViLAMP with random weights and the bundled Big Buck Bunny clip, built on the fly so
that the whole pipeline (file -> frames -> keyframes -> tokens -> answer) runs anywhere without a download.
Its answers are noise: it shows the mechanics, not the model's knowledge.
"""

from pathlib import Path

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import PreTrainedTokenizerFast

from .modeling_vilamp import VilampConfig, VilampForConditionalGeneration
from .processing import FrameScorer, VilampProcessor, VilampVideoProcessor


# "Big Buck Bunny" excerpt, (c) Blender Foundation, www.bigbuckbunny.org, CC BY 3.0.
BUNDLED_CLIP = Path(__file__).parent / "assets" / "bigbuckbunny.mp4"
SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<video>"]
# SigLIP with the real 27x27 patch grid (54 px, patch 2) at tiny width, and a tiny Qwen2.
TINY_VISION_CONFIG = {
    "model_type": "siglip_vision_model",
    "hidden_size": 32,
    "intermediate_size": 64,
    "num_hidden_layers": 2,
    "num_attention_heads": 2,
    "patch_size": 2,
    "image_size": 54,
    "vision_use_head": False,
}
TINY_TEXT_CONFIG = {
    "model_type": "qwen2",
    "hidden_size": 64,
    "intermediate_size": 128,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
}
# K of the embedded default: of the bundled clip's 6 sampled frames, 2 at full detail and 4 merged.
TINY_NUM_KEYFRAMES = 2
# How the commands that save or serve the embedded default name it.
TINY_DESCRIPTION = (
    f"the embedded default (a tiny random-weight ViLAMP keeping {TINY_NUM_KEYFRAMES} keyframes; its answers are noise)"
)
TINY_SCORER = {
    "embed_dim": 16,
    "quick_gelu": True,
    "vision_cfg": {"image_size": 32, "layers": 2, "width": 32, "patch_size": 8, "head_width": 16, "mlp_ratio": 2.0},
    "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 2, "mlp_ratio": 2.0},
}


def tiny_tokenizer(vocab_size: int = 300) -> PreTrainedTokenizerFast:
    """A byte-level BPE tokenizer with Qwen's chat tokens and `<video>`, trained in milliseconds on a sentence."""
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(["You are a helpful assistant. What happens in this video, and when?"], trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=tokenizer,
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        additional_special_tokens=["<|im_start|>", "<video>"],
    )


def tiny_model_and_processor(seed: int = 0) -> tuple[VilampForConditionalGeneration, VilampProcessor]:
    """A random-weight ViLAMP (27x27 patch grid as in the real model, tiny widths) and its processor."""
    torch.manual_seed(seed)
    tokenizer = tiny_tokenizer()
    config = VilampConfig(
        vision_config=TINY_VISION_CONFIG,
        text_config={
            **TINY_TEXT_CONFIG,
            "vocab_size": len(tokenizer),
            "eos_token_id": tokenizer.eos_token_id,
            "pad_token_id": tokenizer.pad_token_id,
        },
        query_embed_dim=TINY_SCORER["embed_dim"],
        video_token_id=tokenizer.convert_tokens_to_ids("<video>"),
    )
    model = VilampForConditionalGeneration(config).eval()
    processor = VilampProcessor(
        tokenizer=tokenizer,
        video_processor=VilampVideoProcessor(size={"height": 54, "width": 54}),
        frame_scorer=FrameScorer(TINY_SCORER),
        num_keyframes=TINY_NUM_KEYFRAMES,
    )
    return model, processor


def save_tiny_model(directory: str | Path) -> None:
    """Saves the embedded default's model and processor in `directory`, as a model directory any loader takes."""
    model, processor = tiny_model_and_processor()
    model.save_pretrained(directory)
    processor.save_pretrained(directory)
