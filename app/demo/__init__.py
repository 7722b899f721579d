"""Demo content `make run` serves and seeds: three short synthesized episodes (see src/ for their scripts).

The audio was made with `espeak-ng -v en-us -s 145 -g 3 -w ep.wav -f src/epN.txt` and
`ffmpeg -i ep.wav -ac 1 -ar 22050 -b:a 40k episode-N.mp3`; the scripts are written for this project.
"""

from __future__ import annotations

from pathlib import Path

DEMO_DIR = Path(__file__).resolve().parent
FEED_PATH = "/demo/feed.xml"
DEMO_INTERESTS = "how memory and learning work, clean energy and batteries, and investing my savings"

EPISODES = [
    {
        "n": 1,
        "title": "Sleep on it: what the research says about learning",
        "description": "Why sleep, spacing and self-testing beat cramming.",
    },
    {
        "n": 2,
        "title": "The battery that ate the grid",
        "description": "Battery cost curves, grid storage and heat pumps.",
    },
    {
        "n": 3,
        "title": "Fees, funds and the best days of the market",
        "description": "Index funds, compounding fees and market timing.",
    },
]


def audio_file(n: int) -> Path:
    return DEMO_DIR / f"episode-{n}.mp3"
