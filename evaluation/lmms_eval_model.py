"""
The lmms-eval model `vilamp`:

    lmms-eval --model vilamp --model_args pretrained=DIR_OR_HUB_ID,max_frames=600,num_keyframes=32 --tasks videomme

Each question's video is sampled at `fps` (1) and capped at `max_frames` (600) as the released scripts do; the bare
question (`prompts.parse_prompt`) is the CLIP query for keyframe selection and feature merging. With
`protocol=released` (the default) the LLM gets the released scripts' prompt and, for the benchmarks they cover,
their `max_new_tokens`; `protocol=lmms_eval` keeps lmms-eval's prompt and generation settings. Data parallelism is
lmms-eval's: `accelerate launch --num_processes N -m lmms_eval ...` gives every process its share of the requests
and this model the GPU of its local rank (`torchrun` on a machine without GPUs runs the processes on the CPU).
"""

import json
from collections import defaultdict
from collections.abc import Iterator, Sequence

import torch
from accelerate import Accelerator
from lmms_eval.api.instance import Instance
from lmms_eval.api.model import lmms
from loguru import logger
from tqdm import tqdm

from ..loading import gib_to_bytes, model_inputs
from ..modeling_vilamp import VilampVideoCache
from ..processing import PreparedVideos, file_identity
from .prompts import RELEASED_MAX_NEW_TOKENS, parse_prompt, released_prompt


PROTOCOLS = ("released", "lmms_eval")


def _chunks(items: Sequence[int], size: int) -> Iterator[Sequence[int]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def truncate_at_stop(text: str, until: Sequence[str] | str | None) -> str:
    """`text` up to the first of the stop strings `until` (lmms-eval's `until` generation argument)."""
    stops = [until] if isinstance(until, str) else list(until or [])
    cut = min((text.index(stop) for stop in stops if stop and stop in text), default=len(text))
    return text[:cut]


class Vilamp(lmms):
    """ViLAMP for lmms-eval: `generate_until` for generation tasks, `loglikelihood` for likelihood tasks."""

    def __init__(
        self,
        pretrained: str,
        max_frames: int = 600,
        fps: float = 1.0,
        num_keyframes: int | None = None,
        protocol: str = "released",
        batch_size: int | str = 1,
        device: str | None = None,
        dtype: str = "auto",
        attn_implementation: str | None = None,
        trust_remote_code: bool = False,
        cache_gib: float | None = None,
        prepared_videos: int = 4,
    ) -> None:
        """
        Args:
            pretrained: A converted ViLAMP directory or Hub id.
            max_frames: Cap on the frames sampled from one video (uniform thinning beyond it).
            fps: Frames sampled per second of video.
            num_keyframes: K; the processor's own (32 for the released model) when omitted.
            protocol: `released` (the released scripts' LLM prompt and answer length) or `lmms_eval` (the task's).
            batch_size: Questions per forward pass; prompts are left-padded.
            device: Where the model runs; CUDA when torch sees one, else CPU. Under data parallelism, the local
                rank's GPU (the CPU when the processes have none).
            dtype: `auto` (the checkpoint's, bfloat16 for the released model) or a torch dtype name.
            attn_implementation: transformers' attention implementation (`sdpa`, `flash_attention_2`, ...).
            trust_remote_code: Load the code the model ships beside its weights instead of this package's.
            cache_gib: Memory for the vision tower's outputs kept between questions about the same video
                (`VilampVideoCache`, whose own budget when left out; docs/usage.md gives the bytes per frame).
            prepared_videos: Videos kept decoded, with their frame embeddings, for the next question about them
                (0 with `cache_gib=0` prepares and encodes the video again for every question).
        """
        super().__init__()
        if protocol not in PROTOCOLS:
            raise ValueError(f"protocol must be one of {PROTOCOLS}, got {protocol!r}.")
        if int(batch_size) < 1:
            raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}.")
        from ..loading import load_model_and_processor, resolve_device

        self.accelerator = Accelerator()
        if self.accelerator.num_processes > 1:
            # The local rank's GPU; the CPU when accelerate runs the processes without GPUs.
            self._device = self.accelerator.device
            self._rank, self._world_size = self.accelerator.process_index, self.accelerator.num_processes
            logger.info(f"vilamp: data parallel, process {self._rank} of {self._world_size} on {self._device}")
        else:
            self._device = resolve_device(device or "auto")
        model, self.processor = load_model_and_processor(pretrained, self._device, dtype, trust_remote_code)
        if attn_implementation is not None:
            model.set_attn_implementation(attn_implementation)
        self.model = model
        self.video_kwargs = {"fps": fps, "max_frames": max_frames}
        if num_keyframes is not None:
            self.video_kwargs["num_keyframes"] = num_keyframes
        self.protocol = protocol
        self.batch_size = int(batch_size)
        # Questions about one video are answered one after another (`generate_until` orders them so): the video is
        # decoded, scored and encoded for the first and reused by the rest.
        self.video_cache = VilampVideoCache(max_bytes=None if cache_gib is None else gib_to_bytes(cache_gib))
        self.prepared_videos = int(prepared_videos)
        self._prepared = PreparedVideos(self.prepared_videos)

    @property
    def device(self) -> torch.device:
        """The device the model and its inputs are on (lmms-eval gathers results across ranks there)."""
        return self._device

    def _chat(self, text: str) -> str:
        messages = [{"role": "user", "content": [{"type": "video"}, {"type": "text", "text": text}]}]
        return self.processor.apply_chat_template(messages, add_generation_prompt=True)

    def _video(self, doc_to_visual, doc_id: int, task: str, split: str) -> str:
        visuals = doc_to_visual(self.task_dict[task][split][doc_id])
        if len(visuals) != 1 or not isinstance(visuals[0], str):
            raise ValueError(f"{task} {split} doc {doc_id}: ViLAMP takes one video file, got {visuals!r:.200}.")
        return visuals[0]

    def _prepare(self, video: str):
        """The video-only step for `video`, from the last `prepared_videos` videos when it is one of them."""
        sampling = {name: value for name, value in self.video_kwargs.items() if name != "num_keyframes"}
        return self._prepared.get(
            file_identity(video), sampling, lambda: self.processor.prepare_video(video, **sampling)
        )

    def _inputs(self, texts: list[str], videos: list[str], queries: list[str]) -> dict:
        prepared = [self._prepare(video) for video in videos]
        inputs = self.processor(text=texts, videos=prepared, query=queries, padding_side="left", **self.video_kwargs)
        return {**model_inputs(inputs, self.device), "video_cache": self.video_cache}

    def generate_until(self, requests: list[Instance]) -> list[str]:
        """
        Answers each request (`(context, generation_kwargs, doc_to_visual, doc_id, task, split)`), `batch_size`
        at a time among requests of the same task and generation settings.
        """
        groups = defaultdict(list)
        for index, request in enumerate(requests):
            _, gen_kwargs, _, _, task, _ = request.args
            groups[(task, json.dumps(gen_kwargs, sort_keys=True, default=str))].append(index)
        # Within a group, the questions about one video one after another, so that each video is prepared once.
        video_of = [self._video(*request.args[2:]) for request in requests]
        for indices in groups.values():
            first_seen: dict[str, int] = {}
            for index in indices:
                first_seen.setdefault(video_of[index], len(first_seen))
            indices.sort(key=lambda index: first_seen[video_of[index]])
        answers = [""] * len(requests)
        progress = tqdm(total=len(requests), disable=self.rank != 0, desc="vilamp")
        for indices in groups.values():
            for batch in _chunks(indices, self.batch_size):
                for index, answer in zip(batch, self._generate([requests[i].args for i in batch]), strict=True):
                    answers[index] = answer
                progress.update(len(batch))
        progress.close()
        return answers

    def _generate(self, batch: list[tuple]) -> list[str]:
        texts, videos, queries = [], [], []
        for context, _, doc_to_visual, doc_id, task, split in batch:
            parsed = parse_prompt(context)
            texts.append(self._chat(released_prompt(parsed) if self.protocol == "released" else context))
            videos.append(self._video(doc_to_visual, doc_id, task, split))
            queries.append(parsed.question)
        gen_kwargs, task = dict(batch[0][1]), batch[0][4]
        max_new_tokens = gen_kwargs.get("max_new_tokens", 16)
        if self.protocol == "released":
            max_new_tokens = RELEASED_MAX_NEW_TOKENS.get(task, max_new_tokens)
        do_sample = bool(gen_kwargs.get("do_sample")) and gen_kwargs.get("temperature", 0) > 0
        settings = {"max_new_tokens": max_new_tokens, "do_sample": do_sample, "num_beams": gen_kwargs.get("num_beams")}
        if do_sample:
            settings.update(temperature=gen_kwargs["temperature"], top_p=gen_kwargs.get("top_p"))
        inputs = self._inputs(texts, videos, queries)
        with torch.inference_mode():
            output = self.model.generate(**inputs, **{k: v for k, v in settings.items() if v is not None})
        decoded = self.processor.batch_decode(output[:, inputs["input_ids"].shape[1] :], skip_special_tokens=True)
        return [truncate_at_stop(text, gen_kwargs.get("until")).strip() for text in decoded]

    def loglikelihood(self, requests: list[Instance]) -> list[tuple[float, bool]]:
        """
        Log-probability of each request's continuation after its context (lmms-eval's prompt in the chat
        template), and whether greedy decoding would produce it: what lmms-eval's likelihood tasks
        (`egoschema_mcppl`, ...) score. One request per forward pass.
        """
        results = []
        for request in tqdm(requests, disable=self.rank != 0, desc="vilamp loglikelihood"):
            context, target, doc_to_visual, doc_id, task, split = request.args
            continuation = target if isinstance(target, str) else target(self.task_dict[task][split][doc_id])
            prompt = self._chat(context)
            tokenizer = self.processor.tokenizer
            # The generation prompt ends the assistant header with a newline, so the prompt's tokens are a prefix
            # of the full text's and the rest are the continuation's.
            num_continuation = len(tokenizer(prompt + continuation).input_ids) - len(tokenizer(prompt).input_ids)
            if num_continuation < 1:
                raise ValueError(f"{task} doc {doc_id}: the continuation {continuation!r} has no tokens.")
            video = self._video(doc_to_visual, doc_id, task, split)
            inputs = self._inputs([prompt + continuation], [video], [parse_prompt(context).question])
            with torch.inference_mode():
                logits = self.model(**inputs).logits[0, -num_continuation - 1 : -1].float()
            targets = inputs["input_ids"][0, -num_continuation:]
            log_probs = torch.log_softmax(logits, dim=-1).gather(1, targets[:, None])
            results.append((float(log_probs.sum()), bool((logits.argmax(-1) == targets).all())))
        return results

    def generate_until_multi_round(self, requests: list[Instance]) -> list[str]:
        """Not supported: the released model was evaluated on single-turn questions."""
        raise NotImplementedError("vilamp answers single-turn questions; multi-round tasks are not supported.")
