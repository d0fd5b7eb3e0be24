"""
transformers' common model tests (`ModelTesterMixin` of the installed release, see transformers_suite.py) run against
`VilampModel` and `VilampForConditionalGeneration`, on a ViLAMP small enough for them: a 4x4 patch grid, so that a
keyframe is 4 tokens and a two-frame video 6.

Skipped tests say why: the skips LLaVA-OneVision's own test makes, with its reasons, and the mixin assumptions that
cannot hold for a model outside the library.
"""

import unittest
from unittest import mock

import torch
from transformers.models.auto import modeling_auto
from transformers_suite import import_common_tests

from vilamp.modeling_vilamp import VilampConfig, VilampForConditionalGeneration, VilampModel


modeling_common = import_common_tests("test_modeling_common")

VIDEO_TOKEN_ID = 1
PAD_TOKEN_ID = 0


class VilampModelTester:
    """Builds the tiny config and a batch: each prompt holds one two-frame video (a keyframe and a merged frame)."""

    def __init__(self, parent, batch_size: int = 3, text_length: int = 7):
        self.parent = parent
        self.batch_size = batch_size
        self.frames_per_video = 2
        self.vision_config = {
            "model_type": "siglip_vision_model",
            "hidden_size": 16,
            "intermediate_size": 24,
            "num_hidden_layers": 2,
            "num_attention_heads": 2,
            "patch_size": 2,
            "image_size": 8,
            "vision_use_head": False,
        }
        self.text_config = {
            "model_type": "qwen2",
            "vocab_size": 99,
            "hidden_size": 32,
            "intermediate_size": 37,
            "num_hidden_layers": 2,
            "num_attention_heads": 4,
            "num_key_value_heads": 2,
            "max_position_embeddings": 512,
            "pad_token_id": PAD_TOKEN_ID,
        }
        # 2x2 pooled tokens for the keyframe, one merged token, one newline.
        self.num_video_tokens = 4 + 1 + 1
        self.seq_length = text_length + self.num_video_tokens
        self.vocab_size = self.text_config["vocab_size"]
        self.hidden_size = self.text_config["hidden_size"]
        self.num_hidden_layers = self.text_config["num_hidden_layers"]
        self.num_attention_heads = self.text_config["num_attention_heads"]
        self.is_training = True

    def get_config(self) -> VilampConfig:
        return VilampConfig(
            vision_config=self.vision_config,
            text_config=self.text_config,
            video_token_id=VIDEO_TOKEN_ID,
            query_embed_dim=8,
        )

    def prepare_config_and_inputs_for_common(self):
        config = self.get_config()
        input_ids = modeling_common.ids_tensor([self.batch_size, self.seq_length], self.vocab_size - 2) + 2
        input_ids[:, 1 : 1 + self.num_video_tokens] = VIDEO_TOKEN_ID
        num_frames = self.batch_size * self.frames_per_video
        inputs = {
            "input_ids": input_ids,
            "attention_mask": torch.ones_like(input_ids),
            "pixel_values_videos": torch.randint(0, 256, (num_frames, 3, 8, 8), dtype=torch.uint8),
            "keyframe_mask": torch.tensor([True, False] * self.batch_size),
            "query_embeds": modeling_common.floats_tensor([self.batch_size, 8]),
            "video_frame_counts": torch.full((self.batch_size,), self.frames_per_video),
        }
        return config, inputs


OUT_OF_TREE_INIT = (
    "re-initialises every weight from the meta device and requires each module's `_init_weights` to come from the "
    "model's own PreTrainedModel or a class inside `transformers.*`; the SigLIP tower's Linear layers are initialised "
    "by SiglipPreTrainedModel, a transformers class, which the check only accepts for models inside the library"
)
SKIPPED_MODEL_TESTS = {
    "test_can_init_all_missing_weights": OUT_OF_TREE_INIT,
    "test_can_load_ignoring_mismatched_shapes": (
        "sets every config field whose name contains `_std` to 1e-10 to turn initialisation off; ViLAMP's "
        "`pixel_std` is the frames' normalisation (a list of 3 floats), not an initialiser setting"
    ),
    "test_multimodal_outputs_are_returned": (
        "asserts on `outputs.image_outputs` only (its FIXME: videos are not covered yet); ViLAMP takes no images, and "
        "its `video_outputs` are checked in test_modeling_vilamp.py"
    ),
    "test_generation_tester_mixin_inheritance": (
        "GenerationTesterMixin is not in transformers' source distribution, the only copy of its tests these tests "
        "can fetch (PyPI); generation is tested in test_modeling_vilamp.py"
    ),
}


class VilampModelTest(modeling_common.ModelTesterMixin, unittest.TestCase):
    all_model_classes = (VilampModel, VilampForConditionalGeneration)
    _is_composite = True

    # `last_hidden_state` of get_video_features is the visual sequence (tokens in the language model's width), not
    # the tower's per-frame states: keeping those for every frame is what ViLAMP avoids (10,000 frames x 729 patches
    # x 1152 in bf16 is 16.8 GB). They are returned as `hidden_states` when asked for.
    skip_test_video_features_output_shape = True

    def setUp(self):
        self.model_tester = VilampModelTester(self)
        # In-library models are listed in transformers' Auto mappings, which the mixin reads to decide which tests
        # apply (no loss for a base model, `pooler_output` per sample for image/video-text-to-text models).
        for mapping, class_name in (
            (modeling_auto.MODEL_MAPPING_NAMES, "VilampModel"),
            (modeling_auto.MODEL_FOR_IMAGE_TEXT_TO_TEXT_MAPPING_NAMES, "VilampForConditionalGeneration"),
        ):
            patcher = mock.patch.dict(mapping, {"vilamp": class_name})
            patcher.start()
            self.addCleanup(patcher.stop)

    def _video_features_prepare_config_and_inputs(self):
        # The mixin keeps only inputs whose names mention videos; ViLAMP's visual sequence also needs each video's
        # keyframes and query.
        config, inputs = self.model_tester.prepare_config_and_inputs_for_common()
        names = ("pixel_values_videos", "keyframe_mask", "query_embeds", "video_frame_counts")
        return config, {name: inputs[name] for name in names}

    def _prepare_for_class(self, inputs_dict, model_class, return_labels=False):
        inputs = super()._prepare_for_class(inputs_dict, model_class, return_labels=return_labels)
        if return_labels and model_class is VilampForConditionalGeneration:
            inputs["labels"] = torch.zeros_like(inputs["input_ids"])
        return inputs


for _name, _reason in SKIPPED_MODEL_TESTS.items():
    setattr(VilampModelTest, _name, unittest.skip(_reason)(lambda self: None))
