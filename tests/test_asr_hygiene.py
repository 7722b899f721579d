"""Long-audio hygiene filters: loops collapsed, text over silence and garbage dropped."""

from __future__ import annotations

from app.asr.hygiene import clean_segments, collapse_repeats, compression_ratio
from app.asr.types import Segment


def test_phrase_loop_collapsed_to_one_copy() -> None:
    looped = "So that's the plan. " + "Thank you. " * 12 + "Bye now."
    assert collapse_repeats(looped) == "So that's the plan. Thank you. Bye now."


def test_multi_word_loop_and_emphasis_kept() -> None:
    assert collapse_repeats("we will we will we will we will rock you") == "we will rock you"
    # Twice is emphasis, not a loop.
    assert collapse_repeats("very very good") == "very very good"


def test_segment_loops_merged_but_two_hellos_stay() -> None:
    segs = [Segment(0, 1, "Hello?"), Segment(1, 2, "Hello?"), Segment(2, 3, "Oh, hello.")]
    assert [s.text for s in clean_segments(segs)] == ["Hello?", "Hello?", "Oh, hello."]
    loop = [Segment(float(i), float(i + 1), "Thanks for watching!") for i in range(5)]
    out = clean_segments([Segment(0, 0.5, "Real words."), *loop])
    assert [s.text for s in out] == ["Real words.", "Thanks for watching!"]
    assert out[1].start == 0 and out[1].end == 5


def test_text_over_silence_dropped_when_vad_says_no_speech() -> None:
    segs = [Segment(0, 4, "Real speech here."), Segment(10, 14, "Hallucinated over music.")]
    out = clean_segments(segs, speech=[(0.0, 4.2)])
    assert [s.text for s in out] == ["Real speech here."]


def test_low_confidence_no_speech_and_garbage_dropped() -> None:
    silent = Segment(0, 30, "you", avg_logprob=-1.5, no_speech_prob=0.9)
    garbage = Segment(30, 60, "a b c d " * 40 + "zz", avg_logprob=-1.2, compression_ratio=5.0)
    good = Segment(60, 65, "A confident sentence.", avg_logprob=-0.2, no_speech_prob=0.01)
    assert compression_ratio(garbage.text) > 2.4
    assert clean_segments([silent, garbage, good]) == [good]


def test_an_end_past_the_next_start_is_cut_back_to_it() -> None:
    # As seen on the two-speaker call: window 1 ends at 21.64 s, Whisper timed its last line to 22.18 s.
    segs = [
        Segment(18.18, 20.18, "Oh, I'm originally from Chicago also."),
        Segment(20.18, 22.18, "I'm in New Jersey now, though."),
        Segment(21.60, 28.10, "Well, there isn't that much difference."),
        Segment(28.10, 30.10, "Oh, I don't hear that."),
    ]
    out = clean_segments(segs)
    assert [(s.start, s.end) for s in out] == [(18.18, 20.18), (20.18, 21.60), (21.60, 28.10), (28.10, 30.10)]
    assert [s.text for s in out] == [s.text for s in segs]
    # Same start (a redone span): nothing is cut to zero length.
    same = [Segment(5.0, 9.0, "one two"), Segment(5.0, 7.0, "three four")]
    assert [(s.start, s.end) for s in clean_segments(same)] == [(5.0, 9.0), (5.0, 7.0)]
