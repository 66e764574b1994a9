"""The benchmarks' input videos, generated once with FFmpeg's test sources and cached in ``var/bench/``.

A file appears under its final name only when complete, so an interrupted generation is redone next time.
"""

from __future__ import annotations

import subprocess
from collections.abc import Callable
from pathlib import Path

from offload.paths import PROJECT_ROOT
from pipelines.video.media import VideoInfo, ffmpeg_exe
from pipelines.video.samples import make_clip

CACHE = PROJECT_ROOT / "var" / "bench"
GIB = 1024**3


def _cached(name: str, make: Callable[[Path], object]) -> Path:
    path = CACHE / name
    if not path.exists():
        CACHE.mkdir(parents=True, exist_ok=True)
        partial = path.with_name(f".{path.stem}.partial{path.suffix}")
        print(f"  generating {path} (once; cached)", flush=True)
        make(partial)
        partial.replace(path)
    return path


def clip_720p(seconds: int = 30) -> Path:
    """An H.264 + AAC test pattern, 1280x720 at 30 fps: a typical upload."""
    return _cached(
        f"clip-{seconds}s-1280x720-30fps.mp4",
        lambda target: make_clip(target, seconds=seconds, width=1280, height=720, fps=30),
    )


def clip_360p(seconds: int = 30) -> Path:
    """An H.264 + AAC test pattern, 640x360 at 30 fps: the size of issue 13's crash trials."""
    return _cached(
        f"clip-{seconds}s-640x360-30fps.mp4",
        lambda target: make_clip(target, seconds=seconds, width=640, height=360, fps=30),
    )


def heavy_720p(seconds: int) -> Path:
    """MJPEG at the highest quality over a lightly noised test pattern (~12.5 MiB/s), with AAC audio.

    The noise is what makes every frame large (~430 KiB), so 90 s pass 1 GiB; it is light enough that
    x264 at the pipeline's settings still encodes at about real time on 2 cores.
    """

    def make(target: Path) -> None:
        source = f"testsrc2=size=1280x720:rate=30:duration={seconds}"
        tone = f"sine=frequency=440:sample_rate=44100:duration={seconds}"
        subprocess.run(
            [ffmpeg_exe(), "-hide_banner", "-loglevel", "error", "-nostdin", "-y",
             "-f", "lavfi", "-i", source, "-f", "lavfi", "-i", tone,
             "-vf", "noise=alls=6:allf=t", "-c:v", "mjpeg", "-qmin", "1", "-q:v", "1",
             "-pix_fmt", "yuvj420p", "-c:a", "aac", "-shortest", str(target)],
            check=True,
        )  # fmt: skip

    return _cached(f"mjpeg-{seconds}s-1280x720-30fps-noise6.mkv", make)


def describe(path: Path, info: VideoInfo) -> dict[str, object]:
    """The input as recorded beside the figures."""
    return {
        "file": path.name,
        "bytes": path.stat().st_size,
        "duration_s": info.duration,
        "size": f"{info.width}x{info.height}",
        "fps": info.fps,
        "video": info.video_codec,
        "audio": info.audio_codec,
    }
