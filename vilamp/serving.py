"""
`vilamp serve`: ViLAMP behind transformers' own OpenAI-compatible server (`transformers serve`, docs/serving.md).

transformers' server picks a model's class and modality from its static name tables, which a model registered with
the Auto classes is not in, and asks for 32 uniform frames of every video. Three subclasses, in this one place,
make it serve ViLAMP as `vilamp ask` answers:

- `VilampModelManager` loads through `AutoModelForImageTextToText` and reports the vision-language modality;
- `VilampChatCompletionHandler` prepares each video once per file identity and sampling settings (a local path,
  `file://` or http(s) URL; ViLAMP's own 1 fps sampling unless the request's `chat_template_kwargs` say otherwise),
  answers a missing or undecodable file or bad settings with a 400 JSON error, and hands the model a
  `VilampVideoCache`, so that the next question about a video skips its decoding and its vision tower.

Requests are answered one at a time on the model's inference thread, as transformers' server does for
vision-language models; a request's videos are decoded and scored in a worker thread before its question queues
there, so that the server goes on answering other requests and /health meanwhile.
"""

import asyncio
import os
import threading
from collections import OrderedDict
from pathlib import Path

import transformers
from fastapi import HTTPException
from transformers import AutoModelForImageTextToText
from transformers.cli.serving.chat_completion import ChatCompletionHandler
from transformers.cli.serving.model_manager import ModelManager
from transformers.cli.serving.utils import Modality

from .loading import first_line
from .modeling_vilamp import VilampVideoCache
from .processing.keyframes import check_num_keyframes


# transformers 5.25 rebuilt its server (a process per model, other classes): these subclasses are 5.24's.
SERVER_RELEASE = "5.24"


def check_server_release() -> None:
    """Raises `RuntimeError` unless the installed transformers has the server these subclasses are for."""
    if transformers.__version__.rsplit(".", 1)[0] != SERVER_RELEASE:
        raise RuntimeError(
            f"vilamp serve is built on transformers {SERVER_RELEASE}'s server, which 5.25 rebuilt; this is "
            f'transformers {transformers.__version__}: pip install "transformers>={SERVER_RELEASE},<5.25"'
        )


# The request's `chat_template_kwargs` that decide which frames a video keeps (part of a prepared video's key).
SAMPLING_SETTINGS = ("max_frames", "fps", "num_frames")


class VilampModelManager(ModelManager):
    """transformers' model manager, loading ViLAMP through the Auto class it is registered with."""

    def _load_model(self, model_id_and_revision: str, tqdm_class=None, progress_callback=None, gguf_file=None):
        from transformers.cli.serving.utils import split_revision

        model_id, revision = split_revision(model_id_and_revision)
        model = AutoModelForImageTextToText.from_pretrained(
            model_id,
            revision=revision,
            dtype=self.dtype,
            device_map=self.device,
            trust_remote_code=self.trust_remote_code,
        )
        return model.eval()

    @staticmethod
    def get_model_modality(model, processor=None) -> Modality:
        return Modality.VLM


class VilampChatCompletionHandler(ChatCompletionHandler):
    """
    `/v1/chat/completions` with ViLAMP's video handling: prepared videos and the model's video features kept
    between requests, within `max_prepared_videos` videos and `cache_bytes` of features.
    """

    def __init__(
        self, *args, max_prepared_videos: int = 4, cache_bytes: int = 8 * 2**30, max_frames: int = 600, **kwargs
    ):
        super().__init__(*args, **kwargs)
        self.max_prepared_videos = max_prepared_videos
        self.max_frames = max_frames
        self.video_cache = VilampVideoCache(max_bytes=cache_bytes)
        self.prepared: OrderedDict[tuple, object] = OrderedDict()
        self._prepared_lock = threading.Lock()  # requests prepare their videos in worker threads
        self._request_videos: dict[str, object] = {}

    async def handle_request(self, body: dict, request_id: str):
        settings = {**self.chat_template_kwargs, **(body.get("chat_template_kwargs") or {})}
        if settings.get("num_keyframes") is not None:
            try:
                check_num_keyframes(settings["num_keyframes"])
            except ValueError as error:
                raise HTTPException(status_code=400, detail=first_line(error)) from error
        urls = [
            part["video_url"]["url"]
            for message in body.get("messages") or []
            for part in (message.get("content") if isinstance(message.get("content"), list) else [])
            if isinstance(part, dict) and part.get("type") == "video_url"
        ]
        # Decoding and scoring a video takes seconds to minutes: in a worker thread, not on the event loop, which
        # would stall every other request and /health meanwhile.
        videos = await asyncio.to_thread(lambda: {url: self.prepared_video(url, settings) for url in urls})
        # Read by `get_processor_inputs_from_messages`, which the parent calls before its first `await`: no other
        # request runs in between.
        self._request_videos = videos
        return await super().handle_request(body, request_id)

    def get_processor_inputs_from_messages(self, messages: list[dict], modality: Modality) -> list[dict]:
        inputs = super().get_processor_inputs_from_messages(messages, modality)
        for message in inputs:
            for part in message["content"] if isinstance(message["content"], list) else []:
                if part.get("type") == "video" and "url" in part:
                    part["video"] = self._request_videos[part.pop("url")]
        return inputs

    def prepared_video(self, url: str, settings: dict):
        """The prepared video at `url` under the request's sampling `settings`, prepared once per file identity."""
        _, processor = self.model_manager.load_model_and_processor(
            self.model_manager.process_model_name(self.model_manager.force_model)
        )
        sampling = {name: settings[name] for name in SAMPLING_SETTINGS if settings.get(name) is not None}
        sampling.setdefault("max_frames", self.max_frames)
        if sampling["max_frames"] is not None and sampling["max_frames"] > self.max_frames:
            raise HTTPException(
                status_code=400,
                detail=f"max_frames {sampling['max_frames']} is above this server's limit of {self.max_frames}.",
            )
        video = url.removeprefix("file://")
        if video.startswith(("http://", "https://")):
            identity = (video,)  # downloaded again each time; its frames' digest still keys the model's cache
        else:
            try:
                stat = os.stat(video)
            except OSError as error:
                raise HTTPException(status_code=400, detail=f"no such video file: {video}") from error
            if not Path(video).is_file():
                raise HTTPException(status_code=400, detail=f"not a video file: {video}")
            # A file changed since it was prepared has another size or modification time: it is prepared again.
            identity = (str(Path(video).resolve()), stat.st_size, stat.st_mtime_ns)
        key = (*identity, tuple(sorted(sampling.items())))
        with self._prepared_lock:
            prepared = self.prepared.get(key)
        if prepared is None:
            try:
                prepared = processor.prepare_video(video, **sampling)
            except (OSError, ValueError) as error:
                message = first_line(error)
                raise HTTPException(
                    status_code=400, detail=message if video in message else f"cannot decode video {video}: {message}"
                ) from error
        with self._prepared_lock:
            self.prepared[key] = prepared
            self.prepared.move_to_end(key)
            while len(self.prepared) > self.max_prepared_videos:
                self.prepared.popitem(last=False)
        return prepared

    def _streaming(self, request_id, model, processor, model_id, inputs, gen_config, gen_manager, tools=None):
        inputs["video_cache"] = self.video_cache
        return super()._streaming(request_id, model, processor, model_id, inputs, gen_config, gen_manager, tools)

    async def _non_streaming(
        self, request_id, model, processor, model_id, inputs, gen_config, gen_manager, tools=None
    ):
        inputs["video_cache"] = self.video_cache
        return await super()._non_streaming(
            request_id, model, processor, model_id, inputs, gen_config, gen_manager, tools
        )


def build_app(
    model_dir: str,
    device: str = "auto",
    dtype: str = "auto",
    max_frames: int = 600,
    max_prepared_videos: int = 4,
    cache_bytes: int = 8 * 2**30,
):
    """transformers' serving app for the ViLAMP model directory `model_dir`, loaded at once and kept."""
    check_server_release()
    from transformers.cli.serving.completion import CompletionHandler
    from transformers.cli.serving.response import ResponseHandler
    from transformers.cli.serving.server import build_server
    from transformers.cli.serving.systemone import SystemOneHandler
    from transformers.cli.serving.transcription import TranscriptionHandler
    from transformers.cli.serving.utils import GenerationState

    model_manager = VilampModelManager(device=device, dtype=dtype, model_timeout=-1, force_model=model_dir)
    generation_state = GenerationState(continuous_batching=False)
    # The server asks for 32 uniform frames of any video unless told otherwise: ViLAMP samples its own.
    defaults = {"num_frames": None}
    chat_handler = VilampChatCompletionHandler(
        model_manager=model_manager,
        generation_state=generation_state,
        chat_template_kwargs=defaults,
        max_prepared_videos=max_prepared_videos,
        cache_bytes=cache_bytes,
        max_frames=max_frames,
    )
    return build_server(
        model_manager,
        chat_handler,
        completion_handler=CompletionHandler(model_manager=model_manager, generation_state=generation_state),
        response_handler=ResponseHandler(model_manager, generation_state, chat_template_kwargs=defaults),
        transcription_handler=TranscriptionHandler(model_manager, generation_state),
        systemone_handler=SystemOneHandler(model_manager, generation_state, chat_template_kwargs=defaults),
        generation_state=generation_state,
    )
