"""The AI content steps. Each stage of ``content_workflow`` is its own step with a typed output that the IO
manager persists, so re-executing a run from a failed stage (the image, say) reuses the text the earlier
stages already paid for. The AI calls' own retries are the SDK's (see ``resources.ai``), so these steps
carry no retry policy: a step that fails has already been retried where retrying helps.
"""

import datetime as dt
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import dagster as dg

from offload import metadata, paths
from offload.errors import AbortTaskRunError, FetchError
from offload.keys import article_key, image_key
from offload.log import StepLog
from offload.net.download import Downloader
from offload.result import job_result
from pipelines.content import images, prompts, text
from pipelines.content.payload import ContentWorkflowPayload, GenerateContentPayload
from pipelines.usage import record_usage, run_family_id, token_items
from resources.ai import AIError, GeneratedImage, OpenAIResource, TokenUsage
from resources.database import AppDatabase, Article
from resources.storage import Storage, StoredObject


def _failed(stage: str, error: AIError | FetchError) -> dg.Failure:
    """A failed call as the step's failure; one the next attempt would repeat (a bad request, a wrong key,
    invalid JSON twice) is not retried by any retry policy."""
    message = f"{stage}: {error}"
    return dg.Failure(description=message) if error.retryable else AbortTaskRunError(message)


# -- generate_content ------------------------------------------------------------------------------------


@dg.op
def generate(
    context: dg.OpExecutionContext,
    config: GenerateContentPayload,
    openai: OpenAIResource,
    database: AppDatabase,
) -> dg.Output[dict[str, Any]]:
    """One piece of text on the topic, in the tone, of about the length asked for."""
    try:
        reply = openai.chat(context, prompts.generate(config.topic, config.tone, config.words))
    except AIError as error:
        raise _failed("generate", error) from None
    if not reply.text.strip():
        raise dg.Failure(description="generate: the model returned no text")
    result = {
        "content": reply.text,
        "topic": config.topic,
        "word_count": text.word_count(reply.text),
        "model": reply.model,
    }
    record_usage(context, database, config.user_id, token_items(reply.usage))
    StepLog(context).info("content generated", {k: v for k, v in result.items() if k != "content"})
    return job_result(result, metadata={
        "preview": dg.MetadataValue.md(text.preview(reply.text)),
        "word_count": text.word_count(reply.text),
        "target_words": config.words,
    })  # fmt: skip


# -- content_workflow ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Brief:
    """The validated payload, carried from stage to stage."""

    topic: str
    keywords: list[str]
    user_id: str
    tone: str
    words: int


@dataclass(frozen=True)
class Outline:
    brief: Brief
    title: str
    sections: list[dict[str, Any]]
    usage: TokenUsage


@dataclass(frozen=True)
class Draft:
    brief: Brief
    title: str
    markdown: str
    usage: TokenUsage  # of this stage and the ones before


@dataclass(frozen=True)
class SeoArticle:
    brief: Brief
    title: str
    content: str
    meta_description: str
    model: str
    usage: TokenUsage  # of this stage and the ones before


@dataclass(frozen=True)
class HeroImage:
    key: str
    content_type: str
    width: int
    height: int
    size: int
    source: str  # b64_json | url: how the provider delivered it
    usage: TokenUsage


def _store_image(
    context: dg.OpExecutionContext,
    article: SeoArticle,
    generated: GeneratedImage,
    raw: Path,
    downloader: Downloader,
    storage: Storage,
) -> tuple[images.ImageInfo, StoredObject]:
    """Write the image to ``raw`` (fetching its link if that is what came), check it, store it, and show
    it in the step's metadata."""
    if generated.data is not None:
        raw.write_bytes(generated.data)
    else:
        assert generated.url is not None
        try:
            # A link the provider sent, not the user: the outbound HTTP policy only, never file:// or s3://.
            downloader.fetch(generated.url, raw, schemes=("https", "http"))
        except FetchError as error:
            raise _failed("hero_image: download", error) from None
    try:
        info = images.inspect(raw)
    except images.NotAnImage as error:
        raise dg.Failure(description=f"hero_image: the provider sent no usable image ({error})") from None
    key = image_key(article.brief.user_id, article_id_for(context), info.extension)
    with StepLog(context).timed("image stored", {"key": key, "width": info.width, "height": info.height}):
        stored = storage.put_file(key, raw, info.content_type)
    context.add_output_metadata({
        "image": dg.MetadataValue.md(images.preview_markdown(raw, article.title)),
        "image_url": dg.MetadataValue.url(stored.url),
        "bytes": stored.size,
        "source": "b64_json" if generated.data is not None else "url",
    })  # fmt: skip
    return info, stored


def article_id_for(context: dg.OpExecutionContext) -> str:
    """One article per run family: a retried or re-executed run writes the same article, never a second."""
    return "art_" + run_family_id(context).replace("-", "")


@dg.op
def outline(
    context: dg.OpExecutionContext, config: ContentWorkflowPayload, openai: OpenAIResource
) -> Outline:
    """The article's title and sections (JSON mode, validated)."""
    metadata.set("stage", "outline", context=context)
    brief = Brief(config.topic, config.keywords, config.user_id, config.tone, config.words)
    messages = prompts.outline(brief.topic, brief.keywords, brief.tone, brief.words)
    try:
        reply, usage = openai.chat_json(context, messages, prompts.OutlineReply)
    except AIError as error:
        raise _failed("outline", error) from None
    StepLog(context).info("outline ready", {"title": reply.title, "sections": len(reply.sections)})
    context.add_output_metadata({"outline": dg.MetadataValue.md(
        f"# {reply.title}\n\n" + "\n".join(f"- {s.heading}" for s in reply.sections))})  # fmt: skip
    return Outline(brief, reply.title, [s.model_dump() for s in reply.sections], usage)


@dg.op
def write_article(context: dg.OpExecutionContext, plan: Outline, openai: OpenAIResource) -> Draft:
    """The article in Markdown, section by section as outlined."""
    metadata.set("stage", "write_article", context=context)
    brief = plan.brief
    sections = [prompts.OutlineSection(**s) for s in plan.sections]
    messages = prompts.article(plan.title, sections, brief.keywords, brief.tone, brief.words)
    try:
        reply = openai.chat(context, messages)
    except AIError as error:
        raise _failed("write_article", error) from None
    if not reply.text.strip():
        raise dg.Failure(description="write_article: the model returned an empty article")
    words = text.word_count(reply.text)
    StepLog(context).info("article drafted", {"words": words, "target_words": brief.words})
    context.add_output_metadata({"words": words, "draft": dg.MetadataValue.md(text.preview(reply.text))})
    return Draft(brief, plan.title, reply.text, plan.usage + reply.usage)


@dg.op
def optimise_seo(context: dg.OpExecutionContext, draft: Draft, openai: OpenAIResource) -> SeoArticle:
    """Title, content and meta description tuned for the keywords (JSON mode, validated)."""
    metadata.set("stage", "optimise_seo", context=context)
    brief = draft.brief
    messages = prompts.seo(draft.title, draft.markdown, brief.keywords)
    try:
        reply, usage = openai.chat_json(context, messages, prompts.SeoReply)
    except AIError as error:
        raise _failed("optimise_seo", error) from None
    context.add_output_metadata({
        "title": reply.title,
        "meta_description": reply.meta_description,
        "words": text.word_count(reply.content),
    })  # fmt: skip
    return SeoArticle(
        brief, reply.title, reply.content, reply.meta_description, usage.model, draft.usage + usage
    )


@dg.op
def hero_image(
    context: dg.OpExecutionContext,
    article: SeoArticle,
    openai: OpenAIResource,
    downloader: Downloader,
    storage: Storage,
) -> HeroImage:
    """Generate the image, fetch it at once if the provider sent a link (those expire), check it is a real
    image, and store it."""
    metadata.set("stage", "hero_image", context=context)
    try:
        generated = openai.image(context, prompts.hero_image(article.title, article.meta_description))
    except AIError as error:
        raise _failed("hero_image", error) from None
    work = paths.work_dir() / context.run_id
    work.mkdir(parents=True, exist_ok=True)
    raw = work / "hero-image"
    try:
        info, stored = _store_image(context, article, generated, raw, downloader, storage)
    finally:
        raw.unlink(missing_ok=True)
    return HeroImage(
        key=stored.key,
        content_type=info.content_type,
        width=info.width,
        height=info.height,
        size=stored.size,
        source="b64_json" if generated.data is not None else "url",
        usage=generated.usage,
    )


@dg.op
def publish(
    context: dg.OpExecutionContext,
    article: SeoArticle,
    image: HeroImage,
    storage: Storage,
    database: AppDatabase,
) -> dg.Output[dict[str, Any]]:
    """Save the article in the app database and as Markdown in storage, record the usage, return the
    result. Every write is keyed by the run family, so running this step again changes nothing."""
    metadata.set("stage", "publish", context=context)
    brief = article.brief
    article_id = article_id_for(context)
    markdown_key = article_key(brief.user_id, article_id)
    document = text.markdown_document(
        {"title": article.title, "description": article.meta_description, "keywords": brief.keywords,
         "image": image.key, "date": dt.datetime.now(dt.UTC).date().isoformat()},
        article.content,
    )  # fmt: skip
    work = paths.work_dir() / context.run_id
    work.mkdir(parents=True, exist_ok=True)
    document_path = work / f"{article_id}.md"
    document_path.write_text(document, encoding="utf-8")
    storage.put_file(markdown_key, document_path, "text/markdown; charset=utf-8")
    saved_id = database.save_article(
        Article(
            id=article_id,
            user_id=brief.user_id,
            run_id=run_family_id(context),
            topic=brief.topic,
            keywords=brief.keywords,
            title=article.title,
            content=article.content,
            meta_description=article.meta_description,
            markdown_key=markdown_key,
            image_key=image.key,
            model=article.model,
        )
    )
    record_usage(context, database, brief.user_id, token_items(article.usage + image.usage))
    result = {
        "article_id": saved_id,
        "title": article.title,
        "content": article.content,
        "meta_description": article.meta_description,
        "image_url": storage.url(image.key),  # a fresh link: presigned URLs expire
    }
    StepLog(context).info("article published", {"article_id": saved_id, "markdown_key": markdown_key})
    metadata.set("stage", "published", context=context)
    shutil.rmtree(work, ignore_errors=True)
    return job_result(result, metadata={
        "article": dg.MetadataValue.md(text.preview(document, 4000)),
        "article_id": saved_id,
        "image_url": dg.MetadataValue.url(result["image_url"]),
        "markdown_key": markdown_key,
        "image": dg.MetadataValue.json(asdict(image)),
    })  # fmt: skip
