"""
transformers' own processor and video-processor test suites (`ProcessorTesterMixin`, `VideoProcessingTestMixin` of
the installed release, see transformers_suite.py) run against `VilampProcessor` and `VilampVideoProcessor`.

Skipped tests say why: each is a mixin assumption that cannot hold for ViLAMP, or needs files from the Hugging Face
Hub, which these tests cannot reach.
"""

import unittest

from transformers_suite import import_common_tests

from conftest import fixture_frame_scorer, fixture_tokenizer, load_fixture
from vilamp.processing import VilampProcessor, VilampVideoProcessor


processing_common = import_common_tests("test_processing_common")
video_processing_common = import_common_tests("test_video_processing_common")

NEEDS_THE_HUB = "downloads its sample videos from the Hugging Face Hub, which these tests cannot reach"
TAKES_NO_IMAGES = (
    "passes images (or every modality its signature names) to the processor; ViLAMP takes videos only and refuses "
    "images with an error rather than dropping them"
)
REFUSES_RESCALING = (
    "observes kwargs routing through `do_rescale=True, rescale_factor=-1`; ViLAMP refuses `do_rescale` because its "
    "frames stay uint8 and the model normalises them with its config's `pixel_mean`/`pixel_std` (one owner); the "
    "routing of video kwargs is tested in test_processing_vilamp.py"
)
SKIPPED_PROCESSOR_TESTS = {
    "test_kwargs_overrides_default_subprocessor_kwargs_1_videos": REFUSES_RESCALING,
    "test_structured_kwargs_nested_from_dict_1_videos": REFUSES_RESCALING,
    "test_unstructured_kwargs_batched_1_videos": REFUSES_RESCALING,
    "test_subprocessor_defaults_preserved_by_kwargs_1_videos": REFUSES_RESCALING,
    "test_unstructured_kwargs_1_videos": REFUSES_RESCALING,
    "test_apply_chat_template_video_0": NEEDS_THE_HUB,
    "test_apply_chat_template_video_1": NEEDS_THE_HUB,
    "test_apply_chat_template_video_frame_sampling": NEEDS_THE_HUB,
    "test_model_input_names": TAKES_NO_IMAGES,
    "test_flat_kwarg_applied_when_modality_dict_lacks_it": TAKES_NO_IMAGES,
    "test_get_num_multimodal_tokens_matches_processor_call": TAKES_NO_IMAGES,
    "test_apply_chat_template_decoded_video_0": (
        "counts one entry of pixel_values_videos per video unless the output has `num_frames_per_video`; ViLAMP "
        "concatenates the frames of all videos and counts them in `video_frame_counts`"
    ),
    "test_processor_to_json_string": (
        "expects every constructor argument in processor_config.json; the frame scorer (CLIP weights) is saved in "
        "its own files, frame_scorer.safetensors and frame_scorer_config.json"
    ),
    "test_processor_from_and_save_pretrained": (
        "compares to_dict() before and after saving; ViLAMP's processor is registered for trust_remote_code, so "
        "the saved copy also carries an auto_map (the round trip is checked in test_processing_vilamp.py)"
    ),
    "test_processor_from_and_save_pretrained_as_nested_dict": (
        "compares to_dict() before and after saving; the saved copy also carries an auto_map (trust_remote_code)"
    ),
    "test_init_arguments_not_in_processor_kwargs": (
        "`num_keyframes` is the processor's K, saved with it, and also a per-call override (the released "
        "evaluation varies K); the test forbids an __init__ argument that is also a call keyword"
    ),
}
SKIPPED_VIDEO_PROCESSOR_TESTS = {
    "test_video_processor_from_dict_with_kwargs": (
        "expects `shortest_edge` sizes and a centre crop; ViLAMP's frames are squares of the tower's size, "
        "resized without keeping the aspect and never cropped"
    ),
    "test_call_sample_frames": (
        "expects transformers' uniform fps sampling (8 frames at 4 fps asked for 3 fps: 6); ViLAMP keeps the "
        "released rule, every int(native_fps / fps)-th frame (all 8), for parity with the released model"
    ),
}


def skip_listed(test_class, reasons: dict[str, str]):
    """Marks the listed tests of `test_class` as skipped, each with its reason."""
    for name, reason in reasons.items():
        setattr(test_class, name, unittest.skip(reason)(getattr(test_class, name)))
    return test_class


class VilampProcessorTest(processing_common.ProcessorTesterMixin, unittest.TestCase):
    processor_class = VilampProcessor
    # The mixin's 8-frame video alone takes 2 keyframes x 196 + 6 + 1 = 399 placeholder tokens.
    videos_text_kwargs_max_length = 467
    videos_text_kwargs_override_max_length = 462
    videos_unstructured_max_length = 476

    @classmethod
    def _setup_tokenizer(cls):
        return fixture_tokenizer(load_fixture("heavy-fill"))

    @classmethod
    def _setup_video_processor(cls):
        return VilampVideoProcessor(size={"height": 54, "width": 54})

    @staticmethod
    def prepare_processor_dict():
        return {"frame_scorer": fixture_frame_scorer(load_fixture("heavy-fill")), "num_keyframes": 2}


skip_listed(VilampProcessorTest, SKIPPED_PROCESSOR_TESTS)


class VilampVideoProcessorTester:
    """What `VideoProcessingTestMixin` asks of a tester: small random videos and the shapes they must come out in."""

    def __init__(self, batch_size=3, num_frames=8, num_channels=3, min_resolution=30, max_resolution=80, size=54):
        self.batch_size, self.num_frames, self.num_channels = batch_size, num_frames, num_channels
        self.min_resolution, self.max_resolution, self.size = min_resolution, max_resolution, size

    def prepare_video_processor_dict(self) -> dict:
        return {"size": {"height": self.size, "width": self.size}, "do_sample_frames": False}

    def expected_output_video_shape(self, videos) -> list[int]:
        return [self.num_frames, 3, self.size, self.size]

    def prepare_video_inputs(self, equal_resolution=False, return_tensors="pil"):
        return video_processing_common.prepare_video_inputs(
            batch_size=self.batch_size,
            num_frames=self.num_frames,
            num_channels=self.num_channels,
            min_resolution=self.min_resolution,
            max_resolution=self.max_resolution,
            equal_resolution=equal_resolution,
            return_tensors=return_tensors,
        )


class VilampVideoProcessingTest(video_processing_common.VideoProcessingTestMixin, unittest.TestCase):
    fast_video_processing_class = VilampVideoProcessor
    input_name = "pixel_values_videos"

    def setUp(self):
        super().setUp()
        self.video_processor_tester = VilampVideoProcessorTester()

    @property
    def video_processor_dict(self):
        return self.video_processor_tester.prepare_video_processor_dict()


skip_listed(VilampVideoProcessingTest, SKIPPED_VIDEO_PROCESSOR_TESTS)
