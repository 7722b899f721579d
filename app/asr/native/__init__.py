"""Whisper hand-written for x86-64 CPUs: its text decoder (decoder.cpp), in place of CTranslate2's, and its audio
encoder (encoder.cpp), on the int8 kernels both share (kernels.h): AVX-512 VNNI (vpdpbusd) where the CPU has it,
with AMX tiles (tdpbusd) on top where it has those, else AVX2 (Zen 3, Haswell and later Intel: vpmaddubsw, on
linear layers' weights quantized so no pair of products saturates and on 7-bit keys and values in the encoder's
attention; where the activations are seven bits, 0..127 (attention's probabilities and queries, a GELU's outputs),
two k steps' pair sums share an int16 before widening).

On the CPUs measured (docs/benchmarks.md) the decoder was over half of CPU transcription time, and CTranslate2's
beam-2 step is 2.0-4.3x slower than this one (AVX-512 on a Zen 4, AVX2 on a Zen 3): oneDNN repacks the int8
weights at every call and each beam attends over its own float32 copy of the window's audio keys/values. Here
weights are packed once and a window's keys/values are float16, computed once and shared by its beams. The encoder
does attention's two products in int8 too (ONNX Runtime's int8 export spends most of its time in float32
attention); app.asr.cpu_encoder says on which CPUs it is the fastest.

- library: builds every .cpp here into one library with the system g++ for this CPU at first use (cached), or says
  why it can't;
- model: openai-whisper decoder weights quantized to int8 and handed to the library;
- generate: CTranslate2's `Whisper.generate` as faster-whisper calls it (beam search, timestamp rules, scores,
  no-speech probability), and `DecoderSwap`, which puts it under faster-whisper's pipeline;
- encoder: openai-whisper encoder weights quantized to int8 and handed to the library, behind the CPU encoder
  contract (app.asr.cpu_encoder).
"""
