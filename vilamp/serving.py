"""
`vilamp serve`: ViLAMP behind transformers' own OpenAI-compatible server (`transformers serve`, docs/serving.md).

transformers' server picks a model's class and modality from its static name tables, which a model registered with
the Auto classes is not in, and asks for 32 uniform frames of every video. Two subclasses, in this one place,
make it serve ViLAMP as `vilamp ask` answers:

- `VilampModelManager` loads through `AutoModelForImageTextToText` and reports the vision-language modality;
- `VilampChatCompletionHandler` prepares each video once per file identity (path, size, modification time; the
  bytes' SHA-256 for an http(s) URL) and sampling settings (ViLAMP's own 1 fps sampling unless the request's
  `chat_template_kwargs` say otherwise), answers a missing or undecodable file or bad settings with a 400 JSON
  error, and hands the model a `VilampVideoCache`, so that the next question about a video skips its decoding and
  its vision tower.

`RequestSizeLimit` refuses request bodies over `vilamp serve --max-request-mb` with a 413.

Requests are answered one at a time on the model's inference thread, as transformers' server does for
vision-language models; a request's videos are decoded and scored in a worker thread before its question queues
there, so that the server goes on answering other requests and /health meanwhile.
"""

import asyncio
import hashlib
import json
from pathlib import Path

import transformers
from fastapi import HTTPException
from transformers import AutoModelForImageTextToText
from transformers.cli.serving.chat_completion import ChatCompletionHandler
from transformers.cli.serving.model_manager import ModelManager
from transformers.cli.serving.utils import Modality

from .loading import first_line
from .modeling_vilamp import VilampVideoCache
from .processing import PreparedVideos, file_identity
from .processing.keyframes import check_num_keyframes
from .processing.video_decoding import download, is_url


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


def sha256_of(path: Path) -> str:
    """The hex SHA-256 of a file's bytes, read a megabyte at a time."""
    digest = hashlib.sha256()
    with open(path, "rb") as file:
        while chunk := file.read(2**20):
            digest.update(chunk)
    return digest.hexdigest()


def prepare_or_400(processor, video: str | Path, sampling: dict, name: str | None = None):
    """`processor.prepare_video(video)`, or a 400 naming the video (`name`, for a download) if it cannot be decoded."""
    name = name or str(video)
    try:
        return processor.prepare_video(str(video), **sampling)
    except (OSError, ValueError) as error:
        message = first_line(error).replace(str(video), name)
        raise HTTPException(
            status_code=400, detail=message if name in message else f"cannot decode video {name}: {message}"
        ) from error


class RequestSizeLimit:
    """
    ASGI middleware: a request whose body is over `max_bytes` gets a 413 JSON error naming the limit, before the
    app reads it. A body without a Content-Length (chunked) is counted as it arrives, and kept to hand on.
    """

    def __init__(self, app, max_bytes: int):
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None:
            if int(declared) > self.max_bytes:
                return await self.refuse(send, f"{int(declared):,} bytes")
            return await self.app(scope, receive, send)
        messages, size = [], 0
        while True:
            message = await receive()
            messages.append(message)
            size += len(message.get("body", b""))
            if size > self.max_bytes:
                return await self.refuse(send, f"more than {self.max_bytes:,} bytes")
            if message["type"] != "http.request" or not message.get("more_body"):
                break

        async def replay():
            return messages.pop(0) if messages else await receive()

        return await self.app(scope, replay, send)

    async def refuse(self, send, size: str) -> None:
        detail = f"the request body ({size}) is above this server's limit of {self.max_bytes:,} bytes"
        body = json.dumps({"detail": detail}).encode()
        headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
        await send({"type": "http.response.start", "status": 413, "headers": headers})
        await send({"type": "http.response.body", "body": body})


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
        self,
        *args,
        max_prepared_videos: int = 4,
        cache_bytes: int | None = None,
        max_frames: int = 600,
        **kwargs,
    ):
        super().__init__(*args, **kwargs)
        self.max_frames = max_frames
        self.video_cache = VilampVideoCache(max_bytes=cache_bytes)
        self.prepared = PreparedVideos(max_prepared_videos)  # shared by the requests' worker threads
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
        if is_url(video):
            return self.prepared_url(video, processor, sampling)
        try:
            identity = file_identity(video)
        except OSError as error:  # missing, or not ours to read: named either way
            raise HTTPException(status_code=400, detail=first_line(error)) from error
        if not Path(video).is_file():
            raise HTTPException(status_code=400, detail=f"not a video file: {video}")
        # A file changed since it was prepared has another size or modification time: it is prepared again.
        return self.prepared.get(identity, sampling, lambda: prepare_or_400(processor, video, sampling))

    def prepared_url(self, url: str, processor, sampling: dict):
        """An http(s) video: downloaded for every request, prepared again only when its bytes differ."""
        try:
            path = download(url)
        except ValueError as error:
            raise HTTPException(status_code=400, detail=first_line(error)) from error
        try:
            identity = ("sha256", sha256_of(path))
            return self.prepared.get(identity, sampling, lambda: prepare_or_400(processor, path, sampling, name=url))
        finally:
            path.unlink(missing_ok=True)

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
    cache_bytes: int | None = None,
    max_request_bytes: int = 16 * 2**20,
):
    """
    transformers' serving app for the ViLAMP model directory `model_dir`, loaded at once and kept; request bodies
    over `max_request_bytes` are refused with a 413.
    """
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
    app = build_server(
        model_manager,
        chat_handler,
        completion_handler=CompletionHandler(model_manager=model_manager, generation_state=generation_state),
        response_handler=ResponseHandler(model_manager, generation_state, chat_template_kwargs=defaults),
        transcription_handler=TranscriptionHandler(model_manager, generation_state),
        systemone_handler=SystemOneHandler(model_manager, generation_state, chat_template_kwargs=defaults),
        generation_state=generation_state,
    )
    app.add_middleware(RequestSizeLimit, max_bytes=max_request_bytes)
    return app
