"""faster-whisper (CTranslate2): the CPU engine, and the GPU engine on CUDA 12 machines.

Batched (BatchedInferencePipeline over <= 30 s windows cut at pauses by app.asr.chunking, decoded batch_size
at a time) is 2-3x faster than the sequential loop on 2 cores (docs/benchmarks.md), and decoding only speech
windows keeps text off silence. Beam 3 by default: greedy int8 lost 1-3 WER points against openai-whisper's
greedy transcribe() on the same weights; beam 2 was at or below it for ~0-11% more CPU, and beam 3 takes
another 0.7-0.8 points off the dev episodes for 3-10% more time (either decoder; docs/benchmarks.md). No
conditioning on the previous window, so one bad window can't derail the rest of a long episode.

On CPU the model's encoder and decoder are swapped under faster-whisper's pipeline for faster ones where the
CPU allows (app.asr.cpu_encoder, app.asr.native): the pipeline, its windows and its second pass stay.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import threading
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

from app.asr import chunking, cpu_encoder
from app.asr.audio import SAMPLE_RATE
from app.asr.cores import CoreShare
from app.asr.cpu_encoder import CHOICES
from app.asr.engines.base import Progress
from app.asr.types import Segment, Word
from app.asr.weights import ct2_model

log = logging.getLogger(__name__)
ENCODERS = CHOICES  # auto | onnx | native | torch-bf16 | ctranslate2
DECODERS = ("auto", "native", "ctranslate2")
SECOND_PASS_BEAM = 5


def default_cpu_threads() -> int:
    # CTranslate2 scales to physical cores; more threads than cores only adds contention.
    return max(1, os.cpu_count() or 1)


def cpu_layout(total_threads: int) -> tuple[int, int]:
    """(workers, threads per worker) for `total_threads` CPU threads.

    Why workers and not one multi-threaded model: Whisper's decoder steps are tiny matrix-vector products, and
    a second thread *slows* them down (CTranslate2, tiny.en int8, 2 cores: 7.0 ms per beam-2 step with 2 threads,
    3.7 ms with 1), while the encoder scales well either way. So windows are split between independent
    single-threaded workers (up to 4; more threads go to each worker's encoder) that run side by side.
    """
    total = max(1, total_threads)
    workers = min(total, 4)
    return workers, max(1, total // workers)


def split_even(items: Sequence[Any], parts: int) -> list[list[Any]]:
    """`items` cut into at most `parts` contiguous runs whose lengths differ by at most one (order kept)."""
    parts = max(1, min(parts, len(items)))
    size, extra = divmod(len(items), parts)
    out, at = [], 0
    for i in range(parts):
        n = size + (1 if i < extra else 0)
        out.append(list(items[at : at + n]))
        at += n
    return out


def _one_blas_thread() -> contextlib.AbstractContextManager[Any]:
    """numpy's OpenBLAS (and any other BLAS loaded) on one thread while we transcribe.

    Why: OpenBLAS's threads keep spinning for a while after each call (here: the log-mel filterbank product in
    faster-whisper's feature extractor), and on 2 cores that spinning took the core the encoder needed right
    after: 0.20 s per window in the engine against 0.06 s alone; 0.10 s with one BLAS thread (docs/
    benchmarks.md). That product is small enough that one thread computes it as fast. The libraries are looked
    up on each call (~1 ms): a BLAS loaded after the first transcription (scipy's, torch's) is limited too.
    """
    from threadpoolctl import threadpool_limits

    return threadpool_limits(limits=1, user_api="blas")


def _stft_skipping_trailing_silence(
    stft: Callable[..., np.ndarray], input_array: np.ndarray, n_fft: int, hop_length: int, **kwargs: Any
) -> np.ndarray:
    """faster-whisper's STFT (`stft`, centred, reflect-padded) of a 1-D signal, without transforming the frames
    that lie wholly in its trailing zeros: they are zero.

    Why: the STFT is ~95 % of the feature extractor's time (~12-17 ms a window on a Zen 3) however little of
    the window is speech, since every window is padded to 30 s first (_SilencePadded): a 3 s clip is 3,000
    frames, 2,700 of them silence. Exact: the frames kept are computed from the same samples (the signal is cut
    n_fft zeros after its last non-zero sample, so even the reflected end reads zeros, as it does uncut), each
    frame's FFT does not depend on the others, and the rest are exact zeros; the power, mel product and log that
    follow run on the same full-width array as before (tests/test_asr_engines.py compares the two).
    """
    length = input_array.shape[-1]
    if input_array.ndim != 1 or length == 0 or not kwargs.get("center", True):
        return stft(input_array, n_fft, hop_length, **kwargs)
    last = length - int(np.argmax(input_array[::-1] != 0))  # one past the last non-zero sample (0: all zero)
    keep = last + n_fft
    if last == 0 or keep >= length:
        return stft(input_array, n_fft, hop_length, **kwargs)
    spoken = stft(input_array[:keep], n_fft, hop_length, **kwargs)
    frames = 1 + length // hop_length  # what the whole signal gives (centred: n_fft // 2 on either side)
    # complex64: what the extractor casts the STFT to next (half the bytes to write and read again).
    out = np.zeros((*spoken.shape[:-1], frames), dtype=np.complex64)
    out[..., : spoken.shape[-1]] = spoken
    return out


class _SilencePadded:
    """faster-whisper's batched pipeline pads each window's log-mel to 30 s with zeros, and a zero log-mel is
    not silence but a moderate hum: Whisper then treats the last sentence as running on past the window and
    leaves it out (whole sentences went missing on a 266 s episode). Padding the audio with silence before
    the STFT, as openai-whisper's transcribe() does, gives the model the real end of speech."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        # Its __call__ looks the STFT up on the instance (self.stft): this one skips the padding's frames.
        inner.stft = functools.partial(_stft_skipping_trailing_silence, type(inner).stft)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    def __call__(self, waveform: np.ndarray, padding: int = 160, chunk_length: int | None = None) -> Any:
        n_samples = int(self.inner.n_samples)
        if chunk_length is None and waveform.shape[-1] < n_samples:
            padding += n_samples - waveform.shape[-1]
        return self.inner(waveform, padding=padding, chunk_length=chunk_length)


class FasterWhisperEngine:
    name = "faster-whisper"

    def __init__(
        self,
        model: str = "tiny.en",
        *,
        device: str = "cpu",
        compute_type: str = "int8",
        batch_size: int = 8,
        cpu_threads: int | None = None,
        vad: str = "energy",
        beam_size: int = 3,
        encoder: str = "auto",
        trim_encoder_input: bool = True,
        decoder: str = "auto",
        cache_dir: Path | None = None,
    ) -> None:
        if vad not in ("energy", "silero", "none"):
            raise ValueError(f"unknown vad {vad!r}")
        if encoder not in ENCODERS:
            raise ValueError(f"unknown encoder {encoder!r} (choose from {', '.join(ENCODERS)})")
        if decoder not in DECODERS:
            raise ValueError(f"unknown decoder {decoder!r} (choose from {', '.join(DECODERS)})")
        self.model_name = model
        self.device = device
        self.compute_type = compute_type
        self.batch_size = batch_size
        self.cpu_threads = cpu_threads or default_cpu_threads()
        # On CPU, windows are decoded by `workers` single-threaded CTranslate2 workers side by side.
        parallel = device == "cpu" and batch_size > 1
        self.workers, self.threads_per_worker = cpu_layout(self.cpu_threads) if parallel else (1, self.cpu_threads)
        self.vad = vad
        self.beam_size = beam_size
        # auto on CPU: the native int8 encoder on AVX2 and AVX-512 VNNI CPUs (AMX tiles where there are), else the
        # int8 ONNX export (torch bf16 on AMX CPUs without a g++; app.asr.cpu_encoder), when there is a local model
        # and a cache folder; else CTranslate2's own. encoder_used says which runs once loaded.
        self.encoder = encoder
        # Short windows: the encoder sees the speech + 5 s, not 30 s (app.asr.encoder_input; swapped encoders only).
        self.trim_encoder_input = trim_encoder_input
        # auto on CPU: the native decoder (app.asr.native; AVX2 or AVX-512 VNNI) where the CPU and a g++ allow,
        # else CTranslate2's. decoder_used says which runs once loaded.
        self.decoder = decoder
        self.cache_dir = cache_dir
        self.encoder_used = ""
        self.decoder_used = ""
        # The native library's int8 kernels, once one of its halves runs: "avx512-vnni" (+ "+amx" where products run
        # on AMX tiles) or "avx2" (+ "+avx-vnni"): app.asr.native.library.describe; what the bench reports per engine.
        self.kernels_used = ""
        self._encoder_swap: cpu_encoder.EncoderSwap | None = None
        if batch_size <= 1:
            self.name = "faster-whisper-sequential"
        self._model: Any = None
        self._pipeline: Any = None
        self._pool: ThreadPoolExecutor | None = None
        self._generator: Any = None  # the native decoder's NativeGenerator, once swapped in
        # The cores, shared among the decoding workers at work (app.asr.cores): the native encoder and decoder
        # ask it before each window and step.
        self._cores = CoreShare(self.cpu_threads)
        self._lock = threading.Lock()

    def _load(self) -> None:
        with self._lock:
            if self._model is not None:
                return
            from faster_whisper import BatchedInferencePipeline, WhisperModel

            self._model = WhisperModel(
                ct2_model(self.model_name),
                device=self.device,
                compute_type=self.compute_type,
                cpu_threads=self.threads_per_worker,
                num_workers=self.workers,  # CTranslate2 workers: concurrent calls from our threads run in parallel
            )
            if self.batch_size > 1:
                self._model.feature_extractor = _SilencePadded(self._model.feature_extractor)
            self.encoder_used = "ctranslate2"
            if self.encoder in ("onnx", "native", "torch-bf16") or (self.encoder == "auto" and self.device == "cpu"):
                self._swap_encoder()
            self.decoder_used = "ctranslate2"
            if self.decoder == "native" or (self.decoder == "auto" and self.device == "cpu"):
                self._swap_decoder()
            self._pipeline = BatchedInferencePipeline(self._model)

    def _local_weights(self) -> tuple[Path, Path]:
        """(openai-whisper checkpoint, cache folder) our CPU encoder and decoder load (raises if there is none)."""
        from app.asr.weights import openai_checkpoint

        if self.cache_dir is None:
            raise RuntimeError("no cache folder for converted weights")
        checkpoint = Path(openai_checkpoint(self.model_name, self.cache_dir))
        if not checkpoint.is_file():
            raise RuntimeError(f"{self.model_name} is not a local model")
        return checkpoint, self.cache_dir

    def _swap_encoder(self) -> None:
        try:
            checkpoint, cache_dir = self._local_weights()
            encoder, name = cpu_encoder.load(self.encoder, checkpoint, cache_dir, threads=self.cpu_threads)
        except Exception as exc:
            if self.encoder != "auto":
                raise
            # auto: CTranslate2's encoder gives the same text, a little slower (docs/benchmarks.md).
            log.warning("Whisper encoder unavailable (%s: %s); using CTranslate2's", type(exc).__name__, exc)
            return
        if isinstance(getattr(encoder, "cores", None), CoreShare):  # the native encoder
            encoder.cores = self._cores  # type: ignore[attr-defined]
            from app.asr.native.library import describe

            self.kernels_used = describe(encoder.lib)  # type: ignore[attr-defined]
        self._encoder_swap = cpu_encoder.EncoderSwap(self._model.model, encoder, trim=self.trim_encoder_input)
        self._model.model = self._encoder_swap
        self.encoder_used = name

    def _swap_decoder(self) -> None:
        from app.asr.native.generate import DecoderSwap, NativeGenerator
        from app.asr.native.library import describe
        from app.asr.native.model import NativeModel

        try:
            generator = NativeGenerator(NativeModel(*self._local_weights()))
        except Exception as exc:
            if self.decoder != "auto":
                raise
            # auto: CTranslate2's decoder, as before (same rules; slower on the CPUs measured, docs/benchmarks.md).
            log.warning("native Whisper decoder unavailable (%s: %s); using CTranslate2's", type(exc).__name__, exc)
            return
        generator.cores = self._cores
        self.kernels_used = self.kernels_used or describe(generator.model.lib)
        self._model.model = DecoderSwap(self._model.model, generator)
        self._generator = generator
        self.decoder_used = "native"

    def warm_up(self) -> None:
        self._load()
        if self._encoder_swap is not None:
            self._encoder_swap.warm_up()
        # Real-ish input (noise) rather than zeros: VAD must find "speech" so the decoder runs too.
        rng = np.random.default_rng(0)
        noise = (rng.standard_normal(SAMPLE_RATE * 3 * self.workers) * 0.1).astype(np.float32)
        if self.workers > 1:  # one window per worker, so each CTranslate2 worker has run once
            windows = [(3.0 * i, 3.0 * (i + 1)) for i in range(self.workers)]
            list(self._decode_windows(noise, windows, dict(language="en", without_timestamps=False), None))
        else:
            self.transcribe(noise)

    def _decode_windows(
        self,
        audio: np.ndarray,
        windows: Sequence[tuple[float, float]],
        options: dict[str, Any],
        progress: Progress | None,
    ) -> Iterator[Any]:
        """Segments of `windows`, in order: contiguous runs of windows go to the workers in parallel, each run
        decoded batch_size windows at a time by its own BatchedInferencePipeline (which keeps per-call state)."""
        from faster_whisper import BatchedInferencePipeline

        runs = split_even(windows, self.workers)
        done = [0.0] * len(runs)
        lock = threading.Lock()

        def decode(index: int) -> list[Any]:
            pipeline = BatchedInferencePipeline(self._model)

            def run(
                spans: Sequence[tuple[float, float]], beam_size: int | None = None, *, again: bool = False
            ) -> list[Any]:
                clips = [{"start": s, "end": e} for s, e in spans]
                opts = options if beam_size is None else {**options, "beam_size": beam_size}
                # A second pass goes back in time: a fresh pipeline, so the word-timestamp state that the main
                # pass carries from window to window (last_speech_timestamp) is not applied to earlier audio.
                runner = BatchedInferencePipeline(self._model) if again else pipeline
                segments, _info = runner.transcribe(audio, batch_size=self.batch_size, clip_timestamps=clips, **opts)
                return list(segments)

            def rerun(spans: Sequence[tuple[float, float]]) -> list[Any]:
                # A wider beam for the few spans decoded twice: the narrow beam already took the jump over
                # speech once (seen: beam 2 kept "I'm always wondered." over 24 s, beam 5 said the answer).
                return run(spans, max(SECOND_PASS_BEAM, int(options.get("beam_size") or 1)), again=True)

            spans = runs[index]
            out: list[Any] = []
            for lo in range(0, len(spans), self.batch_size):
                batch = spans[lo : lo + self.batch_size]
                # What Whisper left unsaid (a window's last sentence, speech skipped under one long segment)
                # is decoded again: transcribe() seeks back to it, independent windows never would.
                out.extend(chunking.second_pass(batch, run(batch), rerun, audio=audio))
                if progress is not None:
                    with lock:  # audio seconds done over all runs, so the bar only moves forward
                        done[index] = batch[-1][1] - spans[0][0]
                        progress(sum(done))
            return out

        def working(index: int) -> list[Any]:
            # The native encoder and decoder ask the share before each window and step: a worker alone on the
            # CPU (a short file, or the last of the runs) takes every core (app.asr.cores).
            with self._cores.working():
                return decode(index)

        if len(runs) == 1:
            yield from working(0)
            return
        for result in self._workers().map(working, range(len(runs))):
            yield from result

    def _workers(self) -> ThreadPoolExecutor:
        """The decoding workers' threads, kept from call to call: what they keep per thread (the native encoder's
        and decoder's buffers) stays allocated rather than being mapped and zeroed again each transcription."""
        with self._lock:
            if self._pool is None:
                self._pool = ThreadPoolExecutor(max_workers=self.workers, thread_name_prefix="asr")
            return self._pool

    def transcribe(
        self, audio: np.ndarray, *, word_timestamps: bool = False, progress: Progress | None = None
    ) -> list[Segment]:
        with _one_blas_thread():
            return self._transcribe(audio, word_timestamps=word_timestamps, progress=progress)

    def _transcribe(self, audio: np.ndarray, *, word_timestamps: bool, progress: Progress | None) -> list[Segment]:
        self._load()
        common: dict[str, Any] = dict(
            language="en" if self.model_name.endswith(".en") else None,
            beam_size=self.beam_size,
            condition_on_previous_text=False,
            word_timestamps=word_timestamps,
            without_timestamps=False,
            compression_ratio_threshold=2.4,
            log_prob_threshold=-1.0,
            no_speech_threshold=0.6,
        )
        if audio.size == 0:
            return []
        if self.batch_size > 1:
            if self.vad == "silero":
                segments, _info = self._pipeline.transcribe(audio, batch_size=self.batch_size, **common)
            else:
                windows = (
                    chunking.pack_windows(chunking.energy_regions(audio))
                    if self.vad == "energy"
                    else chunking.fixed_windows(audio.size / SAMPLE_RATE)
                )
                if not windows:
                    return []  # nothing above the noise floor: no text over silence
                segments = self._decode_windows(audio, windows, common, progress)
                progress = None  # _decode_windows reports progress itself
        else:
            segments, _info = self._model.transcribe(audio, vad_filter=self.vad == "silero", **common)
        out: list[Segment] = []
        for seg in segments:
            words = tuple(
                Word(start=float(w.start), end=float(w.end), word=w.word, probability=float(w.probability))
                for w in (seg.words or ())
            )
            out.append(
                Segment(
                    start=float(seg.start),
                    end=float(seg.end),
                    text=seg.text.strip(),
                    words=words,
                    avg_logprob=float(seg.avg_logprob),
                    compression_ratio=float(seg.compression_ratio),
                    no_speech_prob=float(seg.no_speech_prob),
                )
            )
            if progress is not None:
                progress(float(seg.end))
        return out
