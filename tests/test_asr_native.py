"""The native Whisper decoder (app.asr.native): the same rules as openai-whisper / CTranslate2, the same
words as CTranslate2's decoder, and CTranslate2 whenever it can't run or is asked for something it doesn't do.

Tests that run the kernels need an x86-64 CPU with AVX2 (AVX-512 VNNI kernels where the CPU has them) and g++;
elsewhere they are skipped with the reason (the engine then uses CTranslate2's decoder, which the other ASR tests
cover).
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from app.asr.audio import load_audio
from app.asr.cores import CoreShare
from app.asr.engines.faster import FasterWhisperEngine
from app.asr.hygiene import clean_segments
from app.asr.native import generate, library
from app.asr.weights import openai_checkpoint
from app.asr.wer import corpus_wer, find_reference, wer
from tests.native_builds import EMULATION, FAMILIES, avx2_default, family_build, other_vnni, other_widening

SPEECH = Path(__file__).parent / "data" / "speech"
CLIPS = ["jfk.mp3", "sense_and_sensibility_01_austen_64kb-0880.wav", "sense_and_sensibility_01_austen_64kb-0930.wav"]
NO_NATIVE = library.missing()
needs_native = pytest.mark.skipif(NO_NATIVE is not None, reason=f"native decoder can't run here: {NO_NATIVE}")
TINY_EN_VOCAB = 51864


@pytest.fixture(scope="module")
def tokens() -> generate.Tokens:
    return generate.Tokens.for_vocabulary(TINY_EN_VOCAB)


def random_sampled(rng: random.Random, t: generate.Tokens) -> list[int]:
    """A sampled sequence as Whisper writes them: <|t|> text <|t'|><|t'|> text ... (some cut mid-way)."""
    out: list[int] = []
    now = t.timestamp_begin + rng.randrange(0, 40)
    for _ in range(rng.randrange(0, 4)):
        out.append(now)
        out += [rng.randrange(0, t.eot) for _ in range(rng.randrange(1, 4))]
        now += rng.randrange(1, 30)
        out += [now, now] if rng.random() < 0.7 else [now]
    return out[: rng.randrange(0, len(out) + 1)] if out else out


def openai_filtered_logprobs(logits: np.ndarray, seqs: list[list[int]], prompt: list[int], suppress: list[int]) -> Any:
    """openai-whisper's own filters (SuppressBlank, SuppressTokens, ApplyTimestampRules) then log-softmax."""
    import torch
    from whisper.decoding import ApplyTimestampRules, SuppressBlank, SuppressTokens
    from whisper.tokenizer import get_tokenizer

    tok = get_tokenizer(False)
    out = []
    for row, seq in zip(logits, seqs, strict=True):
        z = torch.from_numpy(row.copy())[None]
        tokens = torch.tensor([prompt + seq])
        for f in (SuppressBlank(tok, len(prompt)), SuppressTokens(suppress), ApplyTimestampRules(tok, len(prompt), 50)):
            f.apply(z, tokens)
        out.append(torch.log_softmax(z.double(), -1)[0].numpy())
    return np.stack(out)


def test_timestamp_rules_as_bounds_forbid_what_openai_whisper_forbids(tokens: generate.Tokens) -> None:
    import torch
    from whisper.decoding import ApplyTimestampRules
    from whisper.tokenizer import get_tokenizer

    tok = get_tokenizer(False)
    rng = random.Random(7)
    for _ in range(300):
        seq = random_sampled(rng, tokens)
        # Logits that never trigger the "timestamps likelier than text" rule: only the structural rules differ.
        logits = torch.zeros(1, TINY_EN_VOCAB)
        logits[0, : tokens.timestamp_begin] = 20.0
        ApplyTimestampRules(tok, 1, 50).apply(logits, torch.tensor([[tokens.sot, *seq]]))
        forbidden = torch.isinf(logits[0]).numpy()
        last_ts = max((x for x in seq if x >= tokens.timestamp_begin), default=-1)
        beam = generate._Beam(seq, 0.0, 0, last_ts)
        text_end, ts_lo, ts_hi = generate._timestamp_rule(beam, tokens, TINY_EN_VOCAB, 50)
        ids = np.arange(TINY_EN_VOCAB)
        ours = (ids < text_end) | ((ids >= tokens.timestamp_begin) & ((ids < ts_lo) | (ids >= ts_hi)))
        ours[tokens.no_timestamps] = True  # suppressed with the other tokens in our decoder
        assert (ours == forbidden).all(), seq


def test_calls_it_does_not_implement_go_to_ctranslate2() -> None:
    prompts = [[50257]] * 2
    faster_whisper_call = dict(
        beam_size=2, patience=1, length_penalty=1, max_length=448, suppress_blank=True, suppress_tokens=[1, 2],
        return_scores=True, return_no_speech_prob=True, sampling_temperature=0.0, repetition_penalty=1,
        no_repeat_ngram_size=0,
    )  # fmt: skip
    assert generate.unsupported(faster_whisper_call, prompts) is None
    assert generate.unsupported({**faster_whisper_call, "repetition_penalty": 1.2}, prompts) == "repetition_penalty=1.2"
    assert generate.unsupported({"sampling_topk": 5}, prompts) == "sampling_topk=5"
    assert generate.unsupported({"prefix_bias_beta": 0.5}, prompts) == "argument prefix_bias_beta"
    assert generate.unsupported({}, [[50257], [50257, 50362]]) == "prompts of different lengths"

    class Inner:
        def __init__(self) -> None:
            self.calls: list[dict[str, Any]] = []

        def generate(self, features: Any, prompts: Any, **kwargs: Any) -> str:
            self.calls.append(kwargs)
            return "ctranslate2"

    class Refuses:
        def generate(self, *args: Any, **kwargs: Any) -> None:
            raise AssertionError("the native decoder must not see this call")

    inner = Inner()
    swap = generate.DecoderSwap(inner, Refuses())  # type: ignore[arg-type]
    assert swap.generate(np.zeros((2, 4, 8), np.float32), prompts, num_hypotheses=3) == "ctranslate2"
    assert inner.calls == [{"num_hypotheses": 3}]


def test_missing_says_why_it_cannot_run() -> None:
    full = set(library.REQUIRED_FLAGS)
    assert library.missing({"sse4_2", "avx", "fma"}) == "the CPU lacks avx2, f16c"  # e.g. Sandy Bridge
    assert library.missing({"avx2", "fma", "f16c"}) is None  # Zen 3, Haswell: the AVX2 kernels
    assert library.missing(full, compiler="no-such-compiler") == "no C++ compiler (g++) on PATH"


def test_libraries_nobody_loaded_for_a_month_are_pruned_the_current_one_never(tmp_path: Path) -> None:
    import os

    now = 1_000_000_000.0
    month = library.STALE_AFTER_S
    ages = {"whisper-current.so": 2 * month, "whisper-stale.so": month + 60, "whisper-other-cpu.so": month - 60}
    for name, age in ages.items():
        (tmp_path / name).write_bytes(b"")
        os.utime(tmp_path / name, (now - age, now - age))
    (tmp_path / "notes.txt").write_text("not ours")
    os.utime(tmp_path / "notes.txt", (0, 0))
    removed = library.prune(tmp_path, keep=tmp_path / "whisper-current.so", now=now)
    assert [p.name for p in removed] == ["whisper-stale.so"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.txt", "whisper-current.so", "whisper-other-cpu.so"]
    # Libraries from before the rename (native-decoder/decoder-*.so) go by the same rule.
    legacy = tmp_path / library.LEGACY[0]
    legacy.mkdir()
    for name, age in {"decoder-old.so": month + 60, "decoder-recent.so": month - 60}.items():
        (legacy / name).write_bytes(b"")
        os.utime(legacy / name, (now - age, now - age))
    removed = library.prune(legacy, keep=tmp_path / "whisper-current.so", now=now, pattern=library.LEGACY[1])
    assert [p.name for p in removed] == ["decoder-old.so"]


def test_a_library_is_built_per_cpu_model_as_well_as_per_flags(monkeypatch: pytest.MonkeyPatch) -> None:
    """-march=native goes by the CPU's model too (kernels.h widens AVX2's sums by shifts on AMD Zen 1 only): a
    Zen 1 and a Zen 2 with the same flags must not share a library in a shared models folder."""
    flags = {"avx2", "fma", "f16c"}

    def key(family: str, model: str) -> str:
        monkeypatch.setattr(library, "cpu_fields", lambda: {"vendor_id": "AuthenticAMD", "cpu family": family,
                                                             "model": model})  # fmt: skip
        return library._key("g++", flags, [])

    assert key("23", "1") == key("23", "1")
    assert len({key("23", "1"), key("23", "49"), key("25", "1")}) == 3


@needs_native
def test_loading_marks_the_library_in_use(whisper_cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """What prune() goes by: a process that loads the library touches it (once: it is then kept loaded)."""
    import os
    import time

    lib = library.load(whisper_cache)
    (path,) = [p for p, loaded in library._loaded.items() if loaded is lib]  # other tests load other builds too
    assert path.parent == whisper_cache / "native"
    os.utime(path, (0, 0))
    monkeypatch.setattr(library, "_loaded", {})  # as in a new process
    library.load(whisper_cache)
    assert path.is_file() and time.time() - path.stat().st_mtime < 600


def test_auto_uses_ctranslate2_where_the_native_cannot_run_and_native_says_why(
    whisper_cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(library, "cpu_flags", lambda: {"sse4_2", "avx"})
    engine = FasterWhisperEngine("tiny.en", decoder="auto", cache_dir=whisper_cache)
    engine._load()
    assert engine.decoder_used == "ctranslate2"
    assert not isinstance(engine._model.model, generate.DecoderSwap)
    explicit = FasterWhisperEngine("tiny.en", decoder="native", cache_dir=whisper_cache)
    with pytest.raises(library.Unavailable, match="lacks avx2, fma, f16c"):
        explicit._load()
    with pytest.raises(ValueError, match="unknown decoder"):
        FasterWhisperEngine("tiny.en", decoder="fastest")


@pytest.fixture(scope="module")
def native(whisper_cache: Path) -> generate.NativeGenerator:
    from app.asr.native.model import NativeModel

    return generate.NativeGenerator(NativeModel(Path(openai_checkpoint("tiny.en", whisper_cache)), whisper_cache))


@needs_native
def test_the_token_choice_is_openai_whispers_filters_then_top_k(
    native: generate.NativeGenerator, tokens: generate.Tokens
) -> None:
    rng, nprng = random.Random(3), np.random.default_rng(3)
    seqs = [[]] + [random_sampled(rng, tokens) for _ in range(11)]
    logits = nprng.normal(0, 3, (len(seqs), TINY_EN_VOCAB)).astype(np.float32)
    # Some rows where timestamps together outweigh the best text token (the rule that forbids text then).
    logits[::3, tokens.timestamp_begin :] += 4.0
    suppress = [int(i) for i in nprng.choice(tokens.eot, 40, replace=False)]
    want = openai_filtered_logprobs(logits, seqs, [tokens.sot], suppress)
    beams = [generate._Beam(s, 0.0, 0, max((x for x in s if x >= tokens.timestamp_begin), default=-1)) for s in seqs]
    ids, logprobs = native._choose(
        logits.copy(), beams, native._suppressed(suppress), np.asarray(tokens.blank, np.int32), True, 50, 4
    )
    for row in range(len(seqs)):
        top = np.argsort(-want[row], kind="stable")[:4]
        assert list(ids[row]) == list(top), row
        np.testing.assert_allclose(logprobs[row], want[row][top], atol=2e-4)


@needs_native
def test_native_next_token_distribution_tracks_the_float32_decoder(
    native: generate.NativeGenerator, whisper_cache: Path
) -> None:
    import torch
    import whisper

    model = whisper.load_model(openai_checkpoint("tiny.en", whisper_cache), device="cpu").float().eval()
    audio = whisper.pad_or_trim(load_audio(SPEECH / "jfk.mp3"))
    with torch.no_grad():
        features = model.encoder(whisper.log_mel_spectrogram(torch.from_numpy(audio))[None])
        # <|sot|><|0.00|> And so my fellow Americans ask not what your country
        prefix = [50257, 50363, 843, 523, 616, 5891, 3399, 1265, 407, 644, 534, 1499]
        want = torch.log_softmax(model.decoder(torch.tensor([prefix]), features)[0], -1).numpy()
    m, feats = native.model, features.numpy()
    cache, cross = m.caches(feats, 1)
    slot = np.zeros(1, np.int32)
    for pos, token in enumerate(prefix):
        logits = m.step(np.asarray([token], np.int32), 1, slot, slot, feats.shape[1], pos, cache, cross)[0]
        got = logits - logits.max() - np.log(np.exp(logits - logits.max()).sum())
        kl = float((np.exp(want[pos]) * (want[pos] - got)).sum())
        assert kl < 0.02, (pos, kl)  # int8 weights and activations: 0.0000-0.006 measured
        assert int(got.argmax()) == int(want[pos].argmax())


@needs_native
def test_the_kernels_built_are_the_ones_the_cpu_runs_fastest(native: generate.NativeGenerator) -> None:
    vnni = {"avx512f", "avx512bw", "avx512_vnni"} <= library.cpu_flags()
    assert native.model.kernels == ("avx512-vnni" if vnni else "avx2")


@needs_native
def test_the_avx512_and_avx2_kernels_compute_the_same_steps(
    native: generate.NativeGenerator, whisper_cache: Path
) -> None:
    """The two int8 kernel families are the same integer arithmetic, so a real decoding's logits agree to float
    rounding. Whichever family this CPU builds, the other is built too: the AVX2 kernels with -mno-avx512f on an
    AVX-512 CPU, the AVX-512 ones through tests/avx512_emulation.h (plain C++) on any other. Both get the weights
    AVX2 needs (model.quantize_rows' pair bound), which AVX-512 multiplies exactly too: the kernels are all that
    differs."""
    import torch
    import whisper

    from app.asr.native.model import NativeModel

    checkpoint = Path(openai_checkpoint("tiny.en", whisper_cache))
    if native.model.kernels == "avx512-vnni":
        # Both builds with 256-bit vectors in the code the compiler vectorises around the kernels (what an AVX2
        # build has), so the kernels are all that differs. With 512-bit vectors (the production build on an
        # Emerald Rapids) float sums run in another order, and now and then an activation lands on the
        # neighbouring int8 step: up to 0.5 in a logit, as large as int8's own error against float32 there.
        builds = (["-mprefer-vector-width=256"], ["-mno-avx512f"])
    else:
        builds = ([], EMULATION)
    ours, other = (NativeModel(checkpoint, whisper_cache, extra=extra, pair_bound=True) for extra in builds)
    assert {ours.kernels, other.kernels} == {"avx512-vnni", "avx2"}

    model = whisper.load_model(str(checkpoint), device="cpu").float().eval()
    clips = [SPEECH / "jfk.mp3", SPEECH / CLIPS[1]]
    mels = [whisper.log_mel_spectrogram(torch.from_numpy(whisper.pad_or_trim(load_audio(c)))) for c in clips]
    with torch.no_grad():
        feats = model.encoder(torch.stack(mels)).numpy()
    # <|sot|><|0.00|> then text: every row is fed the same tokens, each beam of a window its own cache slot.
    prefix = [50257, 50363, 843, 523, 616, 5891, 3399, 1265, 407]
    # Row counts that take each kind of row group: 6 (AVX2's full group; 6 of AVX-512's 8), 7 (6 + 1; 7 of 8),
    # 1 (one row). The windows' beams are consecutive rows.
    for windows, beams in ((2, 3), (1, 7), (1, 1)):
        rows = windows * beams
        row_slot, window_slot = np.arange(rows, dtype=np.int32), np.arange(windows, dtype=np.int32)
        logits = []
        for m in (ours, other):
            cache, cross = m.caches(feats[:windows], rows)
            logits.append([m.step(np.full(rows, t, np.int32), windows, row_slot, window_slot, feats.shape[1], pos,
                                  cache, cross) for pos, t in enumerate(prefix)])  # fmt: skip
        a, b = np.stack(logits[0]), np.stack(logits[1])
        assert np.abs(a).max() > 1  # real logits, not an untouched buffer
        # Float sums in another order (16 lanes or 8) now and then land an activation on the neighbouring int8 step,
        # and the cache carries it on: the first steps agree to float rounding (6e-6 on a Zen 3 and a Zen 4), later
        # ones within int8's own error (0.28-0.35 after one such step, in a Zen 3 build run on a Zen 4). A wrong
        # integer sum would show from the first step; the exact sums themselves are the next test's.
        np.testing.assert_allclose(a[:5], b[:5], atol=0.01, err_msg=f"{windows} windows x {beams} beams")
        assert np.abs(a - b).max() < 1.0
        assert (a.argmax(-1) == b.argmax(-1)).all()


@needs_native
@pytest.mark.parametrize("family", FAMILIES)
def test_int8_products_are_exact_integer_sums_for_the_weights_each_family_is_given(
    family: str, whisper_cache: Path
) -> None:
    """library.product runs linear() on integer-valued activations whose largest is 127 and weight scales of 1, so
    the output is the integer sum itself. AVX-512's vpdpbusd is exact for any 8-bit weights. AVX2's vpmaddubsw adds
    neighbouring products into an int16, so it is exact for the weights quantize_rows(pair_bound=True) makes (same-
    sign neighbours summing to at most 128) and saturates on full-range pairs, which is why it is never given them.
    AVX2 widens those int16 sums to int32 one of two ways (vpmaddwd by ones; shifts on AMD Zen 1): both exact. With
    AVX-VNNI the AVX2 kernel multiplies with vpdpbusd instead, exact for any weights (it is given the same ones)."""
    from app.asr.native.model import ptr, quantize_rows

    ours = library.load(whisper_cache)
    other = family_build(ours, family)
    lib = ours if other is None else library.load(whisper_cache, extra=other)
    avx2 = lib.kernels() == b"avx2"
    if family in ("avx2 widened the other way", "avx2 multiplied the other way"):
        default = library.load(whisper_cache, extra=avx2_default(ours))
        assert avx2 and (lib.widen_by_shifts(), lib.avx_vnni()) != (default.widen_by_shifts(), default.avx_vnni())
    saturates = avx2 and not lib.avx_vnni()  # vpmaddubsw's int16 pair sums
    m, k, n = 7, 256, 40  # a full group of rows and a remainder; two blocks of 16 outputs and a part
    rng = np.random.default_rng(0)

    def product(w: np.ndarray, x: np.ndarray) -> np.ndarray:
        y = np.full((m, n), np.nan, np.float32)
        lib.product(ptr(np.ascontiguousarray(w, np.int8)), n, k, ptr(np.ascontiguousarray(x, np.float32)), m, ptr(y))
        return y

    def want(w: np.ndarray, x: np.ndarray) -> np.ndarray:
        return x.astype(np.int64) @ w.T.astype(np.int64)  # at most 256 x 127 x 127: exact in float32 too

    x = rng.integers(-127, 128, (m, k)).astype(np.float32)
    x[:, 0] = 127  # each row's largest magnitude is 127: it quantizes to itself
    # Activations at both ends (uint8 255 and 1 after the shift), row by row.
    extreme = (np.where(np.arange(m)[:, None] % 2 == 0, 127, -127) * np.ones((m, k))).astype(np.float32)
    heavy = rng.standard_t(3, (n, k)).astype(np.float32)  # heavy tails, like trained weights: big neighbours
    bounded, _ = quantize_rows(heavy, pair_bound=True)
    pair_sums = bounded[:, 0::2].astype(int) + bounded[:, 1::2]
    assert 120 <= np.abs(pair_sums).max() <= 128  # the bound, reached (within rounding)
    # The largest pairs the bound allows, of both signs: 64 + 64, 127 + 1, and 127 - 127 (opposite signs).
    edge = np.tile(np.array([[64, 64, 127, 1, -64, -64, -1, -127, 127, -127, -127, 127]], np.int8), (n, k // 12 + 1))
    edge = np.ascontiguousarray(edge[:, :k])
    cases = [("bounded", bounded), ("edge", edge)]
    if not saturates:
        cases.append(("full", rng.integers(-127, 128, (n, k)).astype(np.int8)))
    for name, w in cases:
        for acts in (x, extreme):
            np.testing.assert_array_equal(product(w, acts), want(w, acts), err_msg=name)
    full = np.full((n, k), 127, np.int8)
    saturated = not np.array_equal(product(full, extreme), want(full, extreme))
    assert saturated == saturates


@needs_native
@pytest.mark.parametrize("family", FAMILIES)
def test_seven_bit_activations_give_exact_sums_with_two_k_steps_added_in_int16(
    family: str, whisper_cache: Path
) -> None:
    """linear_blocks<true> (attention's probabilities: 0..127, no offset): the AVX2 kernel adds the int16 pair sums
    of two k steps before widening them, exact while |pair| <= 127 x 128 (kernels.h). At that bound, for both kinds
    of weights the AVX2 kernels are given (7-bit attention values, pair-bounded linear weights), every family's
    result is the integer sum itself. Checked: 8-bit activations (up to 255) do overflow the int16 pre-sum, so
    the test would see a kernel that took them."""
    from app.asr.native.model import ptr, quantize_rows

    ours = library.load(whisper_cache)
    extra = family_build(ours, family)
    lib = ours if extra is None else library.load(whisper_cache, extra=extra)
    m, k, n = 7, 1504, 40  # k as attention's padded frames (a multiple of 8 and 16); rows and outputs with remainders
    rng = np.random.default_rng(3)

    def product(w: np.ndarray, x: np.ndarray) -> np.ndarray:
        y = np.full((m, n), np.nan, np.float32)
        w, x = np.ascontiguousarray(w, np.int8), np.ascontiguousarray(x, np.uint8)
        lib.product_seven_bit(ptr(w), n, k, ptr(x), m, ptr(y))
        return y

    def want(w: np.ndarray, x: np.ndarray) -> np.ndarray:
        return (x.astype(np.int64) @ w.T.astype(np.int64)).astype(np.float64)

    values = rng.integers(-63, 64, (n, k)).astype(np.int8)
    values[:3] = 63  # four products of 127 x 63 in one int16: 32,004
    values[3:6] = -63
    bounded, _ = quantize_rows(rng.standard_t(3, (n, k)).astype(np.float32), pair_bound=True)
    edge = np.tile(np.array([[64, 64, 64, 64, -64, -64, -64, -64, 127, -127, 1, 127]], np.int8), (n, k // 12 + 1))
    top = np.full((m, k), 127, np.uint8)  # every activation at its largest
    spread = rng.integers(0, 128, (m, k)).astype(np.uint8)
    # As attention's probabilities: zero in blocks, which the product skips where all of a group of rows are
    # (linear_blocks_nonzero; groups of 3, 6 or 8 rows by family). Also a block nonzero in one row only, in its
    # first or last column only, runs of zero blocks next to each other, a row of zeros, and every row nearly zero.
    blocky = spread.copy()
    blocky.reshape(m, k // 16, 16)[rng.random((m, k // 16)) < 0.7] = 0
    blocky[:, 320:640] = 0
    blocky[m - 1, 400], blocky[0, 480], blocky[3, 575] = 5, 127, 1
    blocky[2] = 0
    sparse = np.zeros((m, k), np.uint8)
    sparse[1, 17], sparse[m - 1, k - 1] = 127, 3
    for name, w in (("7-bit values", values), ("pair-bounded", bounded), ("edge", edge[:, :k])):
        for x in (top, spread, blocky):
            got = product(w, x)
            assert np.abs(got).max() > 30_000  # sums far past int16: widened, not wrapped
            np.testing.assert_array_equal(got, want(w, x), err_msg=name)
        np.testing.assert_array_equal(product(w, sparse), want(w, sparse), err_msg=f"{name}, nearly all zeros")


@needs_native
@pytest.mark.parametrize("build", ["avx2", "avx2 widened the other way", "avx2 multiplied the other way"])
def test_avx2_takes_a_gelus_outputs_as_seven_bits_with_a_zero_point(build: str, whisper_cache: Path) -> None:
    """Linear::seven_bit on AVX2 (the encoder's MLP down, second convolution, attention's queries): each row
    quantized to 0..127 over [min(0, lo), max(0, hi)] with an integer zero point, multiplied on the seven-bit
    kernel, the zero point's share (z x the weights' row sums) taken off after. Rows spanning exactly 127 integers
    quantize to themselves, so the output is the integer sum itself. On a GELU's outputs (>= -0.17) the error stays
    within 15 % of what 8-bit symmetric activations give, whose negative half a GELU leaves nearly unused: 1.12x on
    these rows (small ones, where the step (hi + 0.17) / 127 against hi / 127 shows most). Built on any AVX2 or
    AVX-512 CPU."""
    from app.asr.native.model import ptr, quantize_rows

    ours = library.load(whisper_cache)
    options = {"avx2": avx2_default, "avx2 widened the other way": other_widening}.get(build, other_vnni)
    lib = library.load(whisper_cache, extra=options(ours))
    assert lib.kernels() == b"avx2"
    m, k, n = 7, 1152, 40  # k as the second convolution's (384 x 3); a row group and a remainder
    rng = np.random.default_rng(4)
    w, _ = quantize_rows(rng.standard_t(3, (n, k)).astype(np.float32), pair_bound=True)

    def product(x: np.ndarray, seven_bit: bool) -> np.ndarray:
        y = np.full((m, n), np.nan, np.float32)
        x = np.ascontiguousarray(x, np.float32)
        lib.product_of(ptr(np.ascontiguousarray(w)), n, k, ptr(x), m, ptr(y), seven_bit)
        return y

    zeros = rng.integers(0, 128, m)  # each row's zero point: its values run -z .. 127 - z
    x = np.stack([rng.integers(-z, 128 - z, k) for z in zeros]).astype(np.float32)
    x[:, 0], x[:, 1] = -zeros, 127 - zeros  # both ends present: a range of exactly 127, a scale of exactly 1
    want = x.astype(np.int64) @ w.T.astype(np.int64)
    np.testing.assert_array_equal(product(x, True), want)

    pre = rng.standard_normal((m, k)).astype(np.float32) * rng.uniform(0.5, 3, (m, 1)).astype(np.float32)
    gelu = (0.5 * pre * (1 + np.tanh(0.79788456 * (pre + 0.044715 * pre**3)))).astype(np.float32)
    exact = gelu.astype(np.float64) @ w.T.astype(np.float64)
    seven, symmetric = (np.abs(product(gelu, flag) - exact).mean() for flag in (True, False))
    assert 0 < seven < 1.15 * symmetric, (seven, symmetric)


def test_the_pair_bound_keeps_same_sign_neighbours_within_128_at_a_little_precision() -> None:
    """quantize_rows' pair bound: |q[2p] + q[2p+1]| <= 128 on every row, the scale at least amax / 127 and, on
    rows like trained weights, well under the 2x (7-bit) that bounding every weight to 64 would cost."""
    from app.asr.native.model import quantize_rows

    rng = np.random.default_rng(1)
    w = rng.standard_t(4, (300, 384)).astype(np.float32)
    w[7, 10:12] = 9.0  # the row's two largest side by side, same sign: the bound sets this row's scale
    q, scale = quantize_rows(w, pair_bound=True)
    plain_q, plain = quantize_rows(w)
    assert np.abs(q[:, 0::2].astype(int) + q[:, 1::2]).max() <= 128
    assert np.abs(plain_q[:, 0::2].astype(int) + plain_q[:, 1::2]).max() > 128  # what the bound prevents
    assert (scale >= plain).all() and scale[7] == pytest.approx(18.0 / 127)
    assert 1.0 < np.median(scale / plain) < 1.5
    err = np.abs(q * scale[:, None] - w).max(axis=1)
    assert (err <= scale / 2 + 1e-6).all()  # rounding error only: nothing clipped


def test_the_avx2_kernels_are_never_given_weights_without_the_pair_bound() -> None:
    from app.asr.native.model import pair_bound_for

    assert pair_bound_for("avx2") and not pair_bound_for("avx512-vnni")
    assert pair_bound_for("avx512-vnni", True) and pair_bound_for("avx2", True)  # the tests' common weights
    with pytest.raises(ValueError, match="saturate"):
        pair_bound_for("avx2", False)


@needs_native
@pytest.mark.slow
def test_native_transcribes_what_ctranslate2s_does(whisper_cache: Path) -> None:
    engines = {
        name: FasterWhisperEngine("tiny.en", batch_size=4, beam_size=2, decoder=name, cache_dir=whisper_cache)
        for name in ("native", "ctranslate2")
    }
    texts: dict[str, list[str]] = {name: [] for name in engines}
    references = []
    for clip in CLIPS:
        audio = load_audio(SPEECH / clip)
        references.append(find_reference(SPEECH / clip) or "")
        for name, engine in engines.items():
            segments = engine.transcribe(audio)
            starts = [s.start for s in segments]
            assert starts == sorted(starts) and all(s.end >= s.start for s in segments)
            texts[name].append(" ".join(s.text for s in clean_segments(segments)))
    assert engines["native"].decoder_used == "native"
    native_wer = corpus_wer(list(zip(references, texts["native"], strict=True)))
    ct2_wer = corpus_wer(list(zip(references, texts["ctranslate2"], strict=True)))
    assert native_wer <= max(0.12, ct2_wer + 0.02), (native_wer, ct2_wer)
    # Same model, same rules, different int8 arithmetic: nearly the same words.
    for ours, theirs in zip(texts["native"], texts["ctranslate2"], strict=True):
        assert wer(theirs, ours) <= 0.1, (ours, theirs)


@needs_native
def test_a_window_decodes_the_same_alone_or_in_a_batch_and_follows_the_timestamp_rules(
    native: generate.NativeGenerator, whisper_cache: Path, tokens: generate.Tokens
) -> None:
    """Windows finish at different steps (their rows drop out) and beams fork into free cache slots: none of that
    may leak from one window into another."""
    import torch
    import whisper

    model = whisper.load_model(openai_checkpoint("tiny.en", whisper_cache), device="cpu").float().eval()
    audio = load_audio(SPEECH / "sense_and_sensibility_01_austen_64kb-0880.wav")
    jfk = load_audio(SPEECH / "jfk.mp3")
    pieces = [jfk, audio[: 16000 * 4], audio[16000 * 2 :], jfk[: 16000 * 3]]
    with torch.no_grad():
        mels = torch.stack([whisper.log_mel_spectrogram(torch.from_numpy(whisper.pad_or_trim(p))) for p in pieces])
        features = model.encoder(mels).numpy()
    call = dict(beam_size=2, suppress_tokens=[-1], return_scores=True, return_no_speech_prob=True)
    batch = native.generate(features, [[tokens.sot]] * len(pieces), **call)
    for i, result in enumerate(batch):
        # Each call reuses the caches the one before left behind (BufferPool): stale values must not leak in.
        alone = native.generate(features[i : i + 1], [[tokens.sot]], **call)[0]
        assert result.sequences_ids == alone.sequences_ids
        assert result.scores == pytest.approx(alone.scores, abs=1e-5)
        native.cores = CoreShare(2)  # a lone worker's projection split between two threads: the same sums
        try:
            shared = native.generate(features[i : i + 1], [[tokens.sot]], **call)[0]
        finally:
            native.cores = CoreShare(1)
        assert shared.sequences_ids == alone.sequences_ids and shared.scores == alone.scores
        seq = result.sequences_ids[0]
        stamps = [t for t in seq if t >= tokens.timestamp_begin]
        assert seq[0] >= tokens.timestamp_begin and stamps == sorted(stamps)
        assert 0 <= result.no_speech_prob < 0.5 and -1.0 < result.scores[0] < 0
    # The three-second piece is a prefix of the 11 s one: shorter text, same start.
    short, full = batch[3].sequences_ids[0], batch[0].sequences_ids[0]
    assert 3 < len([t for t in short if t < tokens.eot]) < len([t for t in full if t < tokens.eot])
    assert short[1:3] == full[1:3]  # "And so"


@needs_native
def test_a_step_writes_its_logits_into_a_lent_buffer_and_refuses_one_that_does_not_fit(
    native: generate.NativeGenerator,
) -> None:
    m = native.model
    feats = np.random.default_rng(0).standard_normal((2, 100, m.width)).astype(np.float32)
    cache, cross = m.caches(feats, 2)
    slots = np.arange(2, dtype=np.int32)
    args = (np.full(2, 50257, np.int32), 2, slots, slots, 100, 0, cache, cross)
    want = m.step(*args)
    out = m.logits_buffer(3)
    out[:] = np.nan
    got = m.step(*args, out=out)
    assert got.shape == (2, m.vocab) and np.shares_memory(got, out)
    np.testing.assert_array_equal(got, want)
    assert np.isnan(out[2]).all()  # the rows past this step's are left alone
    too_few, wrong_type = np.empty((1, m.vocab), np.float32), np.empty((2, m.vocab), np.float64)
    for bad in (too_few, wrong_type, np.empty((m.vocab, 2), np.float32).T):
        with pytest.raises(ValueError, match="out of"):
            m.step(*args, out=bad)
    m.release(cache, cross, out)


def _steps(m: Any, threads: int, windows: int = 2, beams: int = 3, frames: int = 300) -> np.ndarray:
    """Logits of 6 steps of `windows` x `beams` rows on random audio features, every call on `threads`."""
    feats = np.random.default_rng(1).standard_normal((windows, frames, m.width)).astype(np.float32)
    rows = windows * beams
    cache, cross = m.caches(feats, rows, threads)
    row_slot, window_slot = np.arange(rows, dtype=np.int32), np.arange(windows, dtype=np.int32)
    out = []
    for pos, token in enumerate([50257, 50362, 50363, 464, 1893, 286]):  # <|sot|>, timestamps, "The", ...
        tokens = np.full(rows, token, np.int32) + np.arange(rows, dtype=np.int32) * (pos > 2)
        out.append(m.step(tokens, windows, row_slot, window_slot, frames, pos, cache, cross, threads).copy())
    m.release(cache, cross)
    return np.stack(out)


@needs_native
def test_a_step_gives_the_same_logits_on_any_number_of_threads(native: generate.NativeGenerator) -> None:
    """Threads share a step's products (output blocks) and attention ((row or window, head) pairs) on the
    library's helper threads: each output is computed the same whichever thread takes it, so the bits agree.
    Also with two callers at once (one has the helpers, the other starts threads of its own)."""
    import threading

    m = native.model
    one = _steps(m, 1)
    for threads in (2, 3):
        np.testing.assert_array_equal(_steps(m, threads), one)
    single_window = _steps(m, 1, windows=1, beams=2)
    np.testing.assert_array_equal(_steps(m, 2, windows=1, beams=2), single_window)
    got: list[np.ndarray] = []
    callers = [threading.Thread(target=lambda: got.append(_steps(m, 2))) for _ in range(2)]
    for c in callers:
        c.start()
    for c in callers:
        c.join(timeout=120)
    assert len(got) == 2
    for g in got:
        np.testing.assert_array_equal(g, one)


@needs_native
def test_a_forked_child_decodes_with_helpers_of_its_own(native: generate.NativeGenerator) -> None:
    """Celery's prefork pool forks after the parent may have used the helper threads: the child has none of
    them (and maybe a mutex held at fork time), so it must start its own rather than wait for the parent's."""
    import multiprocessing

    m = native.model
    want = _steps(m, 2)  # the parent's helpers exist from here on
    ctx = multiprocessing.get_context("fork")
    reader, writer = ctx.Pipe(duplex=False)

    def child() -> None:  # runs in the fork: the model and `want` are its copies of the parent's
        writer.send(bool(np.array_equal(_steps(m, 2), want)))

    process = ctx.Process(target=child)
    process.start()
    try:
        assert reader.poll(120), "the forked child hung (waiting for helper threads it does not have?)"
        assert reader.recv() is True
    finally:
        process.join(timeout=10)
        if process.is_alive():
            process.kill()
    assert process.exitcode == 0


def test_buffer_pool_lends_the_smallest_free_array_that_fits_and_keeps_the_largest() -> None:
    from app.asr.native.model import BufferPool

    pool = BufferPool(keep=2)
    a = pool.take(1000, np.float32)
    assert a.shape == (1000,) and a.dtype == np.float32
    view = a.reshape(10, 100)
    pool.give(view)  # a view gives back the whole array
    b = pool.take(500, np.float32)
    assert np.shares_memory(a, b) and b.shape == (500,)  # reused, cut to the size asked
    assert not np.shares_memory(pool.take(500, np.float32), b)  # lent out already: a new one
    pool.give(b)
    pool.give(b)
    assert not np.shares_memory(pool.take(500, np.uint16), a)  # another dtype never gets it
    assert np.shares_memory(pool.take(500, np.float32), a)
    assert not np.shares_memory(pool.take(500, np.float32), a)  # given back twice, lent once

    pool = BufferPool(keep=2)
    arrays = [pool.take(n, np.float32) for n in (10, 2000, 5000)]
    for x in arrays:
        pool.give(x)
    # keep=2: the two largest stay, the smallest is dropped; the smallest one that fits is lent first.
    assert np.shares_memory(pool.take(800, np.float32), arrays[1])
    assert np.shares_memory(pool.take(800, np.float32), arrays[2])
    assert not np.shares_memory(pool.take(5, np.float32), arrays[0])


@needs_native
def test_each_step_takes_the_share_of_the_cores_free_at_that_step(native: generate.NativeGenerator) -> None:
    """A decoding worker that outlasts the others takes their cores from its next step on (app.asr.cores): the
    generator asks its CoreShare at every step, and counts itself busy for the whole call."""
    import threading

    m = native.model
    feats = np.random.default_rng(0).standard_normal((1, 100, m.width)).astype(np.float32)
    cores = CoreShare(2)
    other_busy, other_done = threading.Event(), threading.Event()

    def other_worker() -> None:
        with cores.working():
            other_busy.set()
            other_done.wait(10)

    seen: list[tuple[int, int]] = []  # (threads a step was given, busy workers then)
    step = m.step

    def spy(*args: Any, **kwargs: Any) -> np.ndarray:
        seen.append((args[8], cores.busy))
        if len(seen) == 3:
            other_done.set()  # the other worker finishes during this step
            while cores.busy > 1:
                pass
        return step(*args, **kwargs)

    worker = threading.Thread(target=other_worker)
    worker.start()
    other_busy.wait(10)
    native.cores, m.step = cores, spy  # type: ignore[method-assign]
    try:
        native.generate(feats, [[50257]], beam_size=2, max_length=16, suppress_tokens=[-1])
    finally:
        native.cores, m.step = CoreShare(1), step  # type: ignore[method-assign]
        worker.join()
    assert len(seen) >= 5
    assert seen[:3] == [(1, 2)] * 3  # two workers at work: a core each
    assert all(threads == 2 for threads, _ in seen[3:])  # alone from the fourth step on: both cores
    assert cores.busy == 0


def test_a_core_share_gives_each_busy_thread_its_part_and_counts_a_nested_call_once() -> None:
    import threading

    cores = CoreShare(4)
    assert cores.threads() == 4 and cores.busy == 0  # nobody at work: a caller alone gets every core
    entered, leave = threading.Event(), threading.Event()

    def worker() -> None:
        with cores.working():
            entered.set()
            leave.wait(10)

    with cores.working():
        with cores.working():  # the encoder inside a decoding worker: the same thread, counted once
            assert cores.busy == 1 and cores.threads() == 4
        others = [threading.Thread(target=worker) for _ in range(2)]
        for t in others:
            t.start()
            entered.wait(10)
            entered.clear()
        assert cores.busy == 3 and cores.threads() == 1  # 4 // 3
        leave.set()
        for t in others:
            t.join()
        assert cores.busy == 1 and cores.threads() == 4
    assert cores.busy == 0
    assert CoreShare(0).threads() == 1 and CoreShare(2).cores == 2  # never below one


class _SlotLog:
    """The one model call a beam-search update makes: copying a beam's history into another cache slot."""

    def __init__(self) -> None:
        self.copies: list[tuple[int, int, int]] = []

    def copy_slot(self, cache: Any, dst: int, src: int, length: int) -> None:
        self.copies.append((dst, src, length))


def test_beam_update_collects_end_of_text_as_ctranslate2_does(tokens: generate.Tokens) -> None:
    """Of a window's 2 x beams best candidates only the first `beams` may finish; an end-of-text further down is
    not collected (openai-whisper would collect it here and stop with two shorter hypotheses)."""
    gen = generate.NativeGenerator.__new__(generate.NativeGenerator)
    gen.tokens, gen.model = tokens, _SlotLog()  # type: ignore[assignment]
    ts, eot = tokens.timestamp_begin, tokens.eot
    a, b = generate._Beam([ts, 100], -1.0, 0, ts), generate._Beam([ts, 200], -1.05, 1, ts)
    window = generate._Window(0, [a, b], [0, 1])
    ids = np.array([[eot, 5, 6, 7], [eot, 8, 9, 10]], np.int32)
    # Ranked: a+EOT -1.10, a+5 -1.20, b+EOT -1.25, b+8 -1.35, then the rest.
    logprobs = np.array([[-0.1, -0.2, -2.0, -3.0], [-0.2, -0.3, -2.0, -3.0]], np.float32)
    done = gen._advance(window, ids, logprobs, beams=2, max_candidates=2, cache=None, length=3)  # type: ignore[arg-type]
    assert not done
    assert window.finished == [([ts, 100], pytest.approx(-1.1))]
    assert sorted(bm.tokens for bm in window.beams) == [[ts, 100, 5], [ts, 200, 8]]
    assert {bm.slot for bm in window.beams} == {0, 1} and gen.model.copies == []  # type: ignore[attr-defined]
    # Next step: both of the best two end the text: two hypotheses, the window is done.
    ids = np.array([[eot, 11, 12, 13], [eot, 14, 15, 16]], np.int32)
    logprobs = np.array([[-0.05, -2.0, -3.0, -4.0], [-0.05, -2.0, -3.0, -4.0]], np.float32)
    assert gen._advance(window, ids, logprobs, beams=2, max_candidates=2, cache=None, length=4)  # type: ignore[arg-type]
    assert len(window.finished) == 3


def test_suppress_tokens_minus_one_means_what_ctranslate2s_model_suppresses(tokens: generate.Tokens) -> None:
    """[-1] is the model's "suppress_ids" (written by CTranslate2's converter): symbols, and the task tokens
    (<|startoftranscript|>, <|transcribe|>, <|nospeech|>, ...) that must take no probability mass either."""
    import json

    from app.asr.weights import bundled_ct2_dir

    ct2_dir = bundled_ct2_dir()
    assert ct2_dir is not None
    config = json.loads((ct2_dir / "config.json").read_text())
    gen = generate.NativeGenerator.__new__(generate.NativeGenerator)
    gen.tokens = tokens
    # The native decoder also always forbids <|notimestamps|> (CTranslate2's timestamp rules do the same).
    assert set(gen._suppressed([-1]).tolist()) == set(config["suppress_ids"]) | {tokens.no_timestamps}
    assert set(tokens.blank) == set(config["suppress_ids_begin"])


@needs_native
def test_decoding_stops_at_half_max_length_as_ctranslate2s_does(
    native: generate.NativeGenerator, whisper_cache: Path, tokens: generate.Tokens
) -> None:
    import ctranslate2
    import torch
    import whisper

    from app.asr.weights import bundled_ct2_dir

    model = whisper.load_model(openai_checkpoint("tiny.en", whisper_cache), device="cpu").float().eval()
    mel = whisper.log_mel_spectrogram(torch.from_numpy(whisper.pad_or_trim(load_audio(SPEECH / "jfk.mp3"))))
    with torch.no_grad():
        features = model.encoder(mel[None]).numpy()
    call: dict[str, Any] = dict(beam_size=2, suppress_tokens=[-1], return_scores=True, max_length=20)
    ours = native.generate(features, [[tokens.sot]], **call)[0].sequences_ids[0]
    ct2 = ctranslate2.models.Whisper(str(bundled_ct2_dir()), device="cpu", compute_type="int8")
    theirs = ct2.generate(ctranslate2.StorageView.from_array(features), [[tokens.sot]], **call)[0].sequences_ids[0]
    assert len(ours) == len(theirs) == 10  # max_length // 2 tokens after the prompt, cut mid-sentence
    assert ours[:3] == theirs[:3]  # <|0.00|> And so


@needs_native
def test_the_kernel_bench_compiles_against_the_kernels() -> None:
    """scripts/kernel_bench.cpp (docs/benchmarks.md's C++ harness) includes kernels.h: it must follow its changes."""
    import subprocess

    script = Path(__file__).parents[1] / "scripts" / "kernel_bench.cpp"
    avx2 = ["-mno-avx512f"]  # the AVX2 kernels on any CPU, both ways of widening (kernels.h)
    for extra in ([], [*avx2, "-DPODBRIEF_WIDEN_BY_SHIFTS=0"], [*avx2, "-DPODBRIEF_WIDEN_BY_SHIFTS=1"]):
        proc = subprocess.run(
            ["g++", "-fsyntax-only", "-std=c++17", "-march=native", *extra, str(script)],
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert proc.returncode == 0, proc.stderr[-2000:]
