"""The ``sentiment`` node type: the polarity of a text with VADER, offline.

VADER (``vaderSentiment``, MIT) is a lexicon and rule-based analyser tuned for short,
informal English (replies, reviews, social media): no model and no download; its lexicon
ships in the package and is read once per process, on first use. Its ``compound`` score is
in [-1, 1]; VADER's authors label >= 0.05 positive and <= -0.05 negative, the defaults here.

Its cost grows faster than the text (about 10 ms for 1,000 characters, 0.5 s for 20,000 on
one core), so texts past :data:`OFF_LOOP_CHARS` are analysed in a thread, and only the first
``max_chars`` characters of a text are analysed (``truncated`` says so).
"""

from __future__ import annotations

import asyncio
import functools
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, model_validator

from flowyard.nodes.base import NodeConfig, NodeOutcome, NodeType, StepContext

#: Texts longer than this are analysed off the event loop.
OFF_LOOP_CHARS = 1000
DEFAULT_MAX_CHARS = 20_000
MAX_MAX_CHARS = 50_000


@functools.cache
def _analyser() -> Any:
    """The process's one analyser. A read-only resource like a compiled pattern, built once
    (reading its 7,500-entry lexicon takes ~10 ms) on first use, not at import: processes
    that never analyse a text never load it. ``polarity_scores`` keeps no state between
    calls, so threads share it."""
    from vaderSentiment.vaderSentiment import SentimentIntensityAnalyzer

    return SentimentIntensityAnalyzer()


def polarity(text: str) -> dict[str, float]:
    """VADER's scores of ``text``: ``neg``, ``neu``, ``pos`` and ``compound``."""
    scores = _analyser().polarity_scores(text)
    return {key: float(scores[key]) for key in ("neg", "neu", "pos", "compound")}


class SentimentConfig(NodeConfig):
    """The text to analyse (a template) and where the labels start."""

    text: str = Field(description="The text to analyse; a template (e.g. '{{ input.reply }}').")
    positive_threshold: float = Field(
        0.05, ge=-1, le=1, description="A compound score at or above this is 'positive'."
    )
    negative_threshold: float = Field(
        -0.05, ge=-1, le=1, description="A compound score at or below this is 'negative'."
    )
    max_chars: int = Field(
        DEFAULT_MAX_CHARS,
        ge=1,
        le=MAX_MAX_CHARS,
        description="Only the first max_chars characters are analysed (output truncated).",
    )

    @model_validator(mode="after")
    def _ordered(self) -> SentimentConfig:
        if self.negative_threshold >= self.positive_threshold:
            raise ValueError("negative_threshold must be below positive_threshold")
        return self


class SentimentOutput(BaseModel):
    """What a sentiment step stores."""

    model_config = ConfigDict(extra="ignore")

    label: str = Field(description="positive, neutral or negative (from score and thresholds).")
    score: float = Field(description="VADER's compound score, in [-1, 1].")
    positive: float = Field(description="Share of the text that is positive, in [0, 1].")
    neutral: float = Field(description="Share of the text that is neutral, in [0, 1].")
    negative: float = Field(description="Share of the text that is negative, in [0, 1].")
    truncated: bool = Field(description="True when only the first max_chars were analysed.")


class SentimentNode(NodeType[SentimentConfig]):
    """Label a text positive, neutral or negative with VADER (offline, no download);
    output ``{label, score, positive, neutral, negative, truncated}``. An empty text is
    neutral with every score 0. It raises no error of its own (a template that fails to
    render fails as ``expression.*``)."""

    type_name = "sentiment"
    config_model = SentimentConfig
    template_fields = ("/text",)
    output_model = SentimentOutput
    description = (
        "Analyses a text's sentiment with VADER (offline). "
        "Output: {label, score, positive, neutral, negative, truncated}."
    )

    async def execute(self, ctx: StepContext, config: SentimentConfig) -> NodeOutcome:
        """Render the text, analyse (at most ``max_chars`` of) it, label the score."""
        rendered = await ctx.render(config.text)
        text = "" if rendered is None else str(rendered)
        truncated = len(text) > config.max_chars
        text = text[: config.max_chars]
        if len(text) > OFF_LOOP_CHARS or _analyser.cache_info().currsize == 0:
            # Long texts take tens to hundreds of milliseconds; the first call reads the
            # lexicon. Neither may hold the event loop (other steps, claims, commits).
            scores = await asyncio.to_thread(polarity, text)
        else:
            scores = polarity(text)
        compound = scores["compound"]
        if compound >= config.positive_threshold:
            label = "positive"
        elif compound <= config.negative_threshold:
            label = "negative"
        else:
            label = "neutral"
        return NodeOutcome(
            output={
                "label": label,
                "score": compound,
                "positive": scores["pos"],
                "neutral": scores["neu"],
                "negative": scores["neg"],
                "truncated": truncated,
            }
        )
