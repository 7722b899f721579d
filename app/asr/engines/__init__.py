"""Whisper engines behind one interface (app.asr.engines.base.Engine)."""
