"""Extraction on hand-written transcripts (not the eval set): claims kept, talk around them dropped."""

from __future__ import annotations

import pytest
from sqlalchemy import select

from app.models import Episode, EpisodeStatus, Insight, Podcast, TranscriptSegment
from app.pipeline import insights
from app.text.passages import extract_passages
from app.text.sentences import TimedText, split_segments

# A made-up episode about home coffee, with an on-topic sponsor read (a coffee grinder, no "sponsor" word).
TURNS = [
    "Hi folks, welcome back to Bean Counter, the show about coffee at home. I'm your host and my guest today "
    "roasts coffee for a living.",
    "Thanks for having me! I, um, had three espressos before this, so buckle up.",
    "Ha, noted. So why does my coffee taste sour sometimes?",
    "Sour coffee is usually under-extracted: the water dissolved the fast acids but not the slower sugars and "
    "bitter compounds that balance them. Grinding finer or brewing a little longer raises extraction, and "
    "most brewers are aiming to dissolve about twenty percent of the ground coffee's mass.",
    "Huh, I did not know that.",
    "Today's episode comes to you from Grindwell, the burr grinder that gives you a perfectly even grind for "
    "pour over and espresso alike. Grindwell burrs are made of hardened steel and stay sharp for years. Head "
    "to grindwell dot com slash beans and use code BEANS for fifteen percent off your first order.",
    "Okay, what about water?",
    "Water with almost no minerals extracts coffee poorly, because magnesium and calcium ions bind to the "
    "flavour compounds and pull them out of the grounds. Very hard water causes the opposite problem, since "
    "the bicarbonate in it neutralises the acids that give coffee its brightness.",
    "As I said, it really depends.",
    "I love that. Honestly my kitchen is a mess of kettles right now.",
    "That's all for this week. Thanks for listening to Bean Counter, and see you next time!",
]


def _turn_segments() -> list[TimedText]:
    out, t = [], 0.0
    for text in TURNS:
        d = len(text.split()) / 2.5
        out.append(TimedText(t, t + d, text))
        t += d + 0.5
    return out


def _whisper_segments() -> list[TimedText]:
    """The same audio as Whisper would cut it: fixed chunks of words, ignoring sentence ends."""
    words = " ".join(TURNS).split()
    out, t = [], 0.0
    for i in range(0, len(words), 7):
        chunk = words[i : i + 7]
        out.append(TimedText(t, t + len(chunk) / 2.5, " ".join(chunk)))
        t += len(chunk) / 2.5
    return out


@pytest.mark.parametrize("segments", [_turn_segments(), _whisper_segments()], ids=["turns", "whisper"])
def test_keeps_claims_and_drops_everything_else(segments: list[TimedText]) -> None:
    passages = extract_passages(segments)
    text = " ".join(p.text for p in passages)
    assert "under-extracted" in text
    assert "magnesium and calcium" in text
    for dropped in (
        "Grindwell",
        "grindwell",
        "fifteen percent off",
        "welcome back",
        "espressos",
        "taste sour",
        "As I said",
        "kitchen is a mess",
        "see you next time",
        "what about water",
    ):
        assert dropped not in text, dropped
    assert len(passages) >= 2
    for p in passages:
        assert 1 <= len(split_segments([TimedText(0, 1, p.text)])) <= 3
        assert 0.0 <= p.substance <= 1.0


@pytest.mark.parametrize("segments", [_turn_segments(), _whisper_segments()], ids=["turns", "whisper"])
def test_times_are_monotonic_and_inside_the_transcript(segments: list[TimedText]) -> None:
    passages = extract_passages(segments)
    last_end = segments[0].start
    for p in passages:
        assert p.start <= p.end
        assert p.start >= last_end
        assert segments[0].start <= p.start and p.end <= segments[-1].end
        last_end = p.end


def test_sentence_times_interpolate_inside_a_segment() -> None:
    # One segment, two sentences of equal length: the boundary falls halfway through the segment's time.
    s = split_segments([TimedText(10.0, 20.0, "Alpha beta gamma delta. Epsilon zeta eta theta.")])
    assert [x.text for x in s] == ["Alpha beta gamma delta.", "Epsilon zeta eta theta."]
    assert s[0].start == pytest.approx(10.0)
    assert 14.0 < s[0].end < 16.0 and 14.0 < s[1].start < 16.0
    assert s[1].end == pytest.approx(20.0)


def test_sentence_cut_across_segments_comes_back_whole() -> None:
    s = split_segments([TimedText(0.0, 2.0, "Heat acclimation raises"), TimedText(2.0, 4.0, "plasma volume. Then")])
    assert s[0].text == "Heat acclimation raises plasma volume."
    assert s[0].start == 0.0 and 2.0 < s[0].end < 4.0
    assert (s[0].first_segment, s[0].last_segment) == (0, 1)


def test_sponsor_read_is_dropped_even_when_on_topic_and_split_by_whisper() -> None:
    texts = " ".join(p.text for p in extract_passages(_whisper_segments()))
    assert "hardened steel" not in texts  # the ad's product claim sentence, which has no ad words itself


def test_extract_writes_rows_once(session) -> None:
    podcast = Podcast(feed_url="https://example.test/feed.xml", title="Bean Counter")
    episode = Episode(podcast=podcast, guid="ep-1", status=EpisodeStatus.TRANSCRIBED)
    session.add(episode)
    session.flush()
    for i, seg in enumerate(_turn_segments()):
        session.add(TranscriptSegment(episode_id=episode.id, idx=i, start=seg.start, end=seg.end, text=seg.text))
    session.flush()
    n = insights.extract(session, episode.id)
    assert n >= 2
    assert episode.status == EpisodeStatus.EXTRACTED
    rows = session.scalars(select(Insight).where(Insight.episode_id == episode.id).order_by(Insight.idx)).all()
    assert [r.idx for r in rows] == list(range(n))
    assert insights.extract(session, episode.id) == n  # idempotent: nothing new written
    assert len(session.scalars(select(Insight).where(Insight.episode_id == episode.id)).all()) == n


def test_on_topic_sponsor_turn_without_the_word_sponsor_is_dropped() -> None:
    turns = [
        "Index funds charge far less than active funds, and because fees compound every year, a one percent "
        "difference in annual cost can take about a quarter of a portfolio's final value over thirty years.",
        "Thanks to Ledgerly for supporting the show. Ledgerly tracks every fund fee you pay and shows how much "
        "compounding costs you over thirty years. Try it free at ledgerly dot io.",
    ]
    segs = [TimedText(i * 30.0, i * 30.0 + 25.0, t) for i, t in enumerate(turns)]
    texts = [p.text for p in extract_passages(segs)]
    assert len(texts) == 1 and texts[0].startswith("Index funds charge far less")


def test_answer_opening_on_a_bare_reply_keeps_the_claim_after_it() -> None:
    # "It does, because ..." leans on the host's question; the sentences after it stand alone.
    turns = [
        "Does paying kids to read actually make them read more?",
        "It does, because a cash reward makes the first few books feel worth the effort. "
        "Paying children per book doubled the number of books they finished in one district trial. "
        "A year after the payments stopped, they were reading less than children who had never been paid.",
    ]
    segs = [TimedText(i * 20.0, i * 20.0 + 18.0, t) for i, t in enumerate(turns)]
    passages = extract_passages(segs)  # before: the whole answer was dropped for its dangling opener
    assert len(passages) == 1
    assert passages[0].text.startswith("Paying children per book doubled")
    assert passages[0].start > 20.0  # times follow the sentences kept, not the whole turn


def test_dangling_passage_without_a_standalone_rest_is_still_dropped() -> None:
    turns = ["So what happened next?", "That was the thing. It changed everything for us, honestly, in the end."]
    segs = [TimedText(i * 10.0, i * 10.0 + 8.0, t) for i, t in enumerate(turns)]
    assert extract_passages(segs) == []


def test_asr_sponsor_read_with_a_misheard_brand_in_a_long_segment_is_dropped() -> None:
    # Whisper output (no speaker turns): the product sentence is one 14 s segment and spells the brand
    # differently from the sentences that say "sponsored by" and read the web address.
    texts = [
        (0.0, 7.0, "Unplanned downtime on a packaging line costs roughly two hundred dollars a minute in lost output."),
        (7.5, 9.0, "Let's take a quick break."),
        (9.0, 12.5, "This episode is sponsored by Torquilis."),
        (12.5, 26.5, "Torque lies make wireless vibration sensors that stick right onto your motors and pumps and "
         "run five years on a single battery, flagging a failing bearing weeks before it breaks down."),
        (26.5, 31.0, "Get a free sensor pilot kit at torquilise dot com slash floor."),
        (31.0, 33.0, "Okay, back to the show."),
    ]
    texts_out = " ".join(p.text for p in extract_passages([TimedText(a, b, t) for a, b, t in texts]))
    assert "Torque lies" not in texts_out and "vibration" not in texts_out
    assert "Unplanned downtime" in texts_out  # the claim before the read stays
