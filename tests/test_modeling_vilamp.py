"""VilampForConditionalGeneration: parity with the original, the visual sequence, generation, batching, loading."""

import os
import weakref

import numpy as np
import pytest
import torch
from torch.nn import functional as F
from transformers import (
    AutoConfig,
    AutoModel,
    AutoModelForImageTextToText,
    LlavaOnevisionConfig,
    LlavaOnevisionForConditionalGeneration,
    StaticCache,
)

from conftest import (
    CLIP_PATH,
    FIXTURE_VIDEO_TOKEN_ID,
    fixture_model,
    fixture_processor,
    load_fixture,
    tiny_config,
    tiny_model,
    video_training_batch,
)
from vilamp.conversion.verify_conversion import expand_image_index
from vilamp.modeling_vilamp import VilampConfig, VilampForConditionalGeneration, VilampModel
from vilamp.modeling_vilamp.modeling_vilamp import context_frames
from vilamp.processing import num_visual_tokens


VIDEO_ID = FIXTURE_VIDEO_TOKEN_ID


def random_video(num_frames: int, seed: int = 0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (num_frames, 3, 54, 54), dtype=torch.uint8, generator=generator)


def mask_from(indices, num_frames: int) -> torch.Tensor:
    mask = torch.zeros(num_frames, dtype=torch.bool)
    mask[list(indices)] = True
    return mask


def prompt_ids(num_placeholders: int, prefix=(5, 6, 7), suffix=(8, 9)) -> torch.Tensor:
    return torch.tensor([[*prefix, *([VIDEO_ID] * num_placeholders), *suffix]])


# --- parity with the original implementation -------------------------------------------------------------------


def run_fixture(parity_case):
    model = fixture_model(parity_case)
    outputs = parity_case["outputs"]
    keyframe_mask = outputs["keyframe_mask"].bool()
    num_tokens = num_visual_tokens(keyframe_mask.shape[0], int(keyframe_mask.sum()), model.model.tokens_per_keyframe)
    inputs = {
        "input_ids": expand_image_index(parity_case["inputs"]["input_ids_with_image_index"], num_tokens, VIDEO_ID),
        "pixel_values_videos": parity_case["inputs"]["siglip_pixel_values"],
        "keyframe_mask": keyframe_mask,
        "query_embeds": outputs["clip_text_embeds"],
    }
    return model, inputs, num_tokens


def test_fixture_inputs_embeds_and_logits_match_original(parity_case):
    model, inputs, num_tokens = run_fixture(parity_case)
    assert num_tokens == parity_case["case"]["visual_tokens"]
    with torch.no_grad():
        out = model(**inputs, output_hidden_states=True)
    expected = parity_case["outputs"]
    assert out.hidden_states[0].shape == expected["inputs_embeds"].shape
    # Measured: 1.2e-7 and 1.1e-6 at most; a merged token differs from a plain patch mean by 2.9e-4 or more.
    torch.testing.assert_close(out.hidden_states[0], expected["inputs_embeds"], atol=1e-5, rtol=0)
    torch.testing.assert_close(out.logits, expected["logits"], atol=1e-5, rtol=0)


def test_fixture_greedy_tokens_match_original(parity_case):
    model, inputs, _ = run_fixture(parity_case)
    generated = model.generate(**inputs, max_new_tokens=5, do_sample=False, pad_token_id=0)
    assert generated[:, inputs["input_ids"].shape[1] :].tolist() == parity_case["outputs"]["generated_ids"].tolist()


def test_all_keyframes_equals_llava_onevision_video_path():
    model = tiny_model(seed=1)
    config = model.config
    onevision_config = LlavaOnevisionConfig(
        vision_config=config.vision_config.to_dict(),
        text_config=config.text_config.to_dict(),
        video_token_id=VIDEO_ID,
        image_token_id=VIDEO_ID - 1,
        vision_feature_layer=-1,
        vision_feature_select_strategy="full",
    )
    onevision = LlavaOnevisionForConditionalGeneration(onevision_config).eval()
    state = {k: v for k, v in model.state_dict().items() if "feature_merger" not in k}
    missing, unexpected = onevision.load_state_dict(state, strict=False)
    assert set(missing) == {"model.vision_tower.post_layernorm.weight", "model.vision_tower.post_layernorm.bias"}
    assert unexpected == []

    frames = random_video(3, seed=2)
    pixel_values = (frames.float() / 255 - 0.5) / 0.5
    num_tokens = num_visual_tokens(3, 3, model.model.tokens_per_keyframe)
    input_ids = prompt_ids(num_tokens)
    with torch.no_grad():
        ours = model(
            input_ids=input_ids,
            pixel_values_videos=frames,
            keyframe_mask=torch.ones(3, dtype=torch.bool),
            query_embeds=torch.randn(1, 16),
        ).logits
        theirs = onevision(input_ids=input_ids, pixel_values_videos=pixel_values[None]).logits
    torch.testing.assert_close(ours, theirs, atol=1e-5, rtol=0)


# --- the visual sequence ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("rule", "expected_context"),
    [
        # keyframes at 2 and 5: frames 0, 1 come before any keyframe and are their own context.
        ("released", [0, 1, 2, 0, 0, 5, 1, 1]),
        ("preceding_keyframe", [0, 1, 2, 2, 2, 5, 5, 5]),
    ],
)
def test_context_rules(rule, expected_context):
    context = context_frames(mask_from([2, 5], 8), rule)
    non_key = [0, 1, 3, 4, 6, 7]
    assert context[non_key].tolist() == [expected_context[i] for i in non_key]


def reference_merge(x, context, query, merger):
    """Reference section 3 written out patch by patch, with explicit norms."""

    def cos(a, b):
        return (a * b).sum(-1) / (a.norm(dim=-1) * b.norm(dim=-1))

    q = merger.query_proj(query)
    relevance = torch.stack([cos(q, merger.patch_query_proj(x[p])) for p in range(x.shape[0])])
    redundancy = torch.stack(
        [cos(merger.context_proj(context[p]), merger.patch_context_proj(x[p])) for p in range(x.shape[0])]
    )
    weights = torch.exp((relevance - redundancy) / merger.temperature)
    weights = weights / weights.sum()
    return (weights[:, None] * x).sum(0)


@pytest.mark.parametrize("rule", ["released", "preceding_keyframe"])
def test_dfm_tokens_follow_reference_formula(rule):
    model = tiny_model(seed=3, dfm_context=rule)
    frames = random_video(8, seed=4)
    keyframes = [2, 5]
    query = torch.randn(1, 16)
    with torch.no_grad():
        sequence = model.get_video_features(frames, mask_from(keyframes, 8), query).last_hidden_state
        features, _ = model.model.encode_frames(frames)  # every frame's 729 projected patches, unchunked
        merger = model.model.feature_merger
        context_of = {"released": {3: 0, 4: 0, 6: 1, 7: 1}, "preceding_keyframe": {3: 2, 4: 2, 6: 5, 7: 5}}[rule]
        context_of.update({0: 0, 1: 1})
        pooled = F.interpolate(features.view(8, 27, 27, -1).permute(0, 3, 1, 2), size=(14, 14), mode="bilinear")
        pooled = pooled.permute(0, 2, 3, 1).reshape(8, 196, -1)
        expected = []
        for frame in range(8):
            if frame in keyframes:
                expected.append(pooled[frame])
            else:
                expected.append(reference_merge(features[frame], features[context_of[frame]], query[0], merger)[None])
        expected.append(model.model.image_newline[None])
        expected = torch.cat(expected)
    assert sequence.shape == (196 * 2 + 6 + 1, 64)
    torch.testing.assert_close(sequence, expected, atol=1e-5, rtol=1e-4)


def test_dfm_weights_favour_relevant_and_novel_patches():
    """With identity projections, the merged token leans to the patch that is like the query and unlike the context."""
    config = tiny_config(query_embed_dim=64)
    model = VilampForConditionalGeneration(config).eval()
    merger = model.model.feature_merger
    with torch.no_grad():
        for linear in (merger.patch_query_proj, merger.patch_context_proj, merger.query_proj, merger.context_proj):
            linear.weight.copy_(torch.eye(64))
            linear.bias.zero_()
        merger.temperature.fill_(0.01)
    basis = torch.eye(64)
    patches = torch.stack([basis[0], basis[1], basis[2]])[None]  # patch 0 = query, patch 1 = context, patch 2 = other
    context = torch.stack([basis[3], basis[1], basis[3]])[None]
    with torch.no_grad():
        token = merger(patches, merger.context_proj(context), merger.query_proj(basis[0][None]))
    assert token[0, 0] > 0.99 and token[0, 1] < 1e-6


@pytest.mark.parametrize(("num_frames", "keyframes"), [(1, [0]), (5, [0, 4]), (12, [3, 4, 5, 11]), (7, [])])
def test_visual_token_count(num_frames, keyframes):
    model = tiny_model(seed=5)
    with torch.no_grad():
        sequence = model.get_video_features(
            random_video(num_frames), mask_from(keyframes, num_frames), torch.randn(1, 16)
        ).last_hidden_state
    k = len(keyframes)
    assert (
        sequence.shape[0]
        == 196 * k + (num_frames - k) + 1
        == num_visual_tokens(num_frames, k, model.model.tokens_per_keyframe)
    )


def test_released_7b_token_arithmetic():
    # The paper's figure: 10,000 frames with 32 keyframes are 16,241 visual tokens in the released 7B model.
    with torch.device("meta"):
        model = VilampModel(VilampConfig())
    assert num_visual_tokens(10_000, 32, model.tokens_per_keyframe) == 16_241


@pytest.mark.parametrize("chunk_size", [1, 3, 64])
def test_chunked_encoding_equals_unchunked(chunk_size):
    frames, mask, query = random_video(10, seed=6), mask_from([1, 4, 8], 10), torch.randn(1, 16)
    with torch.no_grad():
        whole = tiny_model(seed=7, vision_chunk_size=10).get_video_features(frames, mask, query)
        chunked = tiny_model(seed=7, vision_chunk_size=chunk_size).get_video_features(frames, mask, query)
    torch.testing.assert_close(chunked.last_hidden_state, whole.last_hidden_state, atol=1e-5, rtol=0)


@pytest.mark.parametrize(
    ("rule", "shared"),
    [
        # Video 0 (8 frames, keyframe 3): frames 0-2 are their own context, 4-7 read frame 0 (released) or 3.
        # Video 1 (5 frames, keyframes 0 and 2): frames 1 and 3, 4 read frames 0 and 1 (released) or 0 and 2.
        ("released", [1, 2]),
        ("preceding_keyframe", [1, 2]),
    ],
)
def test_vision_chunk_sizes_are_the_towers_runs(rule, shared):
    model = tiny_model(seed=7, vision_chunk_size=3, dfm_context=rule)
    frames, mask = random_video(13, seed=6), torch.cat([mask_from([3], 8), mask_from([0, 2], 5)])
    runs = []
    hook = model.model.vision_tower.register_forward_pre_hook(lambda _, args: runs.append(args[0].shape[0]))
    with torch.no_grad():
        model.get_video_features(frames, mask, torch.randn(2, 16), torch.tensor([8, 5]))
    hook.remove()
    # Per video: its shared context frames in chunks of 3, then all its frames in chunks of 3.
    expected = [shared[0], 3, 3, 2, shared[1], 3, 2]
    assert runs == expected == model.model.vision_chunk_sizes(mask, torch.tensor([8, 5]))


def test_idle_vision_chunks_change_nothing():
    """`num_vision_chunks` (sharded training's lockstep) runs the tower that often; the sequence stays the same."""
    model = tiny_model(seed=7, vision_chunk_size=4)
    frames, mask, query = random_video(6, seed=6), mask_from([1, 4], 6), torch.randn(1, 16)
    runs = []
    hook = model.model.vision_tower.register_forward_pre_hook(lambda _, args: runs.append(args[0].shape[0]))
    with torch.no_grad():
        plain = model.get_video_features(frames, mask, query).last_hidden_state
        padded = model.get_video_features(frames, mask, query, num_vision_chunks=6).last_hidden_state
    hook.remove()
    assert runs == [2, 4, 2] + [2, 4, 2, 1, 1, 1]  # frames 0 and 1 are shared context frames
    torch.testing.assert_close(padded, plain, atol=0, rtol=0)


def test_no_chunk_of_tower_outputs_outlives_its_chunk():
    """Memory stays bounded per chunk: when the tower runs, no earlier run's last hidden state is still held."""
    model = tiny_model(seed=7, vision_chunk_size=2)
    earlier, alive_at_each_run = [], []

    def note_output(_module, _args, output):
        alive_at_each_run.append(sum(ref() is not None for ref in earlier))
        earlier.append(weakref.ref(output.last_hidden_state))

    handle = model.model.vision_tower.register_forward_hook(note_output)
    with torch.no_grad():
        model.get_video_features(random_video(8, seed=6), mask_from([2, 5], 8), torch.randn(1, 16))
    handle.remove()
    assert alive_at_each_run == [0] * 5  # a run for the 2 shared context frames, then 4 of 2 frames


def test_float_frames_equal_uint8_frames():
    model = tiny_model(seed=8)
    frames, mask, query = random_video(4), mask_from([1], 4), torch.randn(1, 16)
    normalised = (frames.float() / 255 - 0.5) / 0.5
    with torch.no_grad():
        torch.testing.assert_close(
            model.get_video_features(frames, mask, query).last_hidden_state,
            model.get_video_features(normalised, mask, query).last_hidden_state,
        )


# --- generation and batching ------------------------------------------------------------------------------------


def test_generate_with_cache_equals_without():
    model = tiny_model(seed=9)
    frames, mask = random_video(6), mask_from([2, 3], 6)
    inputs = {
        "input_ids": prompt_ids(num_visual_tokens(6, 2, model.model.tokens_per_keyframe)),
        "pixel_values_videos": frames,
        "keyframe_mask": mask,
        "query_embeds": torch.randn(1, 16),
    }
    cached = model.generate(**inputs, max_new_tokens=6, do_sample=False, use_cache=True, pad_token_id=0)
    uncached = model.generate(**inputs, max_new_tokens=6, do_sample=False, use_cache=False, pad_token_id=0)
    assert cached.tolist() == uncached.tolist()


def test_static_cache_decoding_compiles_without_graph_breaks():
    """
    After the prefill, each decoding step compiles as one graph (`fullgraph=True` raises on a graph break) and gives
    the eager logits; generate with a static cache gives the dynamic cache's tokens. `_can_compile_fullgraph` says so.
    """
    model = tiny_model(seed=10)
    frames, mask = random_video(6), mask_from([2, 3], 6)
    input_ids = prompt_ids(num_visual_tokens(6, 2, model.model.tokens_per_keyframe))
    inputs = {"pixel_values_videos": frames, "keyframe_mask": mask, "query_embeds": torch.randn(1, 16)}
    dynamic = model.generate(input_ids=input_ids, **inputs, max_new_tokens=4, do_sample=False, pad_token_id=0)
    static = model.generate(
        input_ids=input_ids, **inputs, max_new_tokens=4, do_sample=False, pad_token_id=0, cache_implementation="static"
    )
    assert static.tolist() == dynamic.tolist()
    assert VilampForConditionalGeneration._can_compile_fullgraph

    length = input_ids.shape[1]
    caches = [StaticCache(config=model.config, max_cache_len=length + 3) for _ in range(2)]
    # Dynamo's tracing is what finds graph breaks; the "eager" backend skips code generation, which is slow on CPU.
    steps = [model.forward, torch.compile(model.forward, fullgraph=True, backend="eager")]
    with torch.no_grad():
        for cache in caches:
            model(input_ids=input_ids, **inputs, cache=cache, use_cache=True)
        for position, token in enumerate(dynamic[0, length : length + 3].tolist(), start=length):
            step_inputs = {
                "input_ids": torch.tensor([[token]]),
                "cache_position": torch.tensor([position]),
                "position_ids": torch.tensor([[position]]),
                "use_cache": True,
            }
            eager, compiled = (
                step(**step_inputs, cache=cache).logits for step, cache in zip(steps, caches, strict=True)
            )
            torch.testing.assert_close(compiled, eager)


def test_batch_of_two_videos_equals_each_alone():
    model = tiny_model(seed=10)
    videos = [(random_video(5, seed=11), mask_from([1, 3], 5)), (random_video(9, seed=12), mask_from([0, 4, 8], 9))]
    queries = torch.randn(2, 16)
    alone, prompts = [], []
    for index, (frames, mask) in enumerate(videos):
        ids = prompt_ids(
            num_visual_tokens(len(mask), int(mask.sum()), model.model.tokens_per_keyframe), prefix=(5 + index, 6, 7)
        )
        prompts.append(ids)
        with torch.no_grad():
            alone.append(
                model(
                    input_ids=ids,
                    pixel_values_videos=frames,
                    keyframe_mask=mask,
                    query_embeds=queries[index : index + 1],
                ).logits
            )
    width = max(p.shape[1] for p in prompts)
    # Left padding, as for generation.
    input_ids = torch.stack([F.pad(p[0], (width - p.shape[1], 0), value=0) for p in prompts])
    attention_mask = torch.stack(
        [F.pad(torch.ones(p.shape[1], dtype=torch.long), (width - p.shape[1], 0)) for p in prompts]
    )
    with torch.no_grad():
        batched = model(
            input_ids=input_ids,
            attention_mask=attention_mask,
            pixel_values_videos=torch.cat([v[0] for v in videos]),
            keyframe_mask=torch.cat([v[1] for v in videos]),
            query_embeds=queries,
            video_frame_counts=torch.tensor([5, 9]),
        ).logits
    for index, logits in enumerate(alone):
        length = prompts[index].shape[1]
        torch.testing.assert_close(batched[index, width - length :], logits[0], atol=1e-5, rtol=0)


def test_loss_ignores_minus_100_and_backpropagates_to_merger():
    model = tiny_model(seed=13).train()
    mask = mask_from([2], 5)
    ids = prompt_ids(num_visual_tokens(5, 1, model.model.tokens_per_keyframe))
    labels = ids.clone()
    labels[ids == VIDEO_ID] = -100
    out = model(
        input_ids=ids,
        pixel_values_videos=random_video(5),
        keyframe_mask=mask,
        query_embeds=torch.randn(1, 16),
        labels=labels,
    )
    shifted_logits, shifted_labels = out.logits[0, :-1], labels[0, 1:]
    expected = F.cross_entropy(shifted_logits, shifted_labels, ignore_index=-100)
    torch.testing.assert_close(out.loss, expected)
    out.loss.backward()
    merger = model.model.feature_merger
    assert merger.temperature.grad is not None and merger.temperature.grad.abs() > 0
    assert model.model.vision_tower.embeddings.patch_embedding.weight.grad.abs().sum() > 0


# --- bad input --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"input_ids": prompt_ids(10)}, "placeholder tokens but the videos' visual sequences have"),
        ({"keyframe_mask": mask_from([1], 5)}, "keyframe_mask"),
        ({"keyframe_mask": torch.tensor([0, 1, 0, 0], dtype=torch.long)}, "bool tensor"),
        ({"query_embeds": torch.randn(1, 8)}, "query_embeds"),
        ({"query_embeds": torch.randn(2, 16)}, "video_frame_counts"),
        ({"pixel_values_videos": torch.zeros(4, 3, 32, 32)}, "pixel_values_videos"),
        ({"pixel_values_videos": torch.zeros(4, 3, 54, 54, dtype=torch.int32)}, "uint8 or floating point"),
        ({"video_frame_counts": torch.tensor([3])}, "sum to the 4 frames"),
        ({"video_frame_counts": torch.tensor([2.0, 2.0])}, "integer tensor"),
        ({"keyframe_mask": None}, "needs `keyframe_mask`"),
    ],
)
def test_bad_inputs_raise_value_error(change, message):
    model = tiny_model(seed=14)
    inputs = {
        "input_ids": prompt_ids(num_visual_tokens(4, 1, model.model.tokens_per_keyframe)),
        "pixel_values_videos": random_video(4),
        "keyframe_mask": mask_from([1], 4),
        "query_embeds": torch.randn(1, 16),
    }
    inputs.update(change)
    with pytest.raises(ValueError, match=message):
        model(**inputs)


def test_placeholders_without_video_are_embedded_as_text():
    """As in-library VLMs do: an assistant model's first step and text-only checks pass placeholders alone."""
    model = tiny_model(seed=15)
    ids = prompt_ids(3)
    with torch.no_grad():
        logits = model(input_ids=ids).logits
        expected = model.lm_head(model.model.language_model(input_ids=ids).last_hidden_state)
    torch.testing.assert_close(logits, expected)


# --- registration, saving and loading ---------------------------------------------------------------------------


def test_auto_classes_resolve():
    config = tiny_config()
    assert isinstance(AutoConfig.for_model("vilamp", keyframe_pooling_stride=3), VilampConfig)
    assert type(AutoModel.from_config(config)) is VilampModel
    assert type(AutoModelForImageTextToText.from_config(config)) is VilampForConditionalGeneration


def saved_model(tmp_path):
    model = tiny_model(seed=16)
    model.save_pretrained(tmp_path)
    return model


def test_save_load_round_trip(tmp_path):
    model = saved_model(tmp_path)
    assert {"configuration_vilamp.py", "modeling_vilamp.py", "model.safetensors"} <= set(os.listdir(tmp_path))
    loaded = AutoModelForImageTextToText.from_pretrained(tmp_path).eval()
    for key, tensor in model.state_dict().items():
        assert torch.equal(tensor, loaded.state_dict()[key]), key
    vilamp_fields = ("video_token_id", "keyframe_pooling_stride", "dfm_context", "query_embed_dim", "pixel_mean")
    assert [getattr(loaded.config, f) for f in vilamp_fields] == [getattr(model.config, f) for f in vilamp_fields]
    assert loaded.config.text_config.hidden_size == model.config.text_config.hidden_size
    assert loaded.config.vision_config.num_hidden_layers == model.config.vision_config.num_hidden_layers


def test_gradients_do_not_depend_on_the_vision_chunk_size():
    # Chunks of both passes (shared context frames, then every frame) join one graph; backward sees it whole.
    mask = mask_from([1, 4], 7)
    ids = prompt_ids(num_visual_tokens(7, 2, tiny_model().model.tokens_per_keyframe))
    gradients = []
    for chunk_size in (2, None):
        model = tiny_model(seed=4, vision_chunk_size=chunk_size)
        model.train()
        loss = model(
            input_ids=ids,
            pixel_values_videos=random_video(7),
            keyframe_mask=mask,
            query_embeds=torch.ones(1, 16),
            labels=ids,
        ).loss
        loss.backward()
        gradients.append({name: p.grad.clone() for name, p in model.named_parameters() if p.grad is not None})
    chunked, whole = gradients
    assert chunked.keys() == whole.keys() and "model.feature_merger.temperature" in chunked
    for name in whole:
        torch.testing.assert_close(chunked[name], whole[name], rtol=1e-5, atol=1e-6, msg=name)


def saved_bytes_for_backward(num_frames: int, checkpointing: bool) -> int:
    """Bytes of the distinct storages a training step keeps for backward, on a video of `num_frames` 54 px frames."""
    model = tiny_model(seed=0, vision_chunk_size=4).train()
    if checkpointing:
        model.activation_checkpointing_enable()
    keyframe_mask = torch.zeros(num_frames, dtype=torch.bool)
    keyframe_mask[[0, -1]] = True
    storages = {}

    def keep(tensor):
        storages[tensor.untyped_storage().data_ptr()] = tensor.untyped_storage().nbytes()
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(keep, lambda tensor: tensor):
        model(**video_training_batch(keyframe_mask, seed=1))
    return sum(storages.values())


def test_a_training_step_keeps_about_each_frames_own_bytes_not_its_activations():
    # The README's claim: with activation checkpointing (chunk by chunk), a training step's memory grows by about
    # the frames' own size per frame, not by their activations. Measured on what autograd keeps for backward.
    frame_bytes = 3 * 54 * 54  # one uint8 frame
    per_frame = {
        checkpointing: (saved_bytes_for_backward(24, checkpointing) - saved_bytes_for_backward(8, checkpointing)) / 16
        for checkpointing in (True, False)
    }
    assert frame_bytes <= per_frame[True] < 2 * frame_bytes  # the frame, and its one merged token's few tensors
    assert per_frame[False] > 100 * per_frame[True]  # without checkpointing: every layer's activations


# --- generate() options and transformers' multimodal contract ---------------------------------------------------


@pytest.fixture(scope="module")
def two_real_videos():
    """The bundled clip (6 sampled frames) and a 12-frame clip of its frames played back, prompts padded left."""
    from vilamp.processing.video_decoding import open_video

    source = open_video(CLIP_PATH)
    frames = np.concatenate(list(source.iter_chunks(np.arange(0, 132, 11), chunk_size=12)))[::-1].copy()
    processor = fixture_processor(load_fixture("heavy-fill"), num_keyframes=3)
    processor.tokenizer.padding_side = "left"
    prompts = [
        "<|im_start|>user\n<video>\nWhat is the rabbit doing?<|im_end|>\n<|im_start|>assistant\n",
        "<|im_start|>user\n<video>\nWhere?<|im_end|>\n<|im_start|>assistant\n",
    ]
    videos = [str(CLIP_PATH), frames]
    batch = processor(text=prompts, videos=videos)
    singles = [processor(text=prompt, videos=video) for prompt, video in zip(prompts, videos, strict=True)]
    assert batch["video_frame_counts"].tolist() == [6, 12]
    return batch, singles


def test_beam_search_sees_each_prompts_own_video(two_real_videos):
    """Beams and returned sequences of each prompt start from that prompt's own video, frames in order."""
    batch, singles = two_real_videos
    model = tiny_model(seed=31)
    with torch.no_grad():
        out = model.generate(
            **batch,
            num_beams=2,
            num_return_sequences=2,
            max_new_tokens=2,
            do_sample=False,
            output_scores=True,
            return_dict_in_generate=True,
            pad_token_id=0,
        )
        expected = [torch.log_softmax(model(**single).logits[0, -1], -1) for single in singles]
    first_step = out.scores[0].view(2, 2, -1)  # (prompt, beam, vocab); the first step only has beam 0 alive
    for prompt in range(2):
        torch.testing.assert_close(first_step[prompt, 0], expected[prompt], atol=1e-4, rtol=0)
    assert out.sequences.shape[0] == 4


def test_assisted_decoding_equals_greedy(two_real_videos):
    _, singles = two_real_videos
    model, assistant = tiny_model(seed=32), tiny_model(seed=33)
    with torch.no_grad():
        greedy = model.generate(**singles[0], max_new_tokens=6, do_sample=False, pad_token_id=0)
        assisted = model.generate(
            **singles[0], max_new_tokens=6, do_sample=False, pad_token_id=0, assistant_model=assistant
        )
    assert torch.equal(assisted, greedy)


def test_sampling_with_a_video_follows_the_seed(two_real_videos):
    _, singles = two_real_videos
    model = tiny_model(seed=36)
    sampled = []
    for _ in range(2):
        torch.manual_seed(0)
        sampled.append(
            model.generate(**singles[0], do_sample=True, temperature=2.0, top_k=0, max_new_tokens=8, pad_token_id=0)
        )
    greedy = model.generate(**singles[0], do_sample=False, max_new_tokens=8, pad_token_id=0)
    assert torch.equal(sampled[0], sampled[1])
    assert sampled[0].shape == greedy.shape and not torch.equal(sampled[0], greedy)


def test_video_with_inputs_embeds_equals_video_with_input_ids(two_real_videos):
    _, singles = two_real_videos
    model = tiny_model(seed=34)
    inputs = dict(singles[1])
    input_ids = inputs.pop("input_ids")
    with torch.no_grad():
        from_ids = model(input_ids=input_ids, **inputs).logits
        from_embeds = model(inputs_embeds=model.get_input_embeddings()(input_ids), **inputs).logits
    torch.testing.assert_close(from_embeds, from_ids)


def test_get_video_features_returns_transformers_output(two_real_videos):
    batch, _ = two_real_videos
    model = tiny_model(seed=35)
    video_inputs = {key: batch[key] for key in ("pixel_values_videos", "keyframe_mask", "query_embeds")}
    with torch.no_grad():
        output = model.get_video_features(**video_inputs, video_frame_counts=batch["video_frame_counts"])
        as_tuple = model.get_video_features(
            **video_inputs, video_frame_counts=batch["video_frame_counts"], return_dict=False
        )
    per_video = [196 * 3 + 3 + 1, 196 * 3 + 9 + 1]
    assert [len(sequence) for sequence in output.pooler_output] == per_video
    assert output.last_hidden_state.shape == (sum(per_video), 64)
    torch.testing.assert_close(torch.cat(output.pooler_output), output.last_hidden_state)
    torch.testing.assert_close(as_tuple[0], output.last_hidden_state)
    with torch.no_grad():
        text = {key: batch[key] for key in ("input_ids", "attention_mask")}
        from_features = model(**text, mm_encoder_outputs={"video": output})
        from_frames = model(**batch)
        from_frames_as_tuple = model(**batch, return_dict=False)
    torch.testing.assert_close(from_features.logits, from_frames.logits)
    # The model's output carries the video encoder's, as transformers' multimodal outputs do (`video_outputs`).
    for outputs in (from_features, from_frames):
        torch.testing.assert_close(outputs.video_outputs.last_hidden_state, output.last_hidden_state)
        assert [len(sequence) for sequence in outputs.video_outputs.pooler_output] == per_video
    assert from_features.video_outputs is output
    torch.testing.assert_close(from_frames_as_tuple[0], from_frames.logits)
    torch.testing.assert_close(from_frames_as_tuple[-1][0], output.last_hidden_state)


def test_get_video_features_returns_the_towers_states_and_attentions_on_request(two_real_videos):
    """Asked for, hidden states and attentions cover every frame across vision chunks, as one tower call gives them."""
    batch, _ = two_real_videos
    model = tiny_model(seed=37, vision_chunk_size=5, attn_implementation="eager")
    frames = batch["pixel_values_videos"]
    video_inputs = {key: batch[key] for key in ("pixel_values_videos", "keyframe_mask", "query_embeds")}
    with torch.no_grad():
        plain = model.get_video_features(**video_inputs, video_frame_counts=batch["video_frame_counts"])
        output = model.get_video_features(
            **video_inputs,
            video_frame_counts=batch["video_frame_counts"],
            output_hidden_states=True,
            output_attentions=True,
        )
        normalized = (frames.float() / 255 - 0.5) / 0.5
        whole = model.model.vision_tower(normalized, output_hidden_states=True, output_attentions=True)
    assert plain.hidden_states is None and plain.attentions is None
    torch.testing.assert_close(output.last_hidden_state, plain.last_hidden_state)
    assert len(output.hidden_states) == 3 and len(output.attentions) == 2  # embeddings + 2 layers
    for mine, expected in zip(
        output.hidden_states + output.attentions, whole.hidden_states + whole.attentions, strict=True
    ):
        assert mine.shape[0] == frames.shape[0] == 18
        torch.testing.assert_close(mine, expected, atol=1e-5, rtol=1e-5)


def test_tensor_parallel_plan_shards_the_head_as_qwen2_does():
    from transformers import Qwen2ForCausalLM

    assert VilampForConditionalGeneration._tp_plan == Qwen2ForCausalLM._tp_plan == {"lm_head": "colwise_gather_output"}


def test_eager_and_sdpa_attention_agree_on_the_visual_path(two_real_videos):
    batch, _ = two_real_videos
    logits = {}
    for implementation in ("eager", "sdpa"):
        model = tiny_model(seed=36, attn_implementation=implementation)
        assert model.config._attn_implementation == implementation
        with torch.no_grad():
            logits[implementation] = model(**batch).logits
    # Left padding's positions attend to nothing, and the two implementations fill them differently: compare the rest.
    real = batch["attention_mask"].bool()
    torch.testing.assert_close(logits["sdpa"][real], logits["eager"][real], atol=1e-5, rtol=1e-4)
