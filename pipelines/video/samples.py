"""Generated sample clips: the demo's input and the tests' fixtures, made locally with FFmpeg's test
sources, so nothing is downloaded."""

from __future__ import annotations

from pathlib import Path

from offload import process_tree
from pipelines.video.media import ffmpeg_exe


def make_clip(
    path: Path,
    *,
    seconds: float = 3.0,
    width: int = 320,
    height: int = 240,
    fps: int = 25,
    audio: bool = True,
    rotation: int = 0,
    variable_rate: bool = False,
    codec: str = "libx264",
    bitrate: str | None = None,
) -> Path:
    """Write a test-pattern clip (with a 440 Hz tone unless ``audio`` is false) and return its path.

    ``rotation`` stores a display-rotation tag instead of rotating pixels, as phones do; ``variable_rate``
    drops frames unevenly so timestamps are irregular.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    pattern = "testsrc2" if width % 2 == 0 and height % 2 == 0 else "testsrc"  # testsrc2 rounds to even sizes
    source = f"{pattern}=size={width}x{height}:rate={fps}:duration={seconds}"
    command = [
        ffmpeg_exe(),
        "-hide_banner",
        "-loglevel",
        "error",
        "-nostdin",
        "-y",
        "-f",
        "lavfi",
        "-i",
        source,
    ]
    if audio:
        command += ["-f", "lavfi", "-i", f"sine=frequency=440:sample_rate=44100:duration={seconds}"]
    video_filter = ["-vf", "select='not(eq(mod(n\\,5)\\,1))'", "-fps_mode", "vfr"] if variable_rate else []
    quality = ["-b:v", bitrate] if bitrate else []
    pixels = ["-pix_fmt", "yuv420p"] if codec == "libx264" and width % 2 == 0 and height % 2 == 0 else []
    if codec == "libx264" and not pixels:
        pixels = ["-pix_fmt", "yuv444p"]  # yuv420p cannot hold odd sizes; real phones never send them either
    command += [*video_filter, "-c:v", codec, *pixels, *quality]
    command += ["-c:a", "aac", "-shortest"] if audio else []
    target = path if not rotation else path.with_name(path.stem + ".unrotated" + path.suffix)
    process_tree.run([*command, str(target)])  # ffmpeg ends with this process, never left behind
    if rotation:
        process_tree.run(
            [ffmpeg_exe(), "-hide_banner", "-loglevel", "error", "-nostdin", "-y",
             "-display_rotation", str(rotation), "-i", str(target), "-c", "copy", str(path)],
        )  # fmt: skip
        target.unlink()
    return path
