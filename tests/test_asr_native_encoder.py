"""The native Whisper encoder (app.asr.native.encoder): close to openai-whisper's float32 encoder on real speech,
the same result with any number of threads and either kernel family, and the words through the engine.

Like the native decoder's tests (tests/test_asr_native.py), these need an x86-64 CPU with AVX2 and g++; elsewhere
they are skipped with the reason (`auto` then picks another encoder, which its own tests cover).
"""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np
import pytest

from app.asr.audio import load_audio
from app.asr.engines.faster import FasterWhisperEngine
from app.asr.hygiene import clean_segments
from app.asr.native import library
from app.asr.native.encoder import NativeEncoder
from app.asr.weights import openai_checkpoint
from app.asr.wer import corpus_wer, find_reference
from tests.native_builds import avx2_default, other_family, other_vnni, other_widening

SPEECH = Path(__file__).parent / "data" / "speech"
CLIPS = ["jfk.mp3", "sense_and_sensibility_01_austen_64kb-0880.wav", "sense_and_sensibility_01_austen_64kb-0930.wav"]
NO_NATIVE = library.missing()
pytestmark = pytest.mark.skipif(NO_NATIVE is not None, reason=f"native library can't run here: {NO_NATIVE}")


@pytest.fixture(scope="module")
def checkpoint(whisper_cache: Path) -> Path:
    return Path(openai_checkpoint("tiny.en", whisper_cache))


@pytest.fixture(scope="module")
def native(checkpoint: Path, whisper_cache: Path) -> NativeEncoder:
    return NativeEncoder(checkpoint, whisper_cache, threads=2)


@pytest.fixture(scope="module")
def mels() -> np.ndarray:
    """(2, 80, 3000) log-mel of two real clips, each padded to 30 s."""
    import torch
    import whisper

    rows = [whisper.pad_or_trim(load_audio(SPEECH / name)) for name in CLIPS[:2]]
    return np.stack([whisper.log_mel_spectrogram(torch.from_numpy(a)).numpy() for a in rows])


def cosine(a: np.ndarray, b: np.ndarray) -> float:
    """Mean over frames of the cosine similarity of two (frames, width) feature arrays."""
    per_frame = (a * b).sum(-1) / (np.linalg.norm(a, axis=-1) * np.linalg.norm(b, axis=-1))
    return float(per_frame.mean())


def test_native_encoder_is_close_to_openai_whispers_float32_encoder(
    native: NativeEncoder, checkpoint: Path, mels: np.ndarray
) -> None:
    import torch
    import whisper

    from app.asr.encoder_input import encode_any_length

    encoder = whisper.load_model(str(checkpoint), device="cpu").float().eval().encoder
    for frames in (3000, 1000):  # a full window, and a short one cut after its speech (app.asr.encoder_input)
        mel = np.ascontiguousarray(mels[:, :, :frames])
        with torch.no_grad():
            ref = encode_any_length(encoder, torch.from_numpy(mel)).numpy()
        got = native(mel)
        assert got.dtype == np.float32 and got.shape == ref.shape == (2, frames // 2, 384)
        for row in range(2):
            # int8 everywhere, attention included: 0.997-0.999 measured (ONNX Runtime's int8 export: 0.994-0.999).
            assert cosine(got[row], ref[row]) > 0.995, (frames, row)
        # A broken kernel is far below that bound; so is another row's features.
        assert cosine(got[0], ref[1]) < 0.9


def test_threads_change_the_speed_not_the_result(checkpoint: Path, whisper_cache: Path, mels: np.ndarray) -> None:
    """Each output block and head is computed the same whichever thread takes it, so 1 thread, 2 threads and two
    calls at once (which share the threads: one per decoding worker) give the same bits."""
    mel = np.ascontiguousarray(mels[:1, :, :2000])
    one = NativeEncoder(checkpoint, whisper_cache, threads=1)(mel)
    two = NativeEncoder(checkpoint, whisper_cache, threads=2)
    assert np.array_equal(two(mel), one)
    results: list[np.ndarray] = []

    def call() -> None:
        results.append(two(mel))

    workers = [threading.Thread(target=call) for _ in range(2)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    assert len(results) == 2 and all(np.array_equal(r, one) for r in results)


def test_each_window_takes_the_share_of_the_cores_free_when_it_starts(
    checkpoint: Path, whisper_cache: Path, mels: np.ndarray
) -> None:
    """The encoder asks its CoreShare before each window (app.asr.cores): while another decoding worker is at work
    a window gets one of the two cores, and once it has finished the next window takes both."""
    encoder = NativeEncoder(checkpoint, whisper_cache, threads=2)
    cores = encoder.cores
    lib = encoder.lib
    busy, leave = threading.Event(), threading.Event()
    seen: list[int] = []

    class Spy:  # the library, with each window's thread count written down
        def __getattr__(self, name: str) -> object:
            return getattr(lib, name)

        def encode(self, handle: object, mel: object, frames: int, out: object, threads: int) -> None:
            seen.append(threads)
            if len(seen) == 1:
                leave.set()  # the other worker finishes during the first window
                while cores.busy > 1:
                    pass
            lib.encode(handle, mel, frames, out, threads)

    def other_worker() -> None:
        with cores.working():
            busy.set()
            leave.wait(10)

    worker = threading.Thread(target=other_worker)
    worker.start()
    busy.wait(10)
    encoder.lib = Spy()
    try:
        out = encoder(np.ascontiguousarray(mels[:, :, :400]))  # two windows
    finally:
        worker.join()
    assert seen == [1, 2] and cores.busy == 0
    assert np.array_equal(out, NativeEncoder(checkpoint, whisper_cache, threads=1)(mels[:, :, :400]))


def test_input_it_cannot_encode_is_refused(native: NativeEncoder, mels: np.ndarray) -> None:
    with pytest.raises(ValueError, match="even frames"):
        native(np.ascontiguousarray(mels[:, :, :999]))
    with pytest.raises(ValueError, match="even frames"):
        native(np.zeros((1, 128, 1000), np.float32))  # large-v3's 128 mel bins for tiny.en's 80
    with pytest.raises(ValueError, match="even frames"):
        native(np.zeros((1, 80, 3002), np.float32))  # past the positional embedding


def test_the_avx512_and_avx2_encoders_agree(
    native: NativeEncoder, checkpoint: Path, whisper_cache: Path, mels: np.ndarray
) -> None:
    """Whichever kernel family this CPU builds, the other is built too (as in the decoder's test): the AVX2 kernels
    with -mno-avx512f on an AVX-512 CPU, the AVX-512 ones through tests/avx512_emulation.h on any other. Both get
    the weights AVX2 needs (model.quantize_rows' pair bound), so the linear layers' integer products agree exactly;
    AVX2's attention takes 7-bit keys and values (kernels.h), and float sums in another order can move a value to
    the neighbouring int8 step, which the layers after carry on, so the bound is on the features, not the bits."""
    extra = other_family(native.kernels)
    ours = NativeEncoder(checkpoint, whisper_cache, threads=2, pair_bound=True)
    other = NativeEncoder(checkpoint, whisper_cache, threads=2, extra=extra, pair_bound=True)
    assert {ours.kernels, other.kernels} == {"avx512-vnni", "avx2"}
    mel = np.ascontiguousarray(mels[:1, :, :1000])
    a, b = ours(mel)[0], other(mel)[0]
    assert np.abs(a).max() > 1  # real features, not an untouched buffer
    # 0.9998-0.9999 measured on an Emerald Rapids (AVX-512 VNNI vs AVX2 vs emulated, 8-bit attention); 0.99948 on a
    # Zen 3 since AVX2's attention takes 7-bit keys and values (2026-12-06).
    assert cosine(a, b) > 0.999


def test_each_kernel_familys_own_weights_stay_close_to_float32(
    native: NativeEncoder, checkpoint: Path, whisper_cache: Path, mels: np.ndarray
) -> None:
    """What each family runs in production: AVX-512 full 8-bit weights, AVX2 the pair-bounded ones its vpmaddubsw
    needs (model.quantize_rows), both close to float32 (the other family built as in the test above)."""
    import torch
    import whisper

    from app.asr.encoder_input import encode_any_length

    other = NativeEncoder(checkpoint, whisper_cache, threads=2, extra=other_family(native.kernels))
    avx2 = native if native.kernels == "avx2" else other
    assert avx2.pair_bound and not (native if avx2 is other else other).pair_bound
    encoder = whisper.load_model(str(checkpoint), device="cpu").float().eval().encoder
    mel = np.ascontiguousarray(mels[:1, :, :1000])
    with torch.no_grad():
        ref = encode_any_length(encoder, torch.from_numpy(mel)).numpy()[0]
    for enc in (native, other):
        # 0.9975 (AVX-512) and 0.9975 (AVX2) on a Zen 4 over 16 dev windows; 0.9978 with AVX2's exact int16 kernel.
        assert cosine(enc(mel)[0], ref) > 0.995, enc.kernels


def test_the_amx_path_gives_the_same_bits_as_vpdpbusd(
    native: NativeEncoder, checkpoint: Path, whisper_cache: Path, mels: np.ndarray
) -> None:
    """AMX's tdpbusd and AVX-512's vpdpbusd add up the same uint8 x int8 products, and the epilogue is the same, so
    the encoder's output is the same to the bit either way. On a CPU with AMX the library's own two paths are
    compared; elsewhere the AMX path runs through tests/amx_emulation.h (plain C++), and the AVX-512 kernels too
    through tests/avx512_emulation.h on a CPU without AVX-512."""
    here = Path(__file__).parent
    if native.amx:
        encoder = native
    else:
        extra = ["-include", str(here / "amx_emulation.h")]
        if native.kernels != "avx512-vnni":
            extra = ["-include", str(here / "avx512_emulation.h"), *extra]
        encoder = NativeEncoder(checkpoint, whisper_cache, threads=2, extra=extra)
        assert encoder.amx and encoder.kernels == "avx512-vnni"
    mel = np.ascontiguousarray(mels[:1, :, :398])  # 199 frames after the convolutions: a part-filled last tile
    try:
        assert encoder.lib.set_amx(1) == 1
        tiles = encoder(mel)
        assert encoder.lib.set_amx(0) == 0
        vnni = encoder(mel)
    finally:
        encoder.lib.set_amx(1)
    assert np.abs(tiles).max() > 1  # real features, not an untouched buffer
    assert np.array_equal(tiles, vnni)


@pytest.mark.parametrize("way", ["widened", "multiplied"])
def test_the_avx2_kernels_widen_and_multiply_either_way_to_the_same_bits(
    way: str, checkpoint: Path, whisper_cache: Path, mels: np.ndarray
) -> None:
    """AVX2's two ways of widening vpmaddubsw's int16 pair sums (kernels.h: vpmaddwd by ones; shifts and adds where
    one pipe does every vector multiply, AMD Zen 1), and AVX-VNNI's vpdpbusd in place of both (Alder Lake and later,
    Zen 5), add up the same integers: the encoder's features and the decoder's logits are the same to the bit.
    Built both ways on any AVX2 or AVX-512 CPU (vpdpbusd emulated where the CPU has no AVX-VNNI)."""
    from app.asr.native.model import NativeModel

    ours = library.load(whisper_cache)
    builds = (avx2_default(ours), other_widening(ours) if way == "widened" else other_vnni(ours))
    encoders = [NativeEncoder(checkpoint, whisper_cache, threads=2, extra=extra) for extra in builds]
    assert {e.kernels for e in encoders} == {"avx2"}
    ways = [(int(e.lib.widen_by_shifts()), int(e.lib.avx_vnni())) for e in encoders]
    assert ways[0] != ways[1] and sorted(w[0] if way == "widened" else w[1] for w in ways) == [0, 1]
    mel = np.ascontiguousarray(mels[:1, :, :1000])
    a, b = (e(mel) for e in encoders)
    assert np.abs(a).max() > 1  # real features, not an untouched buffer
    assert np.array_equal(a, b)

    # The decoder on those features: 7 rows (a full group of 6 or of 3, and a remainder), the vocabulary included.
    prefix = [50257, 50363, 843, 523, 616, 5891]
    rows, slots = np.arange(7, dtype=np.int32), np.zeros(7, np.int32)
    logits = []
    for extra in builds:
        model = NativeModel(checkpoint, whisper_cache, extra=extra)
        cache, cross = model.caches(a, 7)
        steps = [model.step(np.full(7, t, np.int32), 1, rows, slots, a.shape[1], pos, cache, cross) for pos, t in
                 enumerate(prefix)]  # fmt: skip
        logits.append(np.stack(steps))
    assert np.abs(logits[0]).max() > 1
    assert np.array_equal(logits[0], logits[1])


@pytest.mark.slow
def test_the_engine_with_the_native_encoder_gives_the_words(whisper_cache: Path) -> None:
    engine = FasterWhisperEngine("tiny.en", batch_size=4, encoder="native", cache_dir=whisper_cache)
    pairs = []
    for name in CLIPS:
        reference = find_reference(SPEECH / name)
        assert reference
        pairs.append(
            (reference, " ".join(s.text for s in clean_segments(engine.transcribe(load_audio(SPEECH / name)))))
        )
    assert engine.encoder_used == "native-int8"
    assert corpus_wer(pairs) <= 0.12


@pytest.mark.parametrize("family", ["this cpu's", "the other"])
def test_attention_keys_and_values_are_packed_as_the_kernels_read_them(family: str, whisper_cache: Path) -> None:
    """pack_head (vectorised per kernel family) against numpy: keys quantized per frame after their mean is taken
    off, values per dimension, to each family's weight limit (127; 63 on AVX2), laid out [n/16][k/4][16][4]; the
    keys' comp = 128 x the row sums (the queries' uint8 offset), the values' zero (the probabilities they multiply
    have no offset). An odd frame count exercises the AVX2 values' 4-frame loop and its tail."""
    from app.asr.native.model import ptr

    ours = library.load(whisper_cache)
    other = other_family(ours.kernels().decode())
    lib = ours if family == "this cpu's" else library.load(whisper_cache, extra=other)
    limit = 63 if lib.kernels() == b"avx2" else 127
    T, Tp, stride = 37, 48, 3 * 64  # frames, padded to 16; rows inside a wider qkv row as attention_head reads them
    rng = np.random.default_rng(5)
    qkv = (rng.standard_normal((T, stride)) * rng.uniform(0.2, 3, stride) + rng.normal(0, 2, stride)).astype(np.float32)
    rows = qkv[:, 64:128]  # a head's keys (or values) inside the row

    def packed_index(o: np.ndarray, j: np.ndarray, k: int) -> np.ndarray:
        return ((o // 16) * (k // 4) + j // 4) * 64 + (o % 16) * 4 + j % 4

    for per_row in (1, 0):
        shift = rows.mean(axis=0).astype(np.float32) if per_row else np.zeros(64, np.float32)
        n, k = (Tp, 64) if per_row else (64, Tp)
        pack = np.full((n + 15) // 16 * 16 * k, 99, np.int8)
        comp, scale = np.zeros(n, np.int32), np.full(n, np.nan, np.float32)
        lib.pack_attention_head(ptr(qkv[:, 64:]), stride, T, Tp, per_row, ptr(shift), ptr(pack), ptr(comp), ptr(scale))
        v = rows - shift
        amax = np.abs(v).max(axis=1) if per_row else np.maximum(np.abs(v).max(axis=0), np.float32(1e-12))
        inv = (np.float32(limit) / amax).astype(np.float32)
        q = np.rint(v * (inv[:, None] if per_row else inv[None, :])).astype(np.int64)  # [frame][dim]
        want = np.zeros_like(pack, dtype=np.int64)
        f, e = np.meshgrid(np.arange(T), np.arange(64), indexing="ij")
        o, j = (f, e) if per_row else (e, f)
        want[packed_index(o, j, k)] = q
        got = pack.astype(np.int64)
        assert np.abs(got - want).max() <= 1  # the layout; a division's last bit may move one rounding
        assert np.mean(got != want) < 0.01
        assert np.abs(got).max() <= limit
        sums = np.zeros(n, np.int64)
        np.add.at(sums, o.ravel(), got[packed_index(o, j, k)].ravel())
        np.testing.assert_array_equal(comp, 128 * sums if per_row else 0)
        if per_row:
            np.testing.assert_allclose(scale[:T], amax / limit, rtol=1e-6)
            assert (scale[T:] == 0).all()  # padding frames: scale 0, their scores come out 0
        else:
            np.testing.assert_allclose(scale[:64], amax / limit, rtol=1e-6)
