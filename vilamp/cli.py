"""
The `vilamp` command.

    vilamp ask [VIDEO] [QUESTION ...] [--model PATH_OR_HUB_ID] [--plot keyframes.png] [--json] ...
    vilamp chat [VIDEO] [--model PATH_OR_HUB_ID] ...
    vilamp serve [--model PATH_OR_HUB_ID] [--host 127.0.0.1] [--port 8000] ...
    vilamp tiny DIR
    vilamp convert --checkpoint SRC --output DIR [...]
    vilamp train --data FILE --output DIR [--model PATH_OR_HUB_ID] [--video-folder DIR] [--parts ...] [...]

`ask` answers questions about a video and shows what ViLAMP did with each: the keyframes it kept (with timestamps),
the frames it sampled, and the visual tokens spent against uniform encoding. The video is decoded and encoded once
for all the questions, as in `chat`, an interactive session about one video. Without `--model` it runs on the
embedded default, a tiny random-weight model built on the spot (its answers are noise), and the bundled clip.
`tiny` saves the embedded default as a model directory, to try everything else with. `train` fine-tunes with the
released recipe's settings (docs/training.md); without `--model`, the embedded default.
"""

import argparse
import contextlib
import json
import os
import sys
import time
import traceback
from collections.abc import Iterator, Sequence
from pathlib import Path

from .conversion.arguments import DTYPE_NAMES, add_conversion_arguments
from .loading import (
    ModelLoadError,
    check_model_source,
    first_line,
    gib_to_bytes,
    load_model_and_processor,
    model_inputs,
    resolve_device,
)


# Only the standard library and this package's light modules are imported up here: `vilamp --help` and a mistyped
# argument are answered at once. torch, transformers and the model load only once the arguments are checked.
DEFAULT_QUESTION = "What happens in this video?"
DTYPES = ("auto", *DTYPE_NAMES)
CHAT_PROMPT = "question> "
CHAT_HELP = "Each question is answered on its own, about the whole video. Type exit or press Ctrl-D to leave."
EMBEDDED_TRAINING_NOTE = "NOTE: no --model: training the embedded default, a tiny random-weight model."


class CliError(Exception):
    """A problem the user can fix (a missing file, an unreadable video, an unknown model): one line, exit code 2."""


def check_video_file(video: str) -> None:
    """Fails in one line unless `video` is an existing file, or an http(s) URL (downloaded by the processor)."""
    if video.startswith(("http://", "https://")):
        return
    path = Path(video)
    if not path.exists():
        raise CliError(f"no such video file: {video}")
    if not path.is_file():
        raise CliError(f"not a video file: {video}")


def check_question(question: str) -> None:
    if not question.strip():
        raise CliError("the question is empty: ask something about the video, or leave QUESTION out for the default.")


def check_plot_path(plot: str) -> None:
    """Fails before any loading when the picture could not be written at the end."""
    path = Path(plot)
    if path.suffix.lower() != ".png":
        raise CliError(f"--plot writes a PNG; give a path ending in .png, not {plot!r}.")
    if not path.parent.is_dir():
        raise CliError(f"--plot {plot}: no such directory {path.parent}")


@contextlib.contextmanager
def native_stderr_silenced(enabled: bool = True) -> Iterator[None]:
    """
    Sends what C libraries write straight to file descriptor 2 (a video decoder's log lines about a damaged file) to
    /dev/null, while `sys.stderr` (progress bars, warnings) keeps writing to the real stderr through a duplicate of
    that descriptor. Python loggers that hold the previous `sys.stderr` are silenced too, until the block ends.
    """
    if not enabled:
        yield
        return
    python_stderr = sys.stderr
    python_stderr.flush()
    real_stderr = open(os.dup(2), "w", encoding=python_stderr.encoding, errors="backslashreplace")
    with open(os.devnull, "w") as devnull:
        os.dup2(devnull.fileno(), 2)
    sys.stderr = real_stderr
    try:
        yield
    finally:
        real_stderr.flush()
        os.dup2(real_stderr.fileno(), 2)
        real_stderr.close()
        sys.stderr = python_stderr


@contextlib.contextmanager
def encoding_progress(model, frames_encoded: int, enabled: bool) -> Iterator[None]:
    """A progress bar over the frames that pass through the vision tower, fed by a hook on it."""
    from tqdm.auto import tqdm

    bar = tqdm(total=frames_encoded, desc="encoding frames", unit="frame", disable=not enabled or not frames_encoded)

    def count_frames(_module, args) -> None:
        # Returns None on purpose: whatever a forward pre-hook returns replaces the module's inputs (and
        # `bar.update` returns True whenever the bar redraws).
        bar.update(args[0].shape[0])

    handle = model.get_submodule("model.vision_tower").register_forward_pre_hook(count_frames)
    try:
        yield
    finally:
        handle.remove()
        bar.close()


def encodes_while_decoding(model) -> bool:
    """
    Whether the vision tower runs on a video's frames while the rest decode (`VilampModel.fill_video_cache`): on an
    accelerator, where decoding and the tower take about as long each (23 s and 22 s at 10,000 frames on an H200,
    docs/performance.md); not on the CPU, whose cores the front end's threads already keep busy.
    """
    return model.device.type != "cpu"


def prepare_video(
    processor,
    video: str,
    max_frames: int | None,
    show_progress: bool,
    show_decoder_logs: bool,
    model=None,
    video_cache=None,
):
    """
    The video-only step, once for all questions: sampling, decoding and the frame scorer's embeddings, and with
    `model` and `video_cache`, where `encodes_while_decoding(model)`, the tower's outputs kept in the cache as the
    frames decode. The video decoder's own log lines reach stderr only with `show_decoder_logs`; otherwise one error
    line names a bad file.
    """
    # Left out, max_frames keeps the processor's own setting (None would mean "no cap").
    options = {"max_frames": max_frames} if max_frames is not None else {}
    filler = None
    if video_cache is not None and encodes_while_decoding(model):
        filler = model.model.fill_video_cache(video_cache)
    with native_stderr_silenced(enabled=not show_decoder_logs):
        try:
            prepared = processor.prepare_video(video, show_progress=show_progress, on_frames=filler, **options)
        except (OSError, ValueError) as error:
            message = first_line(error)
            raise CliError(message if video in message else f"cannot decode video {video}: {message}") from error
    if filler is not None:
        filler.keep(prepared.key)
    return prepared


def ask(
    model,
    processor,
    prepared,
    question: str,
    num_keyframes: int | None = None,
    max_new_tokens: int = 64,
    video_cache=None,
    show_progress: bool = True,
    streamer=None,
):
    """
    Runs one question about a prepared video through processor and model; returns the answer text and the
    processor's output. `video_cache` (a `VilampVideoCache`) keeps the tower's work for the next question.
    """
    import torch

    messages = [{"role": "user", "content": [{"type": "video"}, {"type": "text", "text": question}]}]
    prompt = processor.apply_chat_template(messages, add_generation_prompt=True)
    options = {"num_keyframes": num_keyframes} if num_keyframes is not None else {}
    inputs = processor(text=prompt, videos=prepared, return_metadata=True, **options)
    # What the tower encodes: nothing for a video already in the cache.
    frames_encoded = sum(
        model.model.vision_chunk_sizes(
            inputs["keyframe_mask"], inputs["video_frame_counts"], inputs["video_keys"], video_cache
        )
    )
    with torch.no_grad(), encoding_progress(model, frames_encoded, enabled=show_progress):
        output = model.generate(
            **model_inputs(inputs, model.device),
            video_cache=video_cache,
            max_new_tokens=max_new_tokens,
            do_sample=False,
            streamer=streamer,
        )
    answer = processor.decode(output[0, inputs["input_ids"].shape[1] :], skip_special_tokens=True)
    return answer.strip(), inputs


def summarize(processor, inputs, answer: str, video: str, question: str, model_id: str | None) -> dict:
    """The `--json` record: answer, keyframes with timestamps, frames sampled, and the token budget."""
    from .processing.keyframe_plot import format_timestamp

    num_frames = int(inputs["video_frame_counts"][0])
    keyframes = inputs["keyframe_mask"].nonzero()[:, 0].tolist()
    metadata = inputs["video_metadata"][0]
    timestamps, frames_indices = metadata.timestamps, metadata.frames_indices
    by_relevance = set(metadata.relevance_keyframes)
    return {
        "answer": answer,
        "model": model_id,
        "embedded_default": model_id is None,
        "video": video,
        "question": question,
        "frames_sampled": num_frames,
        # The mean spacing of the sampled frames: 1 s at the default 1 fps, more where max_frames thinned them.
        "seconds_between_frames": (
            round((timestamps[num_frames - 1] - timestamps[0]) / (num_frames - 1), 3) if num_frames > 1 else None
        ),
        # `sample`: the keyframe's place among the sampled frames; `video_frame`: its frame number in the video.
        "keyframes": [
            {
                "sample": index,
                "video_frame": frames_indices[index],
                "seconds": round(timestamps[index], 3),
                "timestamp": format_timestamp(timestamps[index]),
                # Greedy selection takes frames for their relevance; the slots it leaves fill the gaps between them.
                "chosen_by": "relevance" if index in by_relevance else "gap filling",
            }
            for index in keyframes
        ],
        "visual_tokens": processor.num_visual_tokens(num_frames, len(keyframes)),
        # LLaVA-OneVision-style uniform encoding: every frame a keyframe.
        "uniform_tokens": processor.num_visual_tokens(num_frames, num_frames),
    }


def sampling_rate_note(seconds_between_frames: float | None) -> str:
    """The note after the frame count: about 1 per second by default, the mean spacing where `--max-frames` thinned."""
    if seconds_between_frames is None:
        return ""
    if round(seconds_between_frames, 1) == 1.0:
        return " (about 1 per second)"
    return f" (about 1 every {seconds_between_frames:.3g} s)"


def embedded_default_note(processor) -> str:
    """The first line of `ask` and `chat` on the embedded default: what it is, and its K against the released 32."""
    return (
        f"NOTE: embedded default = tiny random-weight model keeping {processor.num_keyframes} keyframes (ViLAMP "
        "keeps 32); the answer below is noise."
    )


def print_summary(record: dict, heading: str | None = None) -> None:
    if heading is not None:
        print(heading)
    print(f"answer: {record['answer']}")
    for number, keyframe in enumerate(record["keyframes"], start=1):
        print(
            f"keyframe {number:3d}: video frame {keyframe['video_frame']:6d} at {keyframe['timestamp']} "
            f"(sample {keyframe['sample']}{', filled a gap' if keyframe['chosen_by'] == 'gap filling' else ''})"
        )
    print(f"frames sampled: {record['frames_sampled']}{sampling_rate_note(record['seconds_between_frames'])}")
    saving = record["uniform_tokens"] / record["visual_tokens"]
    print(
        f"visual tokens: {record['visual_tokens']:,} (uniform 196 per frame would be {record['uniform_tokens']:,}; "
        f"{saving:.1f}x fewer)"
    )
    if record.get("plot"):
        print(f"keyframe timeline: {record['plot']}")


def plot_paths(plot: str | None, num_questions: int) -> list[str | None]:
    """Where each question's keyframe picture goes: `--plot` itself for one question, numbered beside it for more."""
    if plot is None or num_questions == 1:
        return [plot] * num_questions
    path = Path(plot)
    return [str(path.with_name(f"{path.stem}-{number}{path.suffix}")) for number in range(1, num_questions + 1)]


def check_video_argument(args: argparse.Namespace) -> None:
    """`ask` and `chat`'s VIDEO: the bundled clip for the embedded default, an existing file or a URL otherwise."""
    if args.model is None and args.video is None:
        from .tiny import BUNDLED_CLIP

        args.video = str(BUNDLED_CLIP)
    if args.video is None:
        raise CliError("VIDEO is required with --model (the bundled clip is only the embedded default's).")
    check_video_file(args.video)


def load_for_answering(args: argparse.Namespace, show_progress: bool):
    """`ask` and `chat`'s model and processor, once `--model` names something loadable."""
    if args.model:
        check_model_source(args.model)  # before anything else loads (the loader checks again, for its other callers)
    if not show_progress:
        disable_library_progress_bars()
    return load_model_and_processor(
        args.model, resolve_device(args.device), args.dtype, trust_remote_code=args.trust_remote_code
    )


def run_ask(args: argparse.Namespace) -> int:
    check_video_argument(args)
    questions = args.questions or [DEFAULT_QUESTION]
    for question in questions:
        check_question(question)
    if args.plot:
        check_plot_path(args.plot)
    show_progress = not (args.quiet or args.json)
    model, processor = load_for_answering(args, show_progress)
    from .modeling_vilamp import VilampVideoCache

    video_cache = VilampVideoCache(max_bytes=args.cache_bytes)
    start = time.perf_counter()
    prepared = prepare_video(processor, args.video, args.max_frames, show_progress, args.debug, model, video_cache)
    for number, (question, plot) in enumerate(
        zip(questions, plot_paths(args.plot, len(questions)), strict=True), start=1
    ):
        answer, inputs = ask(
            model, processor, prepared, question, args.keyframes, args.max_new_tokens, video_cache, show_progress
        )
        record = summarize(processor, inputs, answer, args.video, question, args.model)
        if plot:
            record["plot"] = str(processor.plot_keyframes(inputs, plot, question=question))
        # Each question's wall time; the first one's includes the video-only work.
        record["seconds"] = round(time.perf_counter() - start, 3)
        if args.json:
            print(json.dumps(record), flush=True)
        else:
            if number == 1 and args.model is None:
                print(embedded_default_note(processor))
            if number > 1:
                print()
            print_summary(record, heading=f"question {number}: {question}" if len(questions) > 1 else None)
        start = time.perf_counter()
    return 0


def run_chat(args: argparse.Namespace) -> int:
    """An interactive session about one video: prepared and encoded once, then every question reuses it."""
    check_video_argument(args)
    show_progress = not args.quiet
    model, processor = load_for_answering(args, show_progress)
    import torch
    from transformers import TextStreamer

    from .modeling_vilamp import VilampVideoCache
    from .processing.keyframe_plot import format_timestamp

    video_cache = VilampVideoCache(max_bytes=args.cache_bytes)
    prepared = prepare_video(processor, args.video, args.max_frames, show_progress, args.debug, model, video_cache)
    if not encodes_while_decoding(model):
        with torch.no_grad(), encoding_progress(model, len(prepared.frames), enabled=show_progress):
            model.model.cache_videos(prepared.pixel_values, [prepared.key], video_cache)
    try:
        import readline  # noqa: F401  (line editing and history for input())
    except ImportError:  # not on every platform; input() still works
        pass
    if args.model is None:
        print(embedded_default_note(processor))
    duration = format_timestamp(prepared.metadata.duration)
    print(f"{args.video}: {len(prepared.frames)} frames sampled over {duration}. {CHAT_HELP}")
    while True:
        try:
            question = input(CHAT_PROMPT).strip()
        except EOFError:  # Ctrl-D
            print()
            return 0
        except KeyboardInterrupt:  # Ctrl-C at the prompt drops the line, not the session
            print()
            continue
        if question.lower() in ("exit", "quit"):
            return 0
        if not question:
            continue
        start = time.perf_counter()
        print("answer: ", end="", flush=True)
        streamer = TextStreamer(processor.tokenizer, skip_prompt=True, skip_special_tokens=True)
        try:
            answer, inputs = ask(
                model, processor, prepared, question, args.keyframes, args.max_new_tokens, video_cache, False, streamer
            )
        except KeyboardInterrupt:
            print("\n(answer interrupted)")
            continue
        record = summarize(processor, inputs, answer, args.video, question, args.model)
        print(
            f"(keyframes at {', '.join(keyframe['timestamp'] for keyframe in record['keyframes'])}; "
            f"{record['visual_tokens']:,} visual tokens; {time.perf_counter() - start:.1f} s)"
        )


def run_tiny(args: argparse.Namespace) -> int:
    """Saves the embedded default as a model directory, to try the Python API, training and evaluation without one."""
    output = Path(args.output)
    if output.exists() and (not output.is_dir() or any(output.iterdir())):
        raise CliError(f"{args.output} already exists and is not an empty directory: give a new one.")
    try:
        output.mkdir(parents=True, exist_ok=True)  # and its parents, as `vilamp convert` makes them
    except OSError as error:
        raise CliError(f"{args.output}: cannot make this directory ({error.strerror}).") from error
    if args.quiet:
        disable_library_progress_bars()
    from .tiny import TINY_DESCRIPTION, save_tiny_model

    save_tiny_model(output)
    if not args.quiet:
        where = f"--model {args.output}, from_pretrained"
        print(f"{TINY_DESCRIPTION} in {args.output}: give it wherever a model goes ({where}).")
    return 0


def run_serve(args: argparse.Namespace) -> int:
    """transformers' OpenAI-compatible server with ViLAMP (docs/serving.md), until Ctrl-C."""
    import tempfile

    if args.model:
        check_model_source(args.model)
    try:
        import uvicorn

        from .serving import build_app, check_server_release
    except ImportError as error:
        raise CliError(
            f'vilamp serve needs the serve extra ({error.name} is missing): pip install -e ".[serve]"'
        ) from error
    try:
        check_server_release()
    except RuntimeError as error:
        raise CliError(str(error)) from error
    resolve_device(args.device)  # a CUDA device that is not there fails here, in one line
    with tempfile.TemporaryDirectory(prefix="vilamp-serve-") as folder:
        model = args.model
        if model is None:
            from .tiny import TINY_DESCRIPTION, save_tiny_model

            disable_library_progress_bars()
            model = f"{folder}/tiny"
            save_tiny_model(model)
            print(f"NOTE: no --model: serving {TINY_DESCRIPTION}.")
        app = build_app(
            model,
            device=args.device,
            dtype=args.dtype,
            max_frames=args.max_frames,
            max_prepared_videos=args.prepared_videos,
            cache_bytes=args.cache_bytes,
            max_request_bytes=args.max_request_mb * 2**20,
        )
        print(f"serving {model} at http://{args.host}:{args.port}/v1 (Ctrl-C stops)", flush=True)
        uvicorn.run(app, host=args.host, port=args.port, log_level="warning" if args.quiet else "info")
    return 0


def run_convert(args: argparse.Namespace) -> int:
    from .conversion.convert_vilamp_to_hf import run
    from .conversion.original_checkpoint import ConversionError

    if args.quiet:
        disable_library_progress_bars()  # the conversion's verification loads the model back
    try:
        return run(args, log=(lambda _message: None) if args.quiet else print)
    except ConversionError as error:
        raise CliError(str(error)) from error


def check_data_file(data: str) -> None:
    """Fails in one line unless `data` is a file (what it holds is read once the model is loaded)."""
    if not Path(data).is_file():
        raise CliError(f"no such data file: {data}")


def check_folder(option: str, folder: str) -> None:
    if not Path(folder).is_dir():
        raise CliError(f"{option} {folder}: no such directory")


def run_train(args: argparse.Namespace) -> int:
    check_data_file(args.data)
    if args.video_folder:
        check_folder("--video-folder", args.video_folder)
    if args.model:
        check_model_source(args.model)
    if args.quiet:
        disable_library_progress_bars()
    from .training.recipe import TrainingRecipe, check_output_directory, train

    settings = {
        "video_folder": args.video_folder,
        "parts": args.parts,
        "learning_rate": args.learning_rate,
        "vision_tower_learning_rate": args.vision_tower_learning_rate,
        "epochs": args.epochs,
        "max_steps": args.max_steps,
        "batch_size": args.batch_size,
        "gradient_accumulation": args.gradient_accumulation,
        "bf16": args.bf16,
        "gradient_checkpointing": args.gradient_checkpointing,
        "label_masking": args.label_masking,
        "max_frames": args.max_frames,
        "skip_broken": args.skip_broken,
        "resume": args.resume,
        "save_steps": args.save_steps,
        "num_workers": args.num_workers,
        "seed": args.seed,
    }
    log = (lambda _message: None) if args.quiet else print
    try:
        # Options left out keep the recipe's defaults.
        recipe = TrainingRecipe(
            args.data, args.output, **{name: value for name, value in settings.items() if value is not None}
        )
        check_output_directory(recipe.output_dir, recipe.resume, recipe.max_steps, recipe.epochs)
    except ValueError as error:
        raise CliError(str(error)) from error
    if args.model is None:
        log(EMBEDDED_TRAINING_NOTE)
    model, processor = load_model_and_processor(args.model, resolve_device("cpu"), "float32")
    try:
        train(model, processor, recipe, log=log, show_progress=not args.quiet)
    except (OSError, ValueError) as error:  # a broken example, a full disk: named in the message
        raise CliError(first_line(error)) from error
    return 0


def disable_library_progress_bars() -> None:
    """Turns off the bars transformers draws itself (loading weights), for `--quiet` and `--json`."""
    from transformers.utils import logging

    logging.disable_progress_bar()


def positive_int(text: str) -> int:
    """argparse type for counts (frames, keyframes, tokens): a whole number of at least 1."""
    if not text.strip().isdecimal() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"must be a whole number of at least 1, got {text!r}")
    return int(text)


def non_negative_int(text: str) -> int:
    """argparse type for counts that may be 0 (DataLoader workers) or any seed: a whole number of at least 0."""
    if not text.strip().isdecimal():
        raise argparse.ArgumentTypeError(f"must be a whole number of at least 0, got {text!r}")
    return int(text)


def positive_float(text: str) -> float:
    """argparse type for learning rates and epochs: a number above 0."""
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"must be a number above 0, got {text!r}")
    return value


def cache_budget(text: str) -> int:
    """argparse type for `--cache-gib`: GiB above 0, in bytes."""
    return gib_to_bytes(positive_float(text))


def add_training_arguments(parser: argparse.ArgumentParser) -> None:
    """`vilamp train`'s options; left out, each keeps the released recipe's value (TrainingRecipe's default)."""
    parser.add_argument("--data", required=True, help="training examples: a .json, .jsonl or .yaml mixture file")
    parser.add_argument("--output", required=True, help="directory for checkpoints and the final model")
    parser.add_argument("--video-folder", help="the directory the examples' video paths are relative to")
    parser.add_argument(
        "--model", help="converted ViLAMP to start from: a directory or Hub id (default: embedded tiny)"
    )
    parser.add_argument(
        "--parts",
        help="what trains, comma-separated: language_model, projector, vision_tower, feature_merger (or the "
        "original's mm_tunable_parts names; default: language_model,projector)",
    )
    parser.add_argument("--learning-rate", type=positive_float, help="default: 1e-5")
    parser.add_argument("--vision-tower-learning-rate", type=positive_float, help="default: 2e-6")
    length = parser.add_mutually_exclusive_group()
    length.add_argument("--epochs", type=positive_float, help="passes over the data (default: 1)")
    length.add_argument("--max-steps", type=positive_int, help="optimizer steps to run, instead of --epochs")
    parser.add_argument("--batch-size", type=positive_int, help="examples per device and step (default: 1)")
    parser.add_argument("--gradient-accumulation", type=positive_int, help="micro-batches per step (default: 4)")
    parser.add_argument(
        "--label-masking",
        metavar="MASKING",
        help="the targets: 'released' (the released recipe's, default) or 'assistant' (the answers only)",
    )
    parser.add_argument("--max-frames", type=positive_int, help="cap on frames sampled per video (default: none)")
    parser.add_argument(
        "--bf16",
        action=argparse.BooleanOptionalAction,
        help="bfloat16 mixed precision (default: on where a CUDA GPU supports it)",
    )
    parser.add_argument(
        "--gradient-checkpointing",
        action=argparse.BooleanOptionalAction,
        help="recompute activations in the backward pass (default: on)",
    )
    parser.add_argument("--skip-broken", action="store_true", help="skip unreadable examples with a warning")
    parser.add_argument("--resume", action="store_true", help="continue from the last checkpoint in --output")
    parser.add_argument("--save-steps", type=positive_int, help="steps between checkpoints (default: 1000)")
    parser.add_argument("--num-workers", type=non_negative_int, help="DataLoader workers decoding videos (default: 0)")
    parser.add_argument("--seed", type=non_negative_int, help="default: 42")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="vilamp", description=__doc__.split("\n\n")[2], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--quiet", action="store_true", help="no progress bars or progress messages")
    common.add_argument("--debug", action="store_true", help="show the full traceback on errors")
    commands = parser.add_subparsers(dest="command", required=True, metavar="{ask,chat,serve,tiny,convert,train}")

    # What `ask`, `chat` and `serve` load, where, and the video features they keep for later questions.
    model_options = argparse.ArgumentParser(add_help=False, parents=[common])
    model_options.add_argument(
        "--model", help="converted ViLAMP: a directory or Hub id (default: embedded tiny model)"
    )
    model_options.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
    model_options.add_argument("--dtype", choices=DTYPES, default="auto", help="model dtype (default: as saved)")
    model_options.add_argument(
        "--cache-gib",
        dest="cache_bytes",
        metavar="GIB",
        type=cache_budget,
        help="memory for the video features kept for later questions (default: the cache's own, 8; docs/usage.md)",
    )

    answering = argparse.ArgumentParser(add_help=False, parents=[model_options])
    answering.add_argument(
        "video", nargs="?", help="video file or http(s) URL (default: the bundled clip, embedded default only)"
    )
    answering.add_argument(
        "--trust-remote-code",
        action="store_true",
        help="run the Python code that the --model directory or repository ships (only for sources you trust; "
        "this project's own classes need none)",
    )
    answering.add_argument("--max-frames", type=positive_int, help="cap on sampled frames (processor default: 600)")
    answering.add_argument("--keyframes", type=positive_int, help="K, the keyframes kept (processor default: 32)")
    answering.add_argument("--max-new-tokens", type=positive_int, default=64)

    ask_parser = commands.add_parser("ask", parents=[answering], help="answer questions about a video")
    ask_parser.add_argument(
        "questions",
        nargs="*",
        metavar="QUESTION",
        help=f"one or more questions, answered in turn about the same video (default: {DEFAULT_QUESTION!r})",
    )
    ask_parser.add_argument(
        "--plot",
        metavar="PNG",
        help="write the keyframe timeline picture here (NAME-1.png, ... for several questions)",
    )
    ask_parser.add_argument(
        "--json", action="store_true", help="print one JSON record per question, one per line, instead of text"
    )
    ask_parser.set_defaults(handler=run_ask)

    chat_parser = commands.add_parser("chat", parents=[answering], help="ask about a video interactively")
    chat_parser.set_defaults(handler=run_chat)

    tiny_parser = commands.add_parser(
        "tiny", parents=[common], help="save the embedded default, a tiny random-weight model, to try things with"
    )
    tiny_parser.add_argument("output", metavar="DIR", help="a new directory for the model and its processor")
    tiny_parser.set_defaults(handler=run_tiny)

    serve_parser = commands.add_parser(
        "serve", parents=[model_options], help="answer over an OpenAI-compatible HTTP API (see docs/serving.md)"
    )
    serve_parser.add_argument("--host", default="127.0.0.1", help="default: 127.0.0.1 (this machine only)")
    serve_parser.add_argument("--port", type=positive_int, default=8000)
    serve_parser.add_argument(
        "--max-frames", type=positive_int, default=600, help="frames sampled per video, at most (default: 600)"
    )
    serve_parser.add_argument(
        "--prepared-videos", type=positive_int, default=4, help="videos kept decoded between requests (default: 4)"
    )
    serve_parser.add_argument(
        "--max-request-mb", type=positive_int, default=16, help="largest request body accepted (default: 16)"
    )
    serve_parser.set_defaults(handler=run_serve)

    convert_parser = commands.add_parser(
        "convert", parents=[common], help="convert the original checkpoint (see docs/conversion.md)"
    )
    add_conversion_arguments(convert_parser).set_defaults(handler=run_convert)

    train_parser = commands.add_parser(
        "train", parents=[common], help="fine-tune with the released recipe (see docs/training.md)"
    )
    add_training_arguments(train_parser)
    train_parser.set_defaults(handler=run_train)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.handler(args)
    except (CliError, ModelLoadError) as error:
        if args.debug:
            traceback.print_exc()
        print(f"vilamp: error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
