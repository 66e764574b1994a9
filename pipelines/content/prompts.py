"""What the content jobs ask the model, one function per stage, and the shapes of the JSON replies.

The replies that later stages build on (outline, SEO pass) are JSON objects validated against the pydantic
models below; a reply that breaks them is asked for once more, then the step fails (``OpenAIResource
.chat_json``).
"""

from __future__ import annotations

from pydantic import BaseModel, Field

Message = dict[str, str]


class OutlineSection(BaseModel):
    heading: str = Field(min_length=1, max_length=200)
    points: list[str] = Field(min_length=1, max_length=8)


class OutlineReply(BaseModel):
    title: str = Field(min_length=1, max_length=200)
    sections: list[OutlineSection] = Field(min_length=2, max_length=12)


class SeoReply(BaseModel):
    """The article as it will be published."""

    title: str = Field(min_length=1, max_length=120, description="SEO title, ideally under 60 characters")
    content: str = Field(min_length=1, description="the full article in Markdown")
    meta_description: str = Field(
        min_length=1, max_length=320, description="search snippet, ideally 140-160 characters"
    )


def _writer(tone: str) -> Message:
    return {"role": "system", "content": f"You are an expert writer. Write in a {tone} tone."}


def generate(topic: str, tone: str, words: int) -> list[Message]:
    return [
        _writer(tone),
        {"role": "user", "content": f"Write about {topic} in about {words} words. Plain prose, no title."},
    ]


def outline(topic: str, keywords: list[str], tone: str, words: int) -> list[Message]:
    return [
        _writer(tone),
        {"role": "user", "content": (
            f"Outline an article of about {words} words on {topic!r} for readers who search for: "
            f"{', '.join(keywords)}. Reply in JSON with a title and 3-8 sections, each with a heading "
            "and its key points."
        )},
    ]  # fmt: skip


def article(
    title: str, sections: list[OutlineSection], keywords: list[str], tone: str, words: int
) -> list[Message]:
    plan = "\n".join(f"## {s.heading}\n" + "\n".join(f"- {p}" for p in s.points) for s in sections)
    return [
        _writer(tone),
        {"role": "user", "content": (
            f"Write the article {title!r} in Markdown, about {words} words, following this outline:\n\n"
            f"{plan}\n\nUse these keywords where they fit naturally: {', '.join(keywords)}."
        )},
    ]  # fmt: skip


def seo(title: str, markdown: str, keywords: list[str]) -> list[Message]:
    return [
        {"role": "system", "content": "You are an SEO editor. You keep the author's voice and facts."},
        {"role": "user", "content": (
            f"Optimise this article for the keywords {', '.join(keywords)}: a title under 60 characters, "
            "the content in Markdown with the keywords in headings where natural, and a meta description "
            f"of 140-160 characters. Reply in JSON.\n\nTitle: {title}\n\n{markdown}"
        )},
    ]  # fmt: skip


def hero_image(title: str, description: str) -> str:
    return (
        f"A clean, modern hero illustration for an article titled {title!r}: {description} "
        "No text, no letters, no logos."
    )
