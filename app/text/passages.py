"""Cut a timed transcript into candidate insight passages of 1–3 sentences.

Pipeline: sentences (pysbd, timed) -> blocks -> drop blocks that frame the show or sell something -> keep
sentences that read like claims -> group runs of kept sentences into passages -> score each passage.

A *block* is a stretch of segments no sentence crosses. For publisher transcripts that is one speaker turn; for
Whisper output it is one or a few acoustic segments. Whole-block decisions matter for sponsor reads: only some
sentences of an ad carry its tell-tale signs (a web address, a code, an offer), the rest describe the product
like any claim would, so the verdict of the telling sentences is spread to their block and to neighbouring
blocks that are clearly part of the same read (same brand name, or sandwiched between two ad blocks).
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Sequence
from dataclasses import dataclass
from difflib import SequenceMatcher

from app.text.features import (
    PERSONAL,
    SentenceFeatures,
    ad_score,
    claim_score,
    features,
    substance,
)
from app.text.sentences import Sentence, TimedText, split_segments

MAX_SENTENCES = 3
MAX_WORDS = 100
MIN_WORDS = 14
KEEP_SENTENCE = 0.4  # a sentence below this is talk around a claim
KEEP_PASSAGE = 0.6  # word-weighted mean claim score a passage needs
AD_BLOCK = 0.5  # ad evidence that makes a sentence (or a whole speaker turn) part of a sponsor read
SMALL_BLOCK = 5  # blocks up to this many sentences are dropped whole when they frame the show

_CAPWORD = re.compile(r"\b[A-Z][a-z]{2,}\b")
_COMMON_CAPS = {"the", "this", "that", "and", "but", "for", "with", "our", "their", "its", "they", "there"}


@dataclass(frozen=True)
class Passage:
    text: str
    start: float
    end: float
    substance: float
    claim: float
    first_sentence: int
    last_sentence: int


def _blocks(sentences: Sequence[Sentence]) -> list[list[int]]:
    blocks: list[list[int]] = []
    last_seg = -1
    for i, s in enumerate(sentences):
        if not blocks or s.first_segment > last_seg:
            blocks.append([i])
        else:
            blocks[-1].append(i)
        last_seg = max(last_seg, s.last_segment)
    return blocks


_URL_NAME = re.compile(r"\b([A-Za-z][A-Za-z0-9]{2,})\s*(?:\.|\bdot\b)\s*(?:com|org|net|io|co|ai|app|fm)\b", re.I)
ASR_SEGMENT_SECONDS = 10.0
MAX_JOIN_PAUSE = 1.5  # seconds of silence after which an ASR segment is not the same answer going on
SPREAD = 4  # how many sentences around a telling ad sentence can belong to the same read


def _brand_names(texts: Sequence[str]) -> set[str]:
    """Names an ad repeats: capitalised words not at a sentence start, and the name in a web address read aloud."""
    names: set[str] = set()
    for t in texts:
        for m in _CAPWORD.finditer(t):
            w = m.group(0)
            if m.start() > 0 and w.lower() not in _COMMON_CAPS and w.lower() not in PERSONAL:
                names.add(w.lower())
        names.update(m.group(1).lower() for m in _URL_NAME.finditer(t))
    return names


BRAND_LIKENESS = 0.8  # ASR spells a brand differently each time it hears it: "Torquilis", "Torque lies"


def _mentions(text: str, names: set[str]) -> bool:
    """Does `text` name one of the advertised brands, also as Whisper misspells it (one word or two run together)?"""
    if not names:
        return False
    words = [w.lower().strip("'s") for w in re.findall(r"[A-Za-z0-9']+", text)]
    if any(w in names for w in words):
        return True
    candidates = words + [a + b for a, b in itertools.pairwise(words)]
    return any(
        len(name) >= 5 and abs(len(c) - len(name)) <= 3 and SequenceMatcher(None, c, name).ratio() >= BRAND_LIKENESS
        for name in names
        for c in candidates
    )


def _ad_sentences(
    sentences: Sequence[Sentence],
    feats: Sequence[SentenceFeatures],
    blocks: Sequence[list[int]],
    ad_sim: Sequence[float] | None,
) -> list[bool]:
    """Which sentences belong to a sponsor read.

    Seeds are sentences with ad evidence. A block that is one transcript segment is a speaker turn (publisher
    transcripts): a seed condemns the whole turn. A block merged from several segments is Whisper output with no
    turns, so the read is recovered around each seed instead: neighbours within SPREAD sentences that name the
    advertised brand, carry any ad evidence, or sit right next to a seed or between two ad sentences.
    """
    n = len(sentences)
    evidence = [ad_score(f) + (max(0.0, ad_sim[i]) if ad_sim is not None else 0.0) for i, f in enumerate(feats)]
    is_ad = [False] * n
    for block in blocks:
        single_turn = sentences[block[0]].first_segment == sentences[block[-1]].last_segment
        if single_turn and sum(evidence[i] for i in block) >= AD_BLOCK:
            for i in block:
                is_ad[i] = True
    seeds = [i for i in range(n) if evidence[i] >= AD_BLOCK]
    for i in seeds:
        is_ad[i] = True
    # A whole speaker turn (one segment, several sentences) is judged on its own: the read never spills into
    # the guest's answer next to it. Spreading is for ASR text, where turns are unknown.
    # (An ASR segment is a few seconds of one sentence or less; a single-sentence block longer than that is a turn.)
    turn = [False] * n
    for block in blocks:
        one_segment = sentences[block[0]].first_segment == sentences[block[-1]].last_segment
        long = sentences[block[-1]].end - sentences[block[0]].start > ASR_SEGMENT_SECONDS
        if one_segment and (len(block) > 1 or long):
            for i in block:
                turn[i] = True
    names = _brand_names([sentences[i].text for i in range(n) if is_ad[i]])
    for i in seeds:
        for j in range(max(0, i - SPREAD), min(n, i + SPREAD + 1)):
            if is_ad[j] or feats[j].question or feats[j].frame:
                continue
            near = not turn[j] and (abs(j - i) == 1 or evidence[j] > 0)
            if near or _mentions(sentences[j].text, names):
                is_ad[j] = True
    # Fill gaps: a sentence between two ad sentences (within two) is part of the same read. One sentence right
    # between two is, even when it looks like a turn: a long Whisper segment is not a speaker turn, and nobody
    # answers in the middle of a sponsor read.
    ad_idx = [i for i in range(n) if is_ad[i]]
    for a, b in itertools.pairwise(ad_idx):
        if 1 < b - a <= 3:
            for j in range(a + 1, b):
                if not turn[j] or b - a == 2:
                    is_ad[j] = True
    return is_ad


_CONTINUATION_OPENERS = {
    "driven",
    "because",
    "which",
    "while",
    "with",
    "by",
    "and",
    "but",
    "so",
    "leading",
    "making",
    "meaning",
    "due",
    "thanks",
    "as",
    "than",
    "until",
    "unless",
    "whereas",
    "since",
    "compared",
    "rather",
    "instead",
}


def _continuation(f: SentenceFeatures, text: str, ad: bool) -> bool:
    words = text.split()
    if ad or not words or f.question or f.question_form or f.frame or f.filler_rate > 0 or f.personal_rate > 0:
        return False
    first = words[0].strip(",.;:").lower()
    return f.words <= 12 and (words[0][:1].islower() or first in _CONTINUATION_OPENERS)


def _chunks(run: list[int], sentences: Sequence[Sentence], feats: Sequence[SentenceFeatures]) -> list[list[int]]:
    """Group a run of kept sentences into passages of at most 3 sentences / ~100 words.

    A sentence that leans on the one before ("That means ...") stays with it rather than open a passage.
    """
    chunks: list[list[int]] = []
    for i in run:
        if chunks:
            cur = chunks[-1]
            words = sum(feats[j].words for j in cur) + feats[i].words
            fits = len(cur) < MAX_SENTENCES and words <= MAX_WORDS
            if fits or (feats[i].dangling and len(cur) < MAX_SENTENCES):
                cur.append(i)
                continue
        chunks.append([i])
    # Rebalance a lone trailing sentence that does not stand alone onto its predecessor chunk.
    if len(chunks) >= 2 and len(chunks[-1]) == 1 and feats[chunks[-1][0]].dangling:
        chunks[-2].extend(chunks.pop())
    return chunks


def _passage_claim(chunk: Sequence[int], claims: Sequence[float], feats: Sequence[SentenceFeatures]) -> float:
    """Word-weighted claim score of a run of sentences; -1 when it is too short to stand as a passage."""
    words = sum(feats[i].words for i in chunk)
    if words < MIN_WORDS:
        return -1.0
    claim = sum(claims[i] * feats[i].words for i in chunk) / words
    # A passage opening on a reference to something we did not keep cannot stand alone.
    return claim - 0.2 if feats[chunk[0]].dangling else claim


def extract_passages(segments: Sequence[TimedText], *, ad_sim: Sequence[float] | None = None) -> list[Passage]:
    """Candidate insights of a transcript, in order. `ad_sim`: optional extra ad evidence per sentence."""
    sentences = split_segments(segments)
    if not sentences:
        return []
    feats = [features(s.text) for s in sentences]
    claims = [claim_score(f) for f in feats]
    blocks = _blocks(sentences)
    is_ad = _ad_sentences(sentences, feats, blocks, ad_sim)

    out: list[Passage] = []
    n = len(sentences)
    block_of = [0] * n
    for b, block in enumerate(blocks):
        for i in block:
            block_of[i] = b
    keep = [
        claims[i] >= KEEP_SENTENCE and not feats[i].question and not is_ad[i] and not feats[i].frame for i in range(n)
    ]
    for block in blocks:
        if any(feats[i].frame for i in block) and len(block) <= SMALL_BLOCK:
            for i in block:  # an intro, outro or break turn
                keep[i] = False

    def joins(i: int) -> bool:
        """May sentence i continue a passage that sentence i-1 is in?

        Within a block, yes. Across blocks only when both are one-sentence blocks: that is ASR output cut at
        pauses (a publisher transcript's speaker turn is rarely a single sentence on both sides).
        """
        a, b = block_of[i - 1], block_of[i]
        return a == b or (len(blocks[a]) == 1 and len(blocks[b]) == 1 and pause(i) <= MAX_JOIN_PAUSE)

    def pause(i: int) -> float:
        return sentences[i].start - sentences[i - 1].end

    # A short fragment ASR split off the end of a kept claim ("... during the 2010s. Driven by huge
    # manufacturing scale.") is kept with it rather than dropped for being short.
    # It counts with its claim's score: a fragment is short by nature, not chatter.
    def continues(i: int) -> bool:
        # Across a block boundary only a lower-case start is a cut sentence; a capitalised "And ..." opens a turn.
        same = block_of[i] == block_of[i - 1]
        cut = sentences[i].text[:1].islower() and pause(i) <= MAX_JOIN_PAUSE
        return _continuation(feats[i], sentences[i].text, is_ad[i]) and (same or cut)

    for i in range(1, n):
        if keep[i - 1] and not keep[i] and continues(i):
            keep[i] = True
            claims[i] = max(claims[i], claims[i - 1])

    def bridge(j: int) -> bool:
        """A dropped sentence that does not end the thought: neither question, chatter, frame nor ad.

        ASR garbles a sentence in the middle of an answer; the answer's two halves are still one passage,
        not two (which a brief could send twice).
        """
        f = feats[j]
        chatter = f.question or f.question_form or f.frame or f.exclaim or f.filler_rate > 0 or f.self_rate > 0
        return not keep[j] and not is_ad[j] and not chatter and joins(j) and joins(j + 1)

    runs: list[list[int]] = []
    for i in range(n):
        if not keep[i]:
            continue
        last = runs[-1][-1] if runs else -10
        if (last == i - 1 and (joins(i) or continues(i))) or (last == i - 2 and bridge(i - 1)):
            runs[-1].append(i)
        else:
            runs.append([i])
    for run in runs:
        chunks = _chunks(run, sentences, feats)
        if len(chunks) > 1 and len({block_of[i] for i in run}) == 1 and len(blocks[block_of[run[0]]]) > 1:
            # One speaker turn is one thought: two passages of it could both reach a brief. Keep its
            # best-argued 1-3 sentences (ASR runs, which may hold several answers, are still cut).
            chunks = [max(chunks, key=lambda c: sum(claims[i] * feats[i].words for i in c))]
        for chunk in chunks:
            claim = _passage_claim(chunk, claims, feats)
            if claim < KEEP_PASSAGE and len(chunk) > 1 and feats[chunk[0]].dangling:
                # "It does, because ..." answers a question we dropped; the sentences after it may still
                # make the claim on their own.
                rest = chunk[1:]
                rest_claim = _passage_claim(rest, claims, feats)
                if rest_claim >= KEEP_PASSAGE:
                    chunk, claim = rest, rest_claim
            if claim < KEEP_PASSAGE:
                continue
            words = sum(feats[i].words for i in chunk)
            subst = sum(substance(feats[i]) * feats[i].words for i in chunk) / words
            out.append(
                Passage(
                    text=" ".join(sentences[i].text for i in chunk),
                    start=sentences[chunk[0]].start,
                    end=sentences[chunk[-1]].end,
                    substance=round(min(1.0, 0.5 * subst + 0.5 * claim), 4),
                    claim=round(claim, 4),
                    first_sentence=chunk[0],
                    last_sentence=chunk[-1],
                )
            )
    return out
