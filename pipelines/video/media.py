"""FFmpeg work for the video pipeline: probing with PyAV, encoding with the ffmpeg binary.

The encoders run as the ``ffmpeg`` binary that imageio-ffmpeg ships in its wheel (no system FFmpeg needed),
so a transcode costs what bare ``ffmpeg`` costs and its memory stays in a separate process. Probing uses
PyAV because no wheel ships ``ffprobe``. Every encode normalises what players choke on: odd dimensions
(rounded down to even for yuv420p), rotation metadata (frames are rotated, the tag dropped), variable
frame rate (resampled to a constant rate) and a missing audio track (the audio map is optional).
"""

from __future__ import annotations

import math
import subprocess
import threading
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import av
import imageio_ffmpeg

from offload import process_tree

FORMATS = ("mp4", "webm", "gif")
CONTENT_TYPES = {"mp4": "video/mp4", "webm": "video/webm", "gif": "image/gif", "jpg": "image/jpeg"}

MAX_FPS = 60
GIF_FPS = 10
GIF_MAX_WIDTH = 480
GIF_MAX_SECONDS = 15.0
THUMBNAIL_MAX_WIDTH = 640
THUMBNAIL_AT = 0.10  # fraction of the duration
# What FFmpeg may open for a source (docs/security.md): the local file itself, read by a demuxer for a
# self-contained video file. Never a network protocol, and never a playlist or list demuxer (hls, dash,
# concat...): a downloaded file in one of those formats would make FFmpeg fetch the URLs it lists, around
# the SSRF guard, or read other local files into this user's video.
INPUT_PROTOCOLS = "file"
# mov: mp4, m4v, 3gp; matroska: webm; image2 and jpeg_pipe: a single still (thumbnails are probed too).
INPUT_FORMATS = "mov,matroska,avi,flv,mpegts,mpeg,asf,ogg,gif,image2,jpeg_pipe"
_INPUT_OPTIONS = {"protocol_whitelist": INPUT_PROTOCOLS, "format_whitelist": INPUT_FORMATS}
_INPUT_ARGS = [arg for name, value in _INPUT_OPTIONS.items() for arg in (f"-{name}", value)]


class NotAVideo(ValueError):
    """The file has no decodable video stream; retrying cannot change that."""


@dataclass(frozen=True)
class VideoInfo:
    duration: float
    width: int  # as displayed, after rotation
    height: int
    fps: float
    video_codec: str
    audio_codec: str | None
    rotation: int

    @property
    def has_audio(self) -> bool:
        return self.audio_codec is not None


def ffmpeg_exe() -> str:
    return imageio_ffmpeg.get_ffmpeg_exe()


def probe(path: Path) -> VideoInfo:
    """Describe the first video stream; decode one frame so a file that merely looks like a video fails."""
    try:
        with av.open(str(path), container_options=_INPUT_OPTIONS) as container:
            if not container.streams.video:
                raise NotAVideo("no video stream")
            video = container.streams.video[0]
            first = next(container.decode(video), None)
            if first is None:
                raise NotAVideo("no decodable video frame")
            rotation = int(getattr(first, "rotation", 0) or 0) % 360
            width, height = first.width, first.height
            if rotation in (90, 270):
                width, height = height, width
            duration = _duration_seconds(container, video)
            rate = video.average_rate or video.guessed_rate or Fraction(30)
            audio = container.streams.audio[0].codec_context.name if container.streams.audio else None
            return VideoInfo(
                duration=duration,
                width=width,
                height=height,
                fps=round(float(rate), 3),
                video_codec=video.codec_context.name,
                audio_codec=audio,
                rotation=rotation,
            )
    except NotAVideo:
        raise
    except (av.FFmpegError, StopIteration, ValueError, OSError) as error:
        raise NotAVideo(str(error).splitlines()[0][:200]) from error


def _duration_seconds(container: av.container.InputContainer, video: av.VideoStream) -> float:
    if video.duration is not None and video.time_base is not None:
        return round(float(video.duration * video.time_base), 3)
    if container.duration is not None:
        return round(container.duration / av.time_base, 3)
    raise NotAVideo("unknown duration")


def output_fps(info: VideoInfo) -> int:
    """A constant output rate: the source's average rate, rounded, capped at 60."""
    return max(1, min(MAX_FPS, round(info.fps) or 30))


def encode_args(fmt: str, info: VideoInfo, source: Path, target: Path, preset: str = "fast") -> list[str]:
    """The ffmpeg arguments (after the executable) that turn ``source`` into ``target`` in ``fmt``."""
    even = f"fps={output_fps(info)},scale=trunc(iw/2)*2:trunc(ih/2)*2"
    audio_map = ["-map", "0:v:0", "-map", "0:a:0?"]
    head = ["-hide_banner", "-nostdin", "-y", *_INPUT_ARGS, "-i", str(source)]
    if fmt == "mp4":
        return [*head, *audio_map, "-vf", even, "-c:v", "libx264", "-preset", preset, "-crf", "23",
                "-pix_fmt", "yuv420p", "-c:a", "aac", "-b:a", "128k", "-ac", "2",
                "-movflags", "+faststart", str(target)]  # fmt: skip
    if fmt == "webm":
        return [*head, *audio_map, "-vf", even, "-c:v", "libvpx-vp9", "-crf", "33", "-b:v", "0",
                "-deadline", "realtime", "-cpu-used", "8", "-row-mt", "1", "-pix_fmt", "yuv420p",
                "-c:a", "libopus", "-b:a", "96k", "-ac", "2", str(target)]  # fmt: skip
    if fmt == "gif":
        palette = (
            f"fps={GIF_FPS},scale='min({GIF_MAX_WIDTH},iw)':-2:flags=lanczos,"
            "split[a][b];[a]palettegen=stats_mode=diff[p];[b][p]paletteuse=dither=bayer"
        )
        return [*head, "-t", str(GIF_MAX_SECONDS), "-map", "0:v:0", "-an", "-vf", palette,
                "-loop", "0", str(target)]  # fmt: skip
    raise ValueError(f"format: {fmt!r} must be one of {', '.join(FORMATS)}")


def thumbnail_args(info: VideoInfo, source: Path, target: Path) -> list[str]:
    """One JPEG frame at ~10% of the duration (seeking before ``-i`` is fast and keyframe-accurate)."""
    at = max(0.0, info.duration * THUMBNAIL_AT)
    return ["-hide_banner", "-nostdin", "-y", "-ss", f"{at:.3f}", *_INPUT_ARGS, "-i", str(source),
            "-frames:v", "1", "-vf", f"scale='min({THUMBNAIL_MAX_WIDTH},iw)':-2", "-q:v", "3", "-update", "1",
            str(target)]  # fmt: skip


def output_seconds(fmt: str, info: VideoInfo) -> float:
    """How long the output plays, so progress can be reported as a fraction."""
    return min(info.duration, GIF_MAX_SECONDS) if fmt == "gif" else info.duration


class FFmpegFailed(RuntimeError):
    pass


def run_ffmpeg(args: list[str], seconds: float, on_progress: Callable[[float], None] | None = None) -> None:
    """Run ffmpeg with machine-readable progress on stdout; raise with its last error lines on failure."""
    command = [ffmpeg_exe(), "-loglevel", "error", "-progress", "pipe:1", "-nostats", *args]
    errors: deque[str] = deque(maxlen=20)
    # process_tree.popen: ffmpeg dies with the run worker (and on an interrupt), never writing on after it.
    with process_tree.popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, bufsize=1
    ) as process:
        assert process.stdout is not None and process.stderr is not None
        # Drain stderr beside stdout: a corrupt input can make ffmpeg write more than a pipe buffer of
        # errors, and reading one pipe to its end before the other would then block both processes.
        drain = threading.Thread(target=errors.extend, args=(process.stderr,), daemon=True)
        drain.start()
        for line in process.stdout:
            key, _, value = line.strip().partition("=")
            if key == "out_time_us" and on_progress and seconds > 0 and value.isdigit():
                on_progress(min(1.0, int(value) / 1e6 / seconds))
            elif key == "progress" and value == "end" and on_progress:
                on_progress(1.0)
        code = process.wait()
        drain.join()
    if code != 0:
        detail = " | ".join(line.strip() for line in errors if line.strip())[-500:]
        raise FFmpegFailed(f"ffmpeg exited with {code}: {detail}")


class CorruptOutput(RuntimeError):
    """A produced file that does not decode to the end, or lacks a stream, or is too short or too long."""


DURATION_TOLERANCE = 0.25  # seconds an output may differ from the source (issue 13)


def expected_streams(fmt: str, info: VideoInfo) -> int:
    """Streams an output of ``fmt`` has: video, plus audio when the source has it (a GIF never does)."""
    return 1 + (1 if info.has_audio and fmt in ("mp4", "webm") else 0)


def verify(path: Path, fmt: str, info: VideoInfo) -> float:
    """Decode ``path`` end to end; raise :class:`CorruptOutput` unless it has :func:`expected_streams`
    streams and its video plays :func:`output_seconds` within ``DURATION_TOLERANCE``. Its duration.

    The decoded duration is the end of the last video frame (pts + frame duration) minus the first frame's
    start: a truncated or half-overwritten file decodes short, or raises."""
    try:
        with av.open(str(path)) as container:
            streams = len(container.streams.video) + len(container.streams.audio)
            if streams != expected_streams(fmt, info) or not container.streams.video:
                raise CorruptOutput(f"{fmt}: {streams} streams, expected {expected_streams(fmt, info)}")
            video = container.streams.video[0]
            start, end = math.inf, -math.inf
            for frame in container.decode(*container.streams.video, *container.streams.audio):
                if not isinstance(frame, av.VideoFrame) or frame.pts is None or frame.time_base is None:
                    continue  # audio is decoded (a corrupt packet raises) but the video sets the length
                at = float(frame.pts * frame.time_base)
                length = float(frame.duration * frame.time_base) if frame.duration else 0.0
                if not length and video.average_rate:
                    length = 1 / float(video.average_rate)
                start, end = min(start, at), max(end, at + length)
    except CorruptOutput:
        raise
    except (av.FFmpegError, OSError, ValueError) as error:
        raise CorruptOutput(f"{fmt}: does not decode: {str(error).splitlines()[0][:200]}") from error
    if end < start:
        raise CorruptOutput(f"{fmt}: no decodable video frame")
    duration, expected = end - start, output_seconds(fmt, info)
    if abs(duration - expected) > DURATION_TOLERANCE:
        raise CorruptOutput(f"{fmt}: plays {duration:.3f} s, expected {expected:.3f} s")
    return round(duration, 3)
