"""
Training data: the released recipe's data files, its label masking checked by hand, the dataset's video work (one
decode per video, frame folders, concatenation), batching, a few Trainer steps, and broken examples.
"""

import json
import logging
import pickle

import pytest
import torch
import yaml
from PIL import Image
from transformers import Trainer, TrainingArguments

from media import numbered_frames, write_video
from vilamp.processing.video_decoding import resize_frames
from vilamp.processing.video_processing_vilamp import PreparedVideo, VilampVideoProcessor
from vilamp.tiny import tiny_model_and_processor, tiny_tokenizer
from vilamp.training import (
    IGNORE_INDEX,
    VilampDataCollator,
    VilampTrainingDataset,
    load_examples,
    make_labels,
    parse_example,
)


FOLDER_FRAMES = numbered_frames(4, 24, 32)


@pytest.fixture(scope="module")
def tiny():
    return tiny_model_and_processor()


@pytest.fixture(scope="module")
def processor(tiny):
    return tiny[1]


@pytest.fixture(scope="module")
def media(tmp_path_factory):
    """Two short videos (3 and 5 frames at 1 fps), a frame folder, and broken ones: empty, unreadable, not a video."""
    folder = tmp_path_factory.mktemp("media")
    write_video(folder / "three.mp4", numbered_frames(6, 32, 32), fps=2)
    write_video(folder / "five.mp4", numbered_frames(10, 32, 32)[::-1].copy(), fps=2)
    (folder / "frames").mkdir()
    for number in reversed(range(len(FOLDER_FRAMES))):  # written out of order: the names give the order
        Image.fromarray(FOLDER_FRAMES[number]).save(folder / "frames" / f"frame_{number}.png")
    (folder / "frames" / "notes.txt").write_text("not a frame")
    (folder / "empty").mkdir()
    (folder / "bad_frames").mkdir()
    (folder / "bad_frames" / "frame_0.png").write_bytes(b"not a picture")
    (folder / "broken.mp4").write_bytes(b"this is not a video" * 50)
    return folder


def llava(video, *turns: str, query: str | None = None) -> dict:
    """A record in the original's format; `turns` alternate human, gpt."""
    conversations = [{"from": ("human", "gpt")[n % 2], "value": value} for n, value in enumerate(turns)]
    return {"video": video, "conversations": conversations, **({"query": query} if query else {})}


def target_runs(tokenizer, input_ids, labels) -> list[str]:
    """The decoded runs of consecutive target tokens, in order."""
    runs, run = [], []
    for token, label in zip(input_ids.tolist(), labels.tolist(), strict=True):
        if label != IGNORE_INDEX:
            assert label == token
            run.append(token)
        elif run:
            runs.append(tokenizer.decode(run))
            run = []
    return runs + ([tokenizer.decode(run)] if run else [])


TWO_ROUNDS = ("<image>\nWhat happens?", "A bunny.", "Is it day?", "Yes.")


def test_released_labels_by_hand(processor, media):
    """Section 8: each assistant turn with its header, and every <|im_start|>, <|im_end|> and lone newline."""
    item = VilampTrainingDataset([llava("three.mp4", *TWO_ROUNDS)], processor, video_folder=media)[0]
    assert target_runs(processor.tokenizer, item["input_ids"], item["labels"]) == [
        "<|im_start|>",  # system turn: its newline after "system" and its end
        "\n",
        "<|im_end|>\n<|im_start|>",
        "\n",  # after "user", then after the video (whose tokens are not targets)
        "\n",
        "<|im_end|>\n<|im_start|>assistant\nA bunny.<|im_end|>\n<|im_start|>",
        "\n",
        "<|im_end|>\n<|im_start|>assistant\nYes.<|im_end|>\n",
    ]
    video_positions = item["input_ids"] == processor.video_token_id
    assert int(video_positions.sum()) == processor.num_visual_tokens(3, 2)
    assert bool((item["labels"][video_positions] == IGNORE_INDEX).all())


def test_assistant_labels_by_hand(processor, media):
    records = [llava("three.mp4", *TWO_ROUNDS)]
    item = VilampTrainingDataset(records, processor, video_folder=media, label_masking="assistant")[0]
    assert target_runs(processor.tokenizer, item["input_ids"], item["labels"]) == [
        "A bunny.<|im_end|>",
        "Yes.<|im_end|>",
    ]


def test_ids_and_labels_equal_the_originals_turn_by_turn_tokenisation(processor, media):
    """The original tokenises turn by turn and then unmasks the chat tokens; the whole conversation at once agrees."""
    item = VilampTrainingDataset([llava("three.mp4", *TWO_ROUNDS)], processor, video_folder=media)[0]
    tokenizer = processor.tokenizer
    video = "<video>" * processor.num_visual_tokens(3, 2)
    turns = [
        ("system", "You are a helpful assistant."),
        ("user", video + "\nWhat happens?"),
        ("assistant", "A bunny."),
        ("user", "Is it day?"),
        ("assistant", "Yes."),
    ]
    ids, labels = [], []
    for role, content in turns:
        turn = tokenizer.encode(f"<|im_start|>{role}\n{content}<|im_end|>\n", add_special_tokens=False)
        ids += turn
        labels += turn if role == "assistant" else [IGNORE_INDEX] * len(turn)
    unmasked = {*tokenizer.convert_tokens_to_ids(["<|im_start|>", "<|im_end|>"]), *tokenizer.encode("\n")}
    labels = [token if token in unmasked else label for token, label in zip(ids, labels, strict=True)]
    assert item["input_ids"].tolist() == ids
    assert item["labels"].tolist() == labels
    assert item["attention_mask"].tolist() == [1] * len(ids)


def test_item_is_what_the_processor_gives(processor, media):
    """The dataset's cached video path changes nothing: inputs equal a plain processor call on the conversation."""
    item = VilampTrainingDataset([llava("five.mp4", *TWO_ROUNDS)], processor, video_folder=media)[0]
    messages = parse_example(llava("five.mp4", *TWO_ROUNDS), media).messages
    expected = processor(text=processor.apply_chat_template(messages, tokenize=False), videos=str(media / "five.mp4"))
    assert torch.equal(item["input_ids"], expected["input_ids"][0])
    for key in ("pixel_values_videos", "keyframe_mask", "frame_relevance"):
        assert torch.equal(item[key], expected[key]), key
    assert torch.equal(item["query_embeds"], expected["query_embeds"][0])
    torch.testing.assert_close(item["query_embeds"], processor.frame_scorer.embed_queries(["What happens?"])[0])


def test_chat_messages_and_llava_records_agree(processor, media):
    """`<image>` after the question moves to the front of its turn, as in the original: `<video>\\n` then the text."""
    llava_record = llava("five.mp4", "Describe it. <image>", "Colours.")
    messages_record = {
        "messages": [
            {
                "role": "user",
                "content": [{"type": "video", "video": "five.mp4"}, {"type": "text", "text": "Describe it."}],
            },
            {"role": "assistant", "content": [{"type": "text", "text": "Colours."}]},
        ]
    }
    # As a datasets table holds them: every item has every key, None where it does not apply.
    table_record = {
        "messages": [
            {
                "role": "user",
                "content": [
                    {"type": "video", "video": "five.mp4", "text": None},
                    {"type": "text", "video": None, "text": "Describe it."},
                ],
            },
            {"role": "assistant", "content": [{"type": "text", "video": None, "text": "Colours."}]},
        ]
    }
    assert parse_example(llava_record, media).messages[0]["content"] == "<video>\nDescribe it."
    items = VilampTrainingDataset([llava_record, messages_record, table_record], processor, video_folder=media)
    first = items[0]
    for other in (items[1], items[2]):
        for key in first:
            assert torch.equal(first[key], other[key]), key


def test_query_field_drives_selection(processor, media):
    record = llava("five.mp4", *TWO_ROUNDS, query="a red frame")
    item = VilampTrainingDataset([record], processor, video_folder=media)[0]
    torch.testing.assert_close(item["query_embeds"], processor.frame_scorer.embed_queries(["a red frame"])[0])


@pytest.fixture
def decoded_videos(monkeypatch):
    """The video of every decode, in order (a prepared video, handed back as it is, is no decode)."""
    calls = []
    decode = VilampVideoProcessor.process_video

    def counting(self, video, *args, **kwargs):
        if not isinstance(video, PreparedVideo):
            calls.append(video)
        return decode(self, video, *args, **kwargs)

    monkeypatch.setattr(VilampVideoProcessor, "process_video", counting)
    return calls


@pytest.mark.parametrize(("cache_size", "decodes"), [(4, ["three", "five"]), (1, ["three", "five", "three"])])
def test_video_asked_about_repeatedly_is_decoded_once(processor, media, decoded_videos, cache_size, decodes):
    questions = ["What happens?", "What colour is it?", "How long is it?"]
    records = [llava("three.mp4", f"<image>\n{question}", "An answer.") for question in questions]
    records.insert(2, llava("five.mp4", "<image>\nWhat happens?", "An answer."))
    dataset = VilampTrainingDataset(records, processor, video_folder=media, video_cache_size=cache_size)
    items = [dataset[index] for index in range(len(dataset))]
    assert [video.rsplit("/", 1)[-1].removesuffix(".mp4") for video in decoded_videos] == decodes
    # Selection is still per question: each item is what a fresh processor call on its question gives.
    fresh = processor(text=f"<|im_start|>user\n<video>\n{questions[2]}<|im_end|>\n", videos=str(media / "three.mp4"))
    assert torch.equal(items[3]["keyframe_mask"], fresh["keyframe_mask"])
    torch.testing.assert_close(items[3]["query_embeds"], fresh["query_embeds"][0])
    assert not torch.equal(items[0]["query_embeds"], items[1]["query_embeds"])


def test_frame_folder_is_read_in_name_order_and_a_list_concatenates(processor, media):
    records = [
        llava("frames", "<image>\nWhat happens?", "A bunny."),
        llava("three.mp4", "<image>\nWhat happens?", "A bunny."),
        llava(["three.mp4", "frames"], "<image>\nWhat happens?", "A bunny."),
    ]
    folder, video, both = VilampTrainingDataset(records, processor, video_folder=media)
    assert torch.equal(folder["pixel_values_videos"], torch.from_numpy(resize_frames(FOLDER_FRAMES, 54)))
    expected = torch.cat([video["pixel_values_videos"], folder["pixel_values_videos"]])
    assert torch.equal(both["pixel_values_videos"], expected)
    assert int((both["input_ids"] == processor.video_token_id).sum()) == processor.num_visual_tokens(7, 2)


def test_collator_pads_and_concatenates(processor, media):
    records = [llava("five.mp4", *TWO_ROUNDS), llava("three.mp4", "<image>\nWhat happens?", "A bunny.")]
    long, short = VilampTrainingDataset(records, processor, video_folder=media)
    length, pad_id = len(short["input_ids"]), processor.tokenizer.pad_token_id
    padding = len(long["input_ids"]) - length
    assert padding > 0

    batch = VilampDataCollator(processor.tokenizer)([long, short])
    assert torch.equal(batch["input_ids"][0], long["input_ids"])
    assert batch["input_ids"][1].tolist() == short["input_ids"].tolist() + [pad_id] * padding
    assert batch["labels"][1].tolist() == short["labels"].tolist() + [IGNORE_INDEX] * padding
    assert batch["attention_mask"][1].tolist() == [1] * length + [0] * padding
    assert batch["video_frame_counts"].tolist() == [5, 3]
    for key in ("pixel_values_videos", "keyframe_mask", "frame_relevance"):
        assert torch.equal(batch[key], torch.cat([long[key], short[key]])), key
    assert torch.equal(batch["query_embeds"], torch.stack([long["query_embeds"], short["query_embeds"]]))

    left = VilampDataCollator(processor.tokenizer, padding_side="left")([long, short])
    assert left["input_ids"][1].tolist() == [pad_id] * padding + short["input_ids"].tolist()
    assert left["labels"][1].tolist() == [IGNORE_INDEX] * padding + short["labels"].tolist()
    assert left["attention_mask"][1].tolist() == [0] * padding + [1] * length


def test_dataloader_workers_and_pickling(processor, media, decoded_videos):
    """The video work runs in DataLoader workers; a pickled dataset (spawned workers) starts with an empty cache."""
    records = [llava(video, *TWO_ROUNDS) for video in ("three.mp4", "five.mp4", "three.mp4")]
    dataset = VilampTrainingDataset(records, processor, video_folder=media)
    collator = VilampDataCollator(processor.tokenizer)
    loader = torch.utils.data.DataLoader(dataset, batch_size=3, collate_fn=collator, num_workers=2)
    (batch,) = list(loader)
    assert decoded_videos == []  # the workers decoded, not this process
    expected = collator([dataset[index] for index in range(3)])
    for key in expected:
        # A worker runs CLIP on one thread: its float sums may differ in the last bit.
        torch.testing.assert_close(batch[key], expected[key], rtol=1e-5, atol=1e-6, msg=key)
    assert len(decoded_videos) == 2
    copy = pickle.loads(pickle.dumps(dataset))
    assert torch.equal(copy[1]["pixel_values_videos"], expected["pixel_values_videos"][3:8])
    assert len(decoded_videos) == 3  # the copy decoded again: no cached frames travelled with it


def test_model_loss_on_a_batch_of_different_video_lengths(tiny, media):
    model, processor = tiny
    records = [llava("five.mp4", *TWO_ROUNDS), llava("three.mp4", "<image>\nWhat happens?", "A bunny.")]
    batch = VilampDataCollator(processor.tokenizer)(
        list(VilampTrainingDataset(records, processor, video_folder=media))
    )
    loss = model(**batch).loss
    assert torch.isfinite(loss) and loss > 0


def test_trainer_runs_with_its_default_column_removal(tiny, media, tmp_path):
    shared_model, processor = tiny
    model = type(shared_model)(shared_model.config)  # trained here, so not the one other tests read
    data = tmp_path / "data.json"
    records = [llava(video, "<image>\nWhat happens?", "A bunny.") for video in ("three.mp4", "five.mp4", "frames")]
    data.write_text(json.dumps(records))
    dataset = VilampTrainingDataset.from_file(data, processor, video_folder=media)
    arguments = TrainingArguments(
        output_dir=str(tmp_path / "out"),
        max_steps=2,
        per_device_train_batch_size=2,
        learning_rate=1e-4,
        logging_steps=1,
        save_strategy="no",
        report_to=[],
        use_cpu=True,
    )
    assert arguments.remove_unused_columns
    trainer = Trainer(
        model=model, args=arguments, train_dataset=dataset, data_collator=VilampDataCollator(processor.tokenizer)
    )
    trainer.train()
    losses = [entry["loss"] for entry in trainer.state.log_history if "loss" in entry]
    assert trainer.state.global_step == 2 and len(losses) == 2
    assert all(torch.isfinite(torch.tensor(losses)))


def test_reading_json_jsonl_and_a_seeded_yaml_mixture(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # the mixture's json_path is relative to the current folder, as in the original
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "ten.json").write_text(json.dumps([{"id": n} for n in range(10)]))
    (tmp_path / "data" / "four.jsonl").write_text("".join(json.dumps({"id": 10 + n}) + "\n" for n in range(4)) + "\n")
    assert [record["id"] for record in load_examples(tmp_path / "data" / "ten.json")] == list(range(10))
    assert [record["id"] for record in load_examples(tmp_path / "data" / "four.jsonl")] == [10, 11, 12, 13]

    def mixture(*entries, seed=0):
        path = tmp_path / "mixture.yaml"
        datasets = [{"json_path": file, "sampling_strategy": strategy} for file, strategy in entries]
        path.write_text(yaml.safe_dump({"datasets": datasets}))
        return [record["id"] for record in load_examples(path, seed=seed)]

    assert mixture(("data/ten.json", "first:3"), ("data/four.jsonl", "end:2")) == [0, 1, 2, 12, 13]
    assert mixture(("data/ten.json", "all"), ("data/four.jsonl", "first:50%")) == [*range(10), 10, 11]
    assert mixture(("data/ten.json", "first:25%")) == [0, 1, 2]  # 2.5 rounds up, as the original does
    assert mixture(("data/four.jsonl", "first:9")) == [10, 11, 12, 13]
    drawn = mixture(("data/ten.json", "random:4"))
    assert len(set(drawn)) == 4 and set(drawn) <= set(range(10))
    assert mixture(("data/ten.json", "random:4")) == drawn
    assert mixture(("data/ten.json", "random:4"), seed=1) != drawn

    with pytest.raises(
        ValueError, match=r"Entry 1 of data mixture .*mixture\.yaml: Unknown sampling_strategy 'middle:3'"
    ):
        mixture(("data/ten.json", "all"), ("data/four.jsonl", "middle:3"))
    with pytest.raises(ValueError, match="whole number or percentage"):
        mixture(("data/ten.json", "first:some"))
    (tmp_path / "object.json").write_text("{}")
    with pytest.raises(ValueError, match=r"object\.json must hold a list"):
        load_examples(tmp_path / "object.json")


def test_labels_count_only_a_lone_newline_and_keep_a_merged_header_newline():
    """
    With a tokenizer that has a `\\n\\n` token (as Qwen2 does), a user's `\\n\\n` is no target in released masking, and
    an answer opening with a newline merges it with the header's: that token starts the answer.
    """
    tokenizer = tiny_tokenizer()
    tokenizer.add_tokens(["\n\n"])
    text = "<|im_start|>user\nHi\n\nthere<|im_end|>\n<|im_start|>assistant\n\nYes<|im_end|>\n"
    ids = tokenizer.encode(text, add_special_tokens=False)
    assert target_runs(tokenizer, torch.tensor(ids), make_labels(ids, tokenizer)) == [
        "<|im_start|>",
        "\n",
        "<|im_end|>\n<|im_start|>assistant\n\nYes<|im_end|>\n",
    ]
    assert target_runs(tokenizer, torch.tensor(ids), make_labels(ids, tokenizer, label_masking="assistant")) == [
        "\n\nYes<|im_end|>"
    ]
    with pytest.raises(ValueError, match="Unknown label_masking 'all'"):
        make_labels(ids, tokenizer, label_masking="all")


BROKEN = {
    "missing file": (llava("gone.mp4", "<image>\nQ?", "A."), r"gone\.mp4"),
    "unreadable video": (llava("broken.mp4", "<image>\nQ?", "A."), r"broken\.mp4"),
    "empty frame folder": (llava("empty", "<image>\nQ?", "A."), r"empty.*holds no images"),
    "unreadable frame": (llava("bad_frames", "<image>\nQ?", "A."), r"bad_frames\).*Cannot read frame .*frame_0\.png"),
    "no video slot": (llava("three.mp4", "What happens?", "A."), r"three\.mp4.*exactly one <image> slot"),
    "no answer": ({"messages": [{"role": "user", "content": "<video>\nQ?"}], "video": "three.mp4"}, "no assistant"),
}


@pytest.mark.parametrize("case", BROKEN)
def test_broken_example_raises_naming_it_and_its_file(processor, media, case):
    record, message = BROKEN[case]
    dataset = VilampTrainingDataset([llava("three.mp4", "<image>\nQ?", "A."), record], processor, video_folder=media)
    with pytest.raises(ValueError, match=r"^Training example 1 \(video .*" + message):
        dataset[1]


def test_skip_broken_counts_and_warns(processor, media, caplog):
    good = [llava(video, "<image>\nWhat happens?", "A bunny.") for video in ("three.mp4", "five.mp4")]
    records = [good[0], BROKEN["missing file"][0], good[1], BROKEN["empty frame folder"][0]]
    dataset = VilampTrainingDataset(records, processor, video_folder=media, skip_broken=True)
    with caplog.at_level(logging.WARNING, logger="vilamp.training.data"):
        assert torch.equal(dataset[1]["input_ids"], dataset[2]["input_ids"])  # the next example stands in
        assert torch.equal(dataset[3]["input_ids"], dataset[0]["input_ids"])  # wrapping round to the first
        dataset[1]  # a known broken example is skipped again without a second warning
    assert sorted(dataset.skipped) == [1, 3]
    assert "gone.mp4" in dataset.skipped[1] and "holds no images" in dataset.skipped[3]
    warnings = [record.getMessage() for record in caplog.records if record.levelno == logging.WARNING]
    assert len(warnings) == 2
    assert "Training example 1 (video gone.mp4)" in warnings[0] and "Training example 3" in warnings[1]

    hopeless = VilampTrainingDataset([records[1], records[3]], processor, video_folder=media, skip_broken=True)
    with pytest.raises(ValueError, match="Every one of the 2 training examples is broken"):
        hopeless[0]
    assert sorted(hopeless.skipped) == [0, 1]


def test_scorer_inputs_reproduce_the_processors_scores_and_train_the_scorer(tiny, media):
    """
    With `scorer_inputs`, an item carries what the frame scorer read: the scorer embeds them to the processor's own
    query embedding and frame relevance, and through `VilampWithFrameScorer` a training step reaches CLIP's weights.
    """
    from vilamp.training import VilampWithFrameScorer

    model, processor = tiny
    records = [
        llava("five.mp4", *TWO_ROUNDS, query="a red frame"),
        llava("three.mp4", "<image>\nWhat colour is the first frame?", "Red."),
    ]
    dataset = VilampTrainingDataset(records, processor, video_folder=media, scorer_inputs=True)
    items = [dataset[0], dataset[1], dataset[0]]  # the third comes from the cache
    scorer = processor.frame_scorer
    for item in items:
        assert item["scorer_input_ids"].shape == (77,)
        assert item["scorer_pixel_values"].shape == (len(item["pixel_values_videos"]), 3, 32, 32)
        with torch.no_grad():
            query = scorer.model.encode_text(item["scorer_input_ids"][None])[0]
            frames = scorer.embed_pixels(item["scorer_pixel_values"])
        torch.testing.assert_close(query, item["query_embeds"])
        relevance = torch.nn.functional.cosine_similarity(frames, query[None], dim=-1)
        torch.testing.assert_close(relevance, item["frame_relevance"], atol=1e-6, rtol=1e-5)
    assert "scorer_pixel_values" not in VilampTrainingDataset(records, processor, video_folder=media)[1]

    batch = VilampDataCollator(processor.tokenizer)(items[:2])
    assert batch["scorer_input_ids"].shape == (2, 77) and batch["scorer_pixel_values"].shape[0] == 8
    wrapper = VilampWithFrameScorer(model, scorer.model).train()
    wrapper(**batch).loss.backward()
    visual = scorer.model.visual.conv1.weight.grad
    textual = scorer.model.token_embedding.weight.grad
    assert visual is not None and visual.abs().sum() > 0 and textual.abs().sum() > 0
    wrapper.zero_grad()
    model.eval()
