"""openai-whisper (torch): the GPU engine, and the baseline every benchmark compares against.

Two modes over the same weights:
- "sequential": plain `model.transcribe()` — the baseline (30 s windows one at a time, seeking on timestamps).
- "batched": VAD cuts the audio into <= 30 s windows at pauses; windows are decoded batch_size at a time with
  one DecodingTask (greedy, timestamp tokens on, vectorised timestamp rules); each window's timestamp tokens
  give segment times, offset by the window start; segments come back in audio order. Windows that fail
  openai-whisper's own quality checks (compression ratio, avg logprob) are decoded again at higher temperatures,
  as transcribe() does (on a GPU all temperatures in one batch).
The CTranslate2 tiny.en weights are converted once to a checkpoint (app.asr.convert) and loaded by path.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from app.asr import chunking, hygiene
from app.asr.audio import SAMPLE_RATE
from app.asr.engines.base import Progress
from app.asr.types import Segment, Word
from app.asr.weights import alignment_heads, openai_checkpoint

FALLBACK_TEMPERATURES = (0.2, 0.4, 0.6, 0.8, 1.0)
TIME_PRECISION = 0.02  # seconds per timestamp token


class OpenAIWhisperEngine:
    def __init__(
        self,
        model: str = "tiny.en",
        *,
        device: str = "cpu",
        batch_size: int = 16,
        mode: str = "batched",
        cache_dir: Path | None = None,
        vad: str = "energy",
        vectorised_rules: bool = True,
        transcribe_options: dict[str, Any] | None = None,
    ) -> None:
        if mode not in ("batched", "sequential"):
            raise ValueError(f"unknown mode {mode!r}")
        if vad not in ("energy", "silero", "none"):
            raise ValueError(f"unknown vad {vad!r}")
        self.model_name = model
        self.device = device
        self.batch_size = max(1, batch_size)
        self.mode = mode
        self.name = "openai-whisper" if mode == "sequential" else "openai-whisper-batched"
        self.cache_dir = cache_dir or Path("var/models/openai-whisper")
        self.vad = vad
        self.vectorised_rules = vectorised_rules
        # All fallback temperatures in one batch on a GPU; one after another (only as needed) on a CPU.
        self.parallel_fallback = device.startswith("cuda")
        self.transcribe_options = transcribe_options or {}
        self._model: Any = None
        self._lock = threading.Lock()

    # --- loading -----------------------------------------------------------------------------------
    @property
    def fp16(self) -> bool:
        return self.device.startswith("cuda")

    def _load(self) -> Any:
        with self._lock:
            if self._model is None:
                import torch
                import whisper

                checkpoint = openai_checkpoint(self.model_name, self.cache_dir)
                model = whisper.load_model(checkpoint, device=self.device)
                heads = alignment_heads(checkpoint)
                if heads:
                    # The model's own cross-attention heads for word timing (load_model only knows named models).
                    mask = torch.zeros(model.dims.n_text_layer, model.dims.n_text_head, dtype=torch.bool)
                    for layer, head in heads:
                        mask[layer, head] = True
                    model.register_buffer("alignment_heads", mask.to_sparse().to(self.device), persistent=False)
                self._model = model
            return self._model

    def warm_up(self) -> None:
        self._load()
        rng = np.random.default_rng(0)
        noise = (rng.standard_normal(SAMPLE_RATE * 3) * 0.1).astype(np.float32)
        if self.mode == "batched":
            # Warm the batch shape too (allocation and kernel choice happen on the first call of a shape).
            self._decode_windows(noise, [(0.0, 3.0)] * self.batch_size, word_timestamps=False)
        else:
            self.transcribe(noise)

    # --- public ------------------------------------------------------------------------------------
    def transcribe(
        self, audio: np.ndarray, *, word_timestamps: bool = False, progress: Progress | None = None
    ) -> list[Segment]:
        if self.mode == "sequential":
            return self._transcribe_sequential(audio, word_timestamps=word_timestamps, progress=progress)
        duration = audio.size / SAMPLE_RATE
        if self.vad == "energy":
            windows = chunking.pack_windows(chunking.energy_regions(audio))
        elif self.vad == "silero":
            windows = chunking.pack_windows(chunking.speech_regions(audio))
        else:
            windows = chunking.fixed_windows(duration)
        samples = self._samples(audio)
        segments: list[Segment] = []
        for i in range(0, len(windows), self.batch_size):
            batch = windows[i : i + self.batch_size]
            decoded = chunking.second_pass(
                batch,
                self._decode_windows(samples, batch, word_timestamps=word_timestamps),
                lambda spans: self._decode_windows(samples, spans, word_timestamps=word_timestamps, fallback=False),
                audio=audio,
            )
            segments.extend(decoded)
            if progress is not None:
                progress(batch[-1][1])
        return segments

    # --- sequential (baseline) -----------------------------------------------------------------------
    def _transcribe_sequential(
        self, audio: np.ndarray, *, word_timestamps: bool, progress: Progress | None
    ) -> list[Segment]:
        model = self._load()
        result = model.transcribe(
            audio, fp16=self.fp16, word_timestamps=word_timestamps, verbose=None, **self.transcribe_options
        )
        out = [_segment_from_dict(s) for s in result["segments"]]
        if progress is not None:
            progress(audio.size / SAMPLE_RATE)
        return out

    # --- batched -------------------------------------------------------------------------------------
    def _samples(self, audio: np.ndarray | Any) -> Any:
        """The audio as a float32 tensor on the engine's device, moved there once per transcription."""
        import torch

        if isinstance(audio, torch.Tensor):
            return audio.to(self.device)
        return torch.from_numpy(np.ascontiguousarray(audio, dtype=np.float32)).to(self.device)

    def _mels(self, audio: np.ndarray | Any, windows: Sequence[tuple[float, float]]) -> Any:
        """Log-mel spectrograms of the windows, one (batch, n_mels, 3000) tensor from one batched STFT."""
        model = self._load()
        mels = batched_log_mel(self._samples(audio), windows, model.dims.n_mels)
        return mels.half() if self.fp16 else mels

    def _run_task(
        self, mels: Any, temperature: float | Sequence[float], *, sample_len: int | None = None
    ) -> list[Any]:
        """Decode a batch of spectrograms; a sequence of temperatures gives each row its own.

        sample_len caps the tokens per row (default: openai-whisper's 224). A batch decodes until its last row
        ends, so one row stuck in a loop holds every other row's step count hostage: the cap keeps that to
        what the window's duration could hold.
        """
        import torch
        from torch.nn.attention import sdpa_kernel
        from whisper.decoding import DecodingOptions

        from app.asr.engines.timestamp_rules import SDPA_BACKENDS, make_task

        model = self._load()
        english_only = not model.is_multilingual
        per_row = not isinstance(temperature, float | int)
        options = DecodingOptions(
            language="en" if english_only else None,
            temperature=min(temperature) if per_row else float(temperature),  # type: ignore[arg-type]
            sample_len=sample_len,
            without_timestamps=False,
            fp16=self.fp16,
        )
        with torch.no_grad(), sdpa_kernel(SDPA_BACKENDS):
            # Per-row temperatures need the device-side greedy decoder, whatever vectorised_rules says.
            task = make_task(model, options, vectorised=self.vectorised_rules or per_row)
            if per_row:
                task.decoder.temperature = torch.tensor(temperature, device=mels.device)[:, None]
            return list(task.run(mels))

    def _fallback(self, mels: Any, results: list[Any], *, sample_len: int | None = None) -> list[Any]:
        """Decode again, at rising temperatures, the windows whose result looks like a loop or garbage.

        As transcribe() does, a window takes the first temperature whose result passes the checks; where none
        passes it takes its likeliest try (highest avg_logprob), not the last one: at temperature 1.0 tiny.en
        mostly invents. On a GPU every temperature is decoded in one batch (rows are nearly free there; five
        decoding loops one after another are not), as long as the rows fit in one batch (memory stays what
        batch_size says); on a CPU, or with more rows, one temperature after another, only as needed.
        """
        retry = [i for i, r in enumerate(results) if _needs_fallback(r)]
        if not retry:
            return results
        tries: dict[int, list[Any]] = {i: [results[i]] for i in retry}
        if self.parallel_fallback and len(retry) * len(FALLBACK_TEMPERATURES) <= self.batch_size:
            temps = [t for t in FALLBACK_TEMPERATURES for _ in retry]
            decoded = self._run_task(mels[retry * len(FALLBACK_TEMPERATURES)], temps, sample_len=sample_len)
            for k, r in enumerate(decoded):
                tries[retry[k % len(retry)]].append(r)
        else:
            pending = retry
            for temperature in FALLBACK_TEMPERATURES:
                decoded = self._run_task(mels[pending], temperature, sample_len=sample_len)
                for i, r in zip(pending, decoded, strict=True):
                    tries[i].append(r)
                pending = [i for i in pending if _needs_fallback(tries[i][-1])]
                if not pending:
                    break
        out = list(results)
        for i, attempts in tries.items():
            out[i] = pick_attempt(attempts)
        return out

    def _decode_windows(
        self,
        audio: np.ndarray | Any,
        windows: Sequence[tuple[float, float]],
        *,
        word_timestamps: bool,
        fallback: bool = True,
    ) -> list[Segment]:
        """Segments of each window. fallback=False (second pass): one greedy decode, and a result that is a
        repetition loop is dropped instead of retried: the first pass already gave this audio its chance."""
        mels = self._mels(audio, windows)
        sample_len = token_budget(max(end - start for start, end in windows))
        results = self._run_task(mels, 0.0, sample_len=sample_len)
        if fallback:
            results = self._fallback(mels, results, sample_len=sample_len)
        model = self._load()
        from whisper.tokenizer import get_tokenizer

        tokenizer = get_tokenizer(model.is_multilingual, num_languages=model.num_languages, language="en")
        out: list[Segment] = []
        for (start, end), mel, result in zip(windows, mels, results, strict=True):
            if _is_silence(result):
                continue
            if not fallback and result.compression_ratio > hygiene.COMPRESSION_RATIO_MAX:
                continue
            pieces = split_on_timestamps(list(result.tokens), tokenizer.timestamp_begin, end - start)
            raw = [
                {
                    "seek": round(start * 100),
                    "start": start + s,
                    "end": start + e,
                    "tokens": toks,
                    "text": tokenizer.decode(toks).strip(),
                }
                for s, e, toks in pieces
            ]
            raw = [r for r in raw if r["text"]]
            if word_timestamps and raw:
                from whisper.timing import add_word_timestamps

                add_word_timestamps(
                    segments=raw,
                    model=model,
                    tokenizer=tokenizer,
                    mel=mel,
                    num_frames=round((end - start) * 100),
                    last_speech_timestamp=start,
                )
            for r in raw:
                r.update(
                    avg_logprob=result.avg_logprob,
                    compression_ratio=result.compression_ratio,
                    no_speech_prob=result.no_speech_prob,
                )
                out.append(_segment_from_dict(r))
        return out


def batched_log_mel(samples: Any, windows: Sequence[tuple[float, float]], n_mels: int) -> Any:
    """whisper.log_mel_spectrogram(piece, padding=N_SAMPLES)[:, :N_FRAMES] for every window, in one STFT.

    Each window's audio is padded with silence to 30 s before the transform (as transcribe() does, rather than
    padding in mel space) and normalised against its own loudest frame, so the rows equal openai-whisper's own
    per-window spectrograms. One call instead of one per window: on a GPU a batch of 128 windows is a handful of
    kernels rather than hundreds of small ones.
    """
    import torch
    from whisper.audio import HOP_LENGTH, N_FFT, N_SAMPLES, mel_filters

    pieces = torch.zeros(len(windows), N_SAMPLES, dtype=torch.float32, device=samples.device)
    for row, (start, end) in enumerate(windows):
        piece = samples[int(start * SAMPLE_RATE) : int(end * SAMPLE_RATE)][:N_SAMPLES]
        pieces[row, : piece.shape[0]] = piece
    stft = torch.stft(
        pieces, N_FFT, HOP_LENGTH, window=torch.hann_window(N_FFT, device=samples.device), return_complex=True
    )
    power = stft[..., :-1].abs() ** 2
    log_spec = torch.clamp(mel_filters(samples.device, n_mels) @ power, min=1e-10).log10()
    log_spec = torch.maximum(log_spec, log_spec.amax(dim=(1, 2), keepdim=True) - 8.0)
    return (log_spec + 4.0) / 4.0


# Fast speech is ~4 words/s (~5.5 tokens with timestamps); 8/s + 16 leaves room and still stops a loop early.
TOKENS_PER_SECOND_MAX = 8
MAX_SAMPLE_LEN = 224  # openai-whisper's own cap: half the text context


def token_budget(seconds: float) -> int:
    """Most tokens a window of this many seconds of speech can need (timestamps included)."""
    return min(MAX_SAMPLE_LEN, int(seconds * TOKENS_PER_SECOND_MAX) + 16)


def pick_attempt(attempts: Sequence[Any]) -> Any:
    """The first attempt (in temperature order) that passes the quality checks, else the likeliest one that is
    not a loop (a repetition loop is often the likeliest text of all), as faster-whisper picks."""
    for attempt in attempts:
        if not _needs_fallback(attempt):
            return attempt
    not_loops = [a for a in attempts if a.compression_ratio <= hygiene.COMPRESSION_RATIO_MAX]
    return max(not_loops or attempts, key=lambda r: r.avg_logprob)


def _is_silence(result: Any) -> bool:
    """The model agrees with itself that the window is silence: likely no speech, and unsure of any text."""
    return bool(result.no_speech_prob > hygiene.NO_SPEECH_MIN and result.avg_logprob < hygiene.LOGPROB_MIN)


def _needs_fallback(result: Any) -> bool:
    if _is_silence(result):
        return False  # nothing to rescue
    return bool(result.compression_ratio > hygiene.COMPRESSION_RATIO_MAX or result.avg_logprob < hygiene.LOGPROB_MIN)


def split_on_timestamps(
    tokens: list[int], timestamp_begin: int, window_seconds: float
) -> list[tuple[float, float, list[int]]]:
    """(start, end, text tokens) per segment from one window's tokens <|t0|> text <|t1|><|t1|> text <|t2|>.

    Times are relative to the window and clamped to it; text after the last timestamp ends at the window end.
    """
    out: list[tuple[float, float, list[int]]] = []
    current: list[int] = []
    start: float | None = None
    for token in tokens:
        if token >= timestamp_begin:
            t = min((token - timestamp_begin) * TIME_PRECISION, window_seconds)
            if current:
                out.append((start if start is not None else t, max(t, start or 0.0), current))
                current = []
            start = t
        else:
            current.append(token)
    if current:
        out.append((start or 0.0, window_seconds, current))
    return out


def _segment_from_dict(s: dict[str, Any]) -> Segment:
    words = tuple(
        Word(start=float(w["start"]), end=float(w["end"]), word=w["word"], probability=float(w["probability"]))
        for w in s.get("words") or ()
    )
    return Segment(
        start=float(s["start"]),
        end=float(s["end"]),
        text=str(s["text"]).strip(),
        words=words,
        avg_logprob=s.get("avg_logprob"),
        compression_ratio=s.get("compression_ratio"),
        no_speech_prob=s.get("no_speech_prob"),
    )
