"""Linguistic features of spoken sentences: is this a claim worth reading, or talk around one?

Everything here is generic to podcast speech, not to any show or topic: word classes (fillers, personal pronouns,
numbers, causal connectives, evidence words), punctuation, and the shape of advertising copy (sponsor
attributions, web addresses, offer terms, calls to action). The word lists describe *how* people talk in each
kind of segment; none of them name a subject.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

_WORD = re.compile(r"[A-Za-z0-9']+")

# Disfluencies and conversational particles: frequent in banter, rare in a guest's considered claim.
FILLERS = {"um", "uh", "erm", "hmm", "mm", "ha", "haha", "wow", "oh", "yeah", "okay", "ok", "alright", "huh", "yep"}
FILLER_PHRASES = (
    "you know",
    "i mean",
    "kind of",
    "sort of",
    "pretty much",
    "i guess",
    "i think",
    "like,",
    "honestly",
    "basically",
    "totally",
    "literally",
    "i love",
    "i'd",
    "right?",
)
PERSONAL = {
    "i",
    "i'm",
    "i've",
    "i'd",
    "i'll",
    "me",
    "my",
    "mine",
    "you",
    "you're",
    "you've",
    "your",
    "we",
    "we're",
    "we've",
    "we'll",
    "us",
    "our",
    "let's",
}
# First person singular: anecdotes and asides ("I just got back from ..."); explanations use generic "you".
SELF = {"i", "i'm", "i've", "i'd", "i'll", "me", "my", "mine", "myself"}
NUMBER_WORDS = {
    "one",
    "two",
    "three",
    "four",
    "five",
    "six",
    "seven",
    "eight",
    "nine",
    "ten",
    "eleven",
    "twelve",
    "fifteen",
    "twenty",
    "thirty",
    "forty",
    "fifty",
    "sixty",
    "seventy",
    "eighty",
    "ninety",
    "hundred",
    "thousand",
    "million",
    "billion",
    "trillion",
    "percent",
    "half",
    "twice",
    "double",
    "triple",
    "quarter",
    "third",
    "dozen",
    "times",
    "fold",
    "first",
    "second",
}
# Words that carry a mechanism, a comparison or a consequence: the backbone of an explanatory claim.
MECHANISM = {
    "because",
    "so",
    "therefore",
    "which",
    "means",
    "cause",
    "causes",
    "caused",
    "leads",
    "lead",
    "reduces",
    "reduce",
    "increases",
    "increase",
    "raises",
    "lowers",
    "cuts",
    "grows",
    "drops",
    "than",
    "more",
    "less",
    "fewer",
    "instead",
    "whereas",
    "while",
    "rather",
    "cost",
    "without",
    "only",
    "most",
    "least",
    "since",
    "unless",
    "depends",
    "allows",
    "prevents",
    "blocks",
    "makes",
    "between",
    "per",
    "each",
    "every",
    "average",
    "roughly",
    "about",
    "around",
    "nearly",
    "almost",
}
EVIDENCE = {
    "study",
    "studies",
    "trial",
    "trials",
    "research",
    "researchers",
    "review",
    "found",
    "finds",
    "data",
    "evidence",
    "measured",
    "experiment",
    "experiments",
    "showed",
    "shows",
    "analysis",
    "survey",
    "records",
    "estimate",
    "estimates",
    "compared",
    "typically",
    "historians",
    "scientists",
    "rate",
}
# Words of the show's own frame: greetings, thanks, the show/episode itself, breaks and sign-offs.
HOUSEKEEPING = {
    "welcome",
    "show",
    "episode",
    "episodes",
    "podcast",
    "listening",
    "listeners",
    "listener",
    "subscribe",
    "thanks",
    "thank",
    "host",
    "guest",
    "break",
    "wrap",
    "tune",
    "join",
    "joining",
    "newsletter",
    "patreon",
    "sponsor",
}
# Phrases that frame the show itself (greeting, introducing people, signing off): a block holding one is
# intro/outro/housekeeping, not content.
_FRAME = re.compile(
    r"\b(?:welcome (?:back )?to|welcome to the show|thanks? (?:so much )?for (?:having|joining|listening|coming)|"
    r"i'm your host|my guest|our guest|joining (?:me|us)|see you next|until next time|that's (?:all|it) for|"
    r"(?:take|taking) a (?:quick |short )?break|we're back|and we are back|subscribe|leave (?:us )?a review|"
    r"wrap (?:it |things )?up|next (?:week|episode|time))\b",
    re.IGNORECASE,
)

# Advertising copy. Attribution of the episode to a payer, web addresses read aloud, offers, and calls to action.
_AD_STRONG = [
    r"\bsponsor(?:ed|s|ing)?\b",
    r"\bbrought to you by\b",
    r"\b(?:supported|powered|presented|made possible) by\b",
    r"\bcomes? to you (?:from|by|courtesy of)\b|\bcourtesy of\b",
    r"\bpromo(?:tional)? code\b",
    r"\b(?:use|with|enter|apply) (?:the |my |our )?code\b",
    r"\bcode [A-Za-z0-9]+ at\b",
    r"\b\w+\s*(?:\.|\bdot\b)\s*(?:com|org|net|io|co|ai|app|fm)\b",
    r"\bwww\b|https?://",
    r"\b(?:percent|%|dollars?|bucks) off\b",
    r"\bfree (?:shipping|trial|month|week|gift)\b",
    r"\b(?:your|their) first (?:order|purchase|month|box|year)\b",
    r"\blisteners (?:get|can get|save|receive)\b",
    r"\b(?:check out|checkout)\b",
    r"\blink in the (?:show )?notes\b",
    r"\bfor supporting (?:the|this|our) (?:show|podcast|episode)\b",
    r"\b(?:in partnership with|our partners? (?:at|over at))\b",
    r"\bexclusive (?:offer|deal|discount)\b",
    r"\b(?:sign up|try it|start) (?:for )?free\b",
]
_AD_WEAK = [
    r"\bslash\b",
    r"\b(?:discount|deal|offer|coupon|guarantee|subscription|plans? start)\b",
    r"\b(?:sign up|signup|order now|try it|download the app|head (?:over )?to|go to|visit)\b",
    r"\bright now\b",
    r"\btoday\b",
    r"\b(?:our|this) sponsor\b",
]
_AD_STRONG_RE = [re.compile(p, re.IGNORECASE) for p in _AD_STRONG]
_AD_WEAK_RE = [re.compile(p, re.IGNORECASE) for p in _AD_WEAK]

# Openers that lean on something said before: the passage would not stand alone.
_DANGLING = re.compile(
    r"^(?:as (?:i|we|you) (?:said|mentioned|discussed)|like (?:i|we) said|as mentioned|which|and so|"
    r"and that|but that|that's why|that is why|this is why|so that's|and then|also,|plus,|exactly|right,|"
    r"(?:it|this|that|these|those|they|he|she|them|there)(?:'s|'re)?\b(?! (?:is|are|was|were) (?:a|an|the|no) ))",
    re.IGNORECASE,
)
_HARD_DANGLING = re.compile(r"^(?:as (?:i|we|you) (?:said|mentioned)|like (?:i|we) said|as mentioned)", re.I)


# Question word order, for transcripts that lose the question mark (ASR often does): a wh-word opening a clause
# followed by an auxiliary ("..., what is actually eating ...") or an inverted auxiliary + subject ("does it").
# Not "which": ", which is why ..." is how explanations continue.
_QUESTION_FORM = re.compile(
    r"(?:^|[,;:]\s*|\b(?:so|and|but|okay|ok|now)\s+)(?:what|which one|why|how|who|where)\s+(?:\w+\s+)?"
    r"(?:is|are|was|were|do|does|did|should|would|could|can|will)\b"
    r"|(?:^|[,;:]\s*|\b(?:so|and|but|okay|ok|now)\s+)(?:is|are|does|do|did|can|could|should|would|will)\s+"
    r"(?:it|you|they|we|i|he|she|there|that|this|people|anyone|anything)\b",
    re.IGNORECASE,
)


@dataclass(frozen=True)
class SentenceFeatures:
    words: int
    question: bool
    question_form: bool
    exclaim: bool
    filler_rate: float
    personal_rate: float
    self_rate: float
    number_rate: float
    mechanism_rate: float
    evidence_rate: float
    housekeeping_rate: float
    proper_nouns: int
    ad_strong: int
    ad_weak: int
    dangling: bool
    hard_dangling: bool
    frame: bool


def words_of(text: str) -> list[str]:
    return [w.lower() for w in _WORD.findall(text)]


def features(text: str) -> SentenceFeatures:
    ws = words_of(text)
    n = max(1, len(ws))
    low = " " + text.lower() + " "
    fillers = sum(w in FILLERS for w in ws) + sum(low.count(p) for p in FILLER_PHRASES)
    digits = sum(any(c.isdigit() for c in w) for w in ws)
    tokens = text.split()
    # Capitalised words after the first: names, places, products, studies; a rough named-entity count.
    proper = sum(1 for t in tokens[1:] if t[:1].isupper() and t.strip(".,!?;:").lower() not in PERSONAL)
    return SentenceFeatures(
        words=len(ws),
        question=text.rstrip().endswith("?"),
        question_form=bool(_QUESTION_FORM.search(text)),
        exclaim=text.rstrip().endswith("!"),
        filler_rate=fillers / n,
        personal_rate=sum(w in PERSONAL for w in ws) / n,
        self_rate=sum(w in SELF for w in ws) / n,
        number_rate=(digits + sum(w in NUMBER_WORDS for w in ws)) / n,
        mechanism_rate=sum(w in MECHANISM for w in ws) / n,
        evidence_rate=sum(w in EVIDENCE for w in ws) / n,
        housekeeping_rate=sum(w in HOUSEKEEPING for w in ws) / n,
        proper_nouns=proper,
        ad_strong=sum(bool(r.search(text)) for r in _AD_STRONG_RE),
        ad_weak=sum(bool(r.search(text)) for r in _AD_WEAK_RE),
        dangling=bool(_DANGLING.match(text.strip())),
        hard_dangling=bool(_HARD_DANGLING.match(text.strip())),
        frame=bool(_FRAME.search(text)),
    )


def claim_score(f: SentenceFeatures) -> float:
    """How much a sentence reads like a self-contained claim (roughly 0..1; below ~0.4 is talk around one).

    Weights are set by hand from what separates an explanation from conversation (length, numbers,
    connectives, impersonal voice); they were sanity-checked on the dev set, not fitted to it.
    """
    length = min(1.0, max(0.0, (f.words - 6) / 16))  # 6 words: nothing; 22+ words: full credit
    # A number or a "because" in a four-word quip is not a claim: content bonuses scale with length.
    bonus = min(0.25, 1.5 * f.number_rate) + min(0.25, 1.6 * f.mechanism_rate) + min(0.2, 2.0 * f.evidence_rate)
    s = 0.2 + 0.5 * length + bonus * (0.2 + 0.8 * length)
    s -= 1.8 * f.filler_rate + 0.9 * f.personal_rate + 1.2 * f.self_rate + 0.8 * f.housekeeping_rate
    if f.question:
        s -= 0.6
    elif f.question_form:
        s -= 0.35
    if f.exclaim:
        s -= 0.25
    if f.hard_dangling:
        s -= 0.3
    return max(0.0, min(1.0, s))


def ad_score(f: SentenceFeatures) -> float:
    """0..1: how much a sentence reads like a sponsor read (attribution, address, offer, call to action)."""
    return min(1.0, 0.5 * f.ad_strong + 0.2 * f.ad_weak)


def substance(f: SentenceFeatures) -> float:
    """0..1: specificity of a claim: numbers, mechanisms, evidence and named things, at a readable length."""
    s = 0.2 * min(1.0, f.words / 20)
    s += min(0.3, 2.0 * f.number_rate) + min(0.25, 2.0 * f.mechanism_rate) + min(0.15, 2.0 * f.evidence_rate)
    s += min(0.1, 0.03 * f.proper_nouns)
    s -= 1.0 * f.filler_rate + 0.5 * f.personal_rate
    return max(0.0, min(1.0, s))
