"""VilampProcessor: fixture parity of its front end, placeholder expansion, chat template, saving and errors."""

import os

import numpy as np
import pytest
import torch
from transformers import AutoProcessor

from conftest import (
    CLIP_PATH,
    FIXTURE_VIDEO_TOKEN_ID,
    fixture_frame_scorer,
    fixture_model,
    fixture_processor,
    load_fixture,
)
from media import numbered_frames
from vilamp.processing import VilampProcessor, VilampVideoProcessor
from vilamp.processing.video_processing_vilamp import PreparedVideo


QUESTION_PROMPT = "<|im_start|>user\n<video>\n{}<|im_end|>\n<|im_start|>assistant\n"


@pytest.fixture(scope="module")
def heavy_fill():
    return load_fixture("heavy-fill")


def test_scorer_reproduces_fixture_embeddings(parity_case):
    scorer = fixture_frame_scorer(parity_case)
    inputs, outputs = parity_case["inputs"], parity_case["outputs"]
    expected_images = outputs["clip_image_embeds"]
    torch.testing.assert_close(scorer.embed_pixels(inputs["clip_pixel_values"]), expected_images, atol=1e-4, rtol=0)
    torch.testing.assert_close(scorer.preprocess(inputs["frames_uint8"].numpy()), inputs["clip_pixel_values"])
    texts = scorer.embed_queries([parity_case["case"]["query"]])
    torch.testing.assert_close(texts, outputs["clip_text_embeds"], atol=1e-4, rtol=0)
    tokens = scorer.tokenizer([parity_case["case"]["query"]])[0]
    expected_tokens = inputs["clip_input_ids"][0]
    assert tokens[: len(expected_tokens)].tolist() == expected_tokens.tolist()


def test_processor_front_end_matches_original(parity_case):
    processor = fixture_processor(parity_case)
    frames = parity_case["inputs"]["frames_uint8"]
    batch = processor(text=QUESTION_PROMPT.format(parity_case["case"]["query"]), videos=frames)
    outputs = parity_case["outputs"]
    assert batch["keyframe_mask"].long().tolist() == outputs["keyframe_mask"].tolist()
    normalised = (batch["pixel_values_videos"].float() / 255 - 0.5) / 0.5
    assert torch.equal(normalised, parity_case["inputs"]["siglip_pixel_values"])
    torch.testing.assert_close(batch["query_embeds"], outputs["clip_text_embeds"], atol=1e-4, rtol=0)
    torch.testing.assert_close(batch["frame_relevance"], outputs["relevance"], atol=1e-4, rtol=0)
    assert int((batch["input_ids"] == FIXTURE_VIDEO_TOKEN_ID).sum()) == parity_case["case"]["visual_tokens"]


def test_processor_to_model_end_to_end(parity_case):
    """The expanded placeholders take exactly the model's visual sequence, which equals the original's."""
    processor = fixture_processor(parity_case)
    model = fixture_model(parity_case)
    batch = processor(
        text=QUESTION_PROMPT.format(parity_case["case"]["query"]), videos=parity_case["inputs"]["frames_uint8"]
    )
    with torch.no_grad():
        out = model(**batch, output_hidden_states=True)
    placeholders = batch["input_ids"][0] == FIXTURE_VIDEO_TOKEN_ID
    expected_ids = parity_case["inputs"]["input_ids_with_image_index"][0]
    start = int((expected_ids == -200).nonzero()[0])
    expected_visual = parity_case["outputs"]["inputs_embeds"][0, start : start + int(placeholders.sum())]
    torch.testing.assert_close(out.hidden_states[0][0, placeholders], expected_visual, atol=1e-5, rtol=0)
    generated = model.generate(**batch, max_new_tokens=3, do_sample=False, pad_token_id=0)
    assert generated.shape == (1, batch["input_ids"].shape[1] + 3)


def test_real_clip_through_processor(heavy_fill):
    processor = fixture_processor(heavy_fill, num_keyframes=2)
    batch = processor(
        text=QUESTION_PROMPT.format("What is the rabbit doing?"), videos=str(CLIP_PATH), return_metadata=True
    )
    assert batch["pixel_values_videos"].shape == (6, 3, 54, 54)
    assert batch["video_metadata"][0].timestamps == [0.0, 1.0, 2.0, 3.0, 4.0, 5.0]
    assert int(batch["keyframe_mask"].sum()) == 2
    assert batch["video_frame_counts"].tolist() == [6]
    assert int((batch["input_ids"] == FIXTURE_VIDEO_TOKEN_ID).sum()) == 196 * 2 + 4 + 1


def test_chat_template_and_apply_chat_template(heavy_fill):
    processor = fixture_processor(heavy_fill, num_keyframes=2)
    messages = [
        {"role": "user", "content": [{"type": "video", "path": str(CLIP_PATH)}, {"type": "text", "text": "Why?"}]}
    ]
    prompt = processor.apply_chat_template(messages, add_generation_prompt=True)
    assert prompt == (
        "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n"
        "<|im_start|>user\n<video>\nWhy?<|im_end|>\n<|im_start|>assistant\n"
    )
    batch = processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=True, return_dict=True)
    direct = processor(text=prompt, videos=str(CLIP_PATH), query="Why?")
    for key in ("input_ids", "keyframe_mask", "query_embeds", "pixel_values_videos"):
        assert torch.equal(batch[key], direct[key]), key


def test_query_is_taken_from_the_user_words(heavy_fill):
    processor = fixture_processor(heavy_fill)
    frames = np.zeros((3, 48, 64, 3), dtype=np.uint8)
    prompt = "<|im_start|>system\nBe brief.<|im_end|>\n" + QUESTION_PROMPT.format("Where is the cup?")
    implicit = processor(text=prompt, videos=frames)
    explicit = processor(text=prompt, videos=frames, query="Where is the cup?")
    assert torch.equal(implicit["query_embeds"], explicit["query_embeds"])


def test_batch_of_prompts_and_videos(heavy_fill):
    processor = fixture_processor(heavy_fill)
    frames = heavy_fill["inputs"]["frames_uint8"]
    batch = processor(
        text=[QUESTION_PROMPT.format("A?"), QUESTION_PROMPT.format("B?")], videos=[frames[:5], frames[10:30]]
    )
    assert batch["video_frame_counts"].tolist() == [5, 20]
    assert batch["pixel_values_videos"].shape[0] == 25
    assert batch["query_embeds"].shape == (2, 16)
    counts = (batch["input_ids"] == FIXTURE_VIDEO_TOKEN_ID).sum(1).tolist()
    assert counts == [196 * 5 + 1, 196 * 8 + 12 + 1]


def test_short_video_selects_every_frame(heavy_fill):
    processor = fixture_processor(heavy_fill)
    batch = processor(text=QUESTION_PROMPT.format("Q?"), videos=heavy_fill["inputs"]["frames_uint8"][:3])
    assert batch["keyframe_mask"].all()


@pytest.mark.parametrize(
    ("text", "videos", "error", "message"),
    [
        ("no placeholder here", np.zeros((2, 8, 8, 3), np.uint8), ValueError, "0 <video> placeholders"),
        ("<video> twice <video>", np.zeros((2, 8, 8, 3), np.uint8), ValueError, "2 <video> placeholders"),
        ("<video> What?", None, ValueError, "1 <video> placeholders"),
        ("<video> What?", "/nonexistent/clip.mp4", FileNotFoundError, "/nonexistent/clip.mp4"),
        ("<video> What?", np.zeros((0, 8, 8, 3), np.uint8), ValueError, "zero frames"),
        ("<video>", np.zeros((2, 8, 8, 3), np.uint8), ValueError, "No question found"),
    ],
)
def test_bad_inputs(heavy_fill, text, videos, error, message):
    processor = fixture_processor(heavy_fill)
    with pytest.raises(error, match=message):
        processor(text=text, videos=videos)


def test_save_load_round_trip(heavy_fill, tmp_path):
    processor = fixture_processor(heavy_fill)
    processor.save_pretrained(tmp_path)
    files = set(os.listdir(tmp_path))
    assert {"frame_scorer.safetensors", "frame_scorer_config.json", "processor_config.json", "tokenizer.json"} <= files
    assert not any(name.endswith((".bin", ".pt", ".pkl")) for name in files)
    loaded = AutoProcessor.from_pretrained(tmp_path)
    assert isinstance(loaded, VilampProcessor)
    assert loaded.num_keyframes == processor.num_keyframes and loaded.video_processor.image_size == 54
    frames = heavy_fill["inputs"]["frames_uint8"]
    first, second = (
        processor(text=QUESTION_PROMPT.format("Q?"), videos=frames),
        loaded(text=QUESTION_PROMPT.format("Q?"), videos=frames),
    )
    assert first.keys() == second.keys()
    for key in first:
        assert same_output(first[key], second[key]), key


def test_clip_preprocessing_equals_transformers_clip_processor_on_any_size(heavy_fill):
    """
    The scorer crops what transformers' CLIPProcessor (the original's preprocessing) crops, on every frame size,
    small squares included (49x49 once came out as one column repeated).
    """
    from transformers.models.clip.image_processing_pil_clip import CLIPImageProcessorPil

    scorer = fixture_frame_scorer(heavy_fill)
    size = scorer.image_size
    reference = CLIPImageProcessorPil(size={"shortest_edge": size}, crop_size={"height": size, "width": size})
    rng = np.random.default_rng(0)
    for height in [*range(1, 70), 110, 111, 225, 360]:
        for width in (1, 2, 3, height, height + 1, 49, 55, 110, 640):
            frame = rng.integers(0, 256, (1, height, width, 3), dtype=np.uint8)
            expected = reference(list(frame), return_tensors="np", input_data_format="channels_last")
            got = scorer.preprocess(frame)
            assert torch.equal(got, torch.from_numpy(expected["pixel_values"])), (height, width)


# --- transformers' conventions: standard kwargs, the video processor, token counts -------------------------------


def test_standard_text_kwargs_reach_the_tokenizer(heavy_fill_processor):
    frames = numbered_frames(3, 16, 16)
    prompts = [QUESTION_PROMPT.format("Q?"), QUESTION_PROMPT.format("A much longer question about the clip?")]
    right = heavy_fill_processor(text=prompts, videos=[frames, frames], padding=True)
    left = heavy_fill_processor(text=prompts, videos=[frames, frames], padding=True, padding_side="left")
    assert right["input_ids"].shape == left["input_ids"].shape
    assert right["attention_mask"][0, -1] == 0 and left["attention_mask"][0, 0] == 0  # the short prompt is padded
    longest = heavy_fill_processor(text=prompts, videos=[frames, frames], padding="max_length", max_length=700)
    assert longest["input_ids"].shape == (2, 700)
    # Truncation would cut visual placeholders: transformers' processor refuses, naming the mismatch.
    with pytest.raises(ValueError, match="Mismatch in `video` token count"):
        heavy_fill_processor(text=prompts[0], videos=frames, truncation=True, max_length=50)
    as_lists = heavy_fill_processor(text=prompts[0], videos=frames, return_tensors=None)
    assert isinstance(as_lists["input_ids"], list)


def test_apply_chat_template_on_a_batch_with_padding(heavy_fill_processor):
    conversations = [
        [{"role": "user", "content": [{"type": "video", "path": str(CLIP_PATH)}, {"type": "text", "text": text}]}]
        for text in ("Why?", "What does the rabbit do after he wakes up?")
    ]
    batch = heavy_fill_processor.apply_chat_template(
        conversations, add_generation_prompt=True, tokenize=True, return_dict=True, padding=True, num_keyframes=2
    )
    assert batch["input_ids"].shape[0] == 2 and batch["video_frame_counts"].tolist() == [6, 6]
    assert (batch["input_ids"] == FIXTURE_VIDEO_TOKEN_ID).sum(1).tolist() == [196 * 2 + 4 + 1] * 2


def test_num_frames_samples_uniformly_and_excludes_fps(heavy_fill_processor):
    batch = heavy_fill_processor(
        text=QUESTION_PROMPT.format("Q?"), videos=str(CLIP_PATH), num_frames=4, return_metadata=True
    )
    # transformers' rule: arange(4) * 132 // 4 of the clip's 132 frames at 25 fps.
    assert batch["video_metadata"][0].timestamps == [0.0, 33 / 25, 66 / 25, 99 / 25]
    with pytest.raises(ValueError, match="`num_frames` and `fps` are mutually exclusive"):
        heavy_fill_processor(text=QUESTION_PROMPT.format("Q?"), videos=str(CLIP_PATH), num_frames=4, fps=2.0)
    with pytest.raises(ValueError, match="`num_frames`=500 is more than the video's 132 frames"):
        heavy_fill_processor(text=QUESTION_PROMPT.format("Q?"), videos=str(CLIP_PATH), num_frames=500)


def test_video_kwargs_reach_the_video_processor_flat_nested_and_from_its_defaults(heavy_fill):
    """What transformers' kwargs tests check with `do_rescale` (refused here), checked with `num_frames`."""
    frames = numbered_frames(12, 16, 16)
    prompts = [QUESTION_PROMPT.format("Q?")] * 2

    def frame_counts(processor, **kwargs) -> list[int]:
        return processor(text=prompts, videos=[frames, frames], **kwargs)["video_frame_counts"].tolist()

    defaults_to_five = fixture_processor(
        heavy_fill, video_processor=VilampVideoProcessor(size={"height": 54, "width": 54}, num_frames=5)
    )
    assert frame_counts(defaults_to_five) == [5, 5]
    assert frame_counts(defaults_to_five, text_kwargs={"padding": "max_length", "max_length": 900}) == [5, 5]
    assert frame_counts(defaults_to_five, num_frames=3) == [3, 3]
    assert frame_counts(defaults_to_five, videos_kwargs={"num_frames": 4}) == [4, 4]
    nested = frame_counts(defaults_to_five, common_kwargs={"return_tensors": "pt"}, videos_kwargs={"num_frames": 2})
    assert nested == [2, 2]


def test_mm_token_type_ids_mark_the_video_placeholders(heavy_fill_processor):
    batch = heavy_fill_processor(
        text=QUESTION_PROMPT.format("Q?"), videos=numbered_frames(3, 16, 16), return_mm_token_type_ids=True
    )
    expected = (batch["input_ids"] == FIXTURE_VIDEO_TOKEN_ID).long() * 2
    assert torch.equal(torch.as_tensor(batch["mm_token_type_ids"]), expected)


def test_num_multimodal_tokens_match_the_expanded_prompt(heavy_fill_processor):
    counts = heavy_fill_processor._get_num_multimodal_tokens(video_sizes=[(3, 48, 64), (60, 48, 64)])
    assert counts.num_video_tokens == [196 * 3 + 1, 196 * 8 + 52 + 1]
    batch = heavy_fill_processor(text=QUESTION_PROMPT.format("Q?"), videos=numbered_frames(60, 16, 16))
    assert int((batch["input_ids"] == FIXTURE_VIDEO_TOKEN_ID).sum()) == counts.num_video_tokens[1]


def test_video_processor_on_its_own(heavy_fill_processor, tmp_path):
    from transformers import AutoVideoProcessor

    heavy_fill_processor.save_pretrained(tmp_path)
    assert (tmp_path / "video_preprocessor_config.json").is_file()
    video_processor = AutoVideoProcessor.from_pretrained(tmp_path)
    assert isinstance(video_processor, VilampVideoProcessor) and video_processor.image_size == 54
    out = video_processor(str(CLIP_PATH), return_tensors="pt", return_metadata=True)
    assert out["pixel_values_videos"].shape == (1, 6, 3, 54, 54) and out["pixel_values_videos"].dtype == torch.uint8
    metadata = out["video_metadata"][0]
    assert (metadata.total_num_frames, metadata.fps, metadata.width, metadata.height) == (132, 25.0, 1280, 720)
    assert metadata.frames_indices == [0, 25, 50, 75, 100, 125] and metadata.timestamps == [0, 1, 2, 3, 4, 5]
    # The same pixels as the whole processor gives the model.
    batch = heavy_fill_processor(text=QUESTION_PROMPT.format("Q?"), videos=str(CLIP_PATH))
    assert torch.equal(out["pixel_values_videos"][0], batch["pixel_values_videos"])
    two = video_processor([str(CLIP_PATH), numbered_frames(4, 16, 16)], num_frames=3)
    assert [video.shape[0] for video in two["pixel_values_videos"]] == [3, 3]


def test_frames_in_memory_take_their_rate_from_video_metadata(heavy_fill_processor):
    """Decoded frames are no longer assumed to be 1 fps: `video_metadata` says their rate."""
    frames = numbered_frames(60, 16, 16)
    at_25_fps = heavy_fill_processor(
        text=QUESTION_PROMPT.format("Q?"),
        videos=frames,
        video_metadata={"fps": 25.0, "total_num_frames": 60},
        return_metadata=True,
    )
    assert at_25_fps["video_frame_counts"].tolist() == [3]  # frames 0, 25 and 50: one a second
    assert at_25_fps["video_metadata"][0].timestamps == [0.0, 1.0, 2.0]
    assert heavy_fill_processor(text=QUESTION_PROMPT.format("Q?"), videos=frames)["video_frame_counts"].tolist() == [
        60
    ]


def test_video_processor_refuses_settings_that_would_change_the_uint8_frames(heavy_fill_processor):
    """
    Frames leave RGB, tower-sized and uint8 (the model normalises them with its config's pixel_mean/pixel_std: no
    second owner in the processor); a setting that would change them is refused by name, in both entry points.
    """
    frames = numbered_frames(3, 20, 30)
    pixels = heavy_fill_processor.video_processor(frames, return_tensors="pt")["pixel_values_videos"]
    assert pixels.dtype == torch.uint8
    for flag, value, message in (
        ("do_resize", False, "cannot be turned off"),
        ("do_convert_rgb", False, "cannot be turned off"),
        ("do_rescale", True, "cannot be turned on"),
        ("do_normalize", True, "cannot be turned on"),
    ):
        with pytest.raises(ValueError, match=message):
            heavy_fill_processor.video_processor(frames, **{flag: value})
        with pytest.raises(ValueError, match=message):
            heavy_fill_processor(text=QUESTION_PROMPT.format("Q?"), videos=frames, **{flag: value})
    # transformers settings ViLAMP's frames cannot vary: refused by name, not dropped; the processor's own values pass.
    assert torch.equal(
        heavy_fill_processor.video_processor(frames, size={"height": 54, "width": 54})["pixel_values_videos"][0],
        pixels[0],
    )
    for name, value in (
        ("size", {"height": 32, "width": 32}),
        ("resample", 0),
        ("do_center_crop", True),
        ("data_format", "channels_last"),
        ("device", "cuda"),
    ):
        with pytest.raises(ValueError, match=rf"\['{name}'\] cannot be changed per call"):
            heavy_fill_processor.video_processor(frames, **{name: value})
        with pytest.raises(ValueError, match=rf"\['{name}'\] cannot be changed per call"):
            heavy_fill_processor(text=QUESTION_PROMPT.format("Q?"), videos=frames, **{name: value})


def test_chat_template_marks_the_assistants_words_for_assistant_masks():
    """The released conversation text, and `return_assistant_tokens_mask` selecting each answer with its <|im_end|>."""
    from vilamp.tiny import tiny_model_and_processor

    _, processor = tiny_model_and_processor()
    messages = [
        {"role": "user", "content": [{"type": "video"}, {"type": "text", "text": "What happens?"}]},
        {"role": "assistant", "content": "A bunny."},
        {"role": "user", "content": "Day?"},
        {"role": "assistant", "content": [{"type": "text", "text": "Yes."}]},
    ]
    assert processor.apply_chat_template(messages, tokenize=False) == (
        "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n"
        "<|im_start|>user\n<video>\nWhat happens?<|im_end|>\n<|im_start|>assistant\nA bunny.<|im_end|>\n"
        "<|im_start|>user\nDay?<|im_end|>\n<|im_start|>assistant\nYes.<|im_end|>\n"
    )
    tokenizer = processor.tokenizer
    encoded = tokenizer.apply_chat_template(
        messages, chat_template=processor.chat_template, return_dict=True, return_assistant_tokens_mask=True
    )
    marked = [token for token, mask in zip(encoded["input_ids"], encoded["assistant_masks"], strict=True) if mask]
    assert tokenizer.decode(marked) == "A bunny.<|im_end|>Yes.<|im_end|>"


def returns_prepared_videos_only(processor):
    """The video processor's `process_video`, failing the test if it is asked to decode anything."""
    process_video = processor.video_processor.process_video

    def prepared_only(video, *args, **kwargs):
        assert isinstance(video, PreparedVideo), f"decoded again: {video!r:.100}"
        return process_video(video, *args, **kwargs)

    return prepared_only


def same_output(first, second) -> bool:
    """Equal processor outputs: tensors element for element, `video_keys` (a list of strings) as lists."""
    return torch.equal(first, second) if isinstance(first, torch.Tensor) else first == second


def test_a_prepared_video_answers_new_questions_as_a_fresh_call_does(heavy_fill_processor, monkeypatch):
    """The video-only step runs once; each question's inputs equal those of a call that decodes the video anew."""
    processor = heavy_fill_processor
    prepared = processor.prepare_video(str(CLIP_PATH))

    def inputs_for(video: dict, question: str):
        messages = [{"role": "user", "content": [video, {"type": "text", "text": question}]}]
        return processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=True, return_dict=True)

    for question in ("What is the rabbit doing?", "Is it day or night?"):
        fresh = inputs_for({"type": "video", "path": str(CLIP_PATH)}, question)
        with monkeypatch.context() as patch:
            patch.setattr(processor.video_processor, "process_video", returns_prepared_videos_only(processor))
            reused = inputs_for({"type": "video", "video": prepared}, question)
        assert reused.keys() == fresh.keys()
        for key in fresh:
            assert same_output(reused[key], fresh[key]), key


def test_model_input_names_are_what_the_processor_returns_and_the_model_takes(heavy_fill_processor):
    import inspect

    from vilamp.modeling_vilamp import VilampForConditionalGeneration

    batch = heavy_fill_processor(text=QUESTION_PROMPT.format("Q?"), videos=str(CLIP_PATH))
    assert list(batch.keys()) == heavy_fill_processor.model_input_names
    assert set(heavy_fill_processor.model_input_names) <= set(
        inspect.signature(VilampForConditionalGeneration.forward).parameters
    )


def test_metadata_names_the_keyframes_chosen_for_relevance(heavy_fill_processor):
    processor = heavy_fill_processor
    prepared = processor.prepare_video(str(CLIP_PATH))
    inputs = processor(text=QUESTION_PROMPT.format("What is the rabbit doing?"), videos=prepared, return_metadata=True)
    chosen = inputs["video_metadata"][0].relevance_keyframes
    keyframes = inputs["keyframe_mask"].nonzero()[:, 0].tolist()
    # Greedy selection starts from the most relevant frame; what it leaves of K, gap filling takes.
    assert chosen and set(chosen) <= set(keyframes)
    assert int(inputs["frame_relevance"].argmax()) in chosen
    assert len(keyframes) == min(processor.num_keyframes, len(prepared.frames))
    assert prepared.metadata.relevance_keyframes is None  # the question's copy, not the prepared video's own


def test_prepared_videos_keep_the_most_recent_and_start_empty_in_another_process(tmp_path):
    import pickle

    from vilamp.processing import PreparedVideos, file_identity

    made = []

    def prepare(name):
        def make():
            made.append(name)
            return name.upper()  # stands in for a PreparedVideo

        return make

    settings = {"max_frames": 600}
    videos = PreparedVideos(max_videos=2)
    got = [videos.get(name, settings, prepare(name)) for name in ("a", "b", "a", "c", "b")]
    assert got == ["A", "B", "A", "C", "B"]
    assert made == ["a", "b", "c", "b"]  # "b" was the least recently used when "c" came
    videos.get("b", {"max_frames": 60}, prepare("b"))  # other settings keep other frames: prepared again
    assert made[-1] == "b" and len(made) == 5
    copy = pickle.loads(pickle.dumps(videos))  # as a DataLoader worker gets it
    assert len(copy) == 0 and copy.max_videos == 2 and copy.get("a", settings, prepare("a")) == "A"
    none_kept = PreparedVideos(max_videos=0)
    none_kept.get("a", settings, prepare("a")), none_kept.get("a", settings, prepare("a"))
    assert made[-2:] == ["a", "a"] and len(none_kept) == 0
    with pytest.raises(ValueError, match="`max_videos` must be a non-negative integer, got -1"):
        PreparedVideos(max_videos=-1)

    path = tmp_path / "clip.mp4"
    path.write_bytes(b"one")
    first = file_identity(path)
    path.write_bytes(b"other")
    assert file_identity(path) != first and file_identity(path)[0] == str(path.resolve())
    with pytest.raises(FileNotFoundError, match=f"no such video file: {tmp_path / 'gone.mp4'}"):
        file_identity(tmp_path / "gone.mp4")
