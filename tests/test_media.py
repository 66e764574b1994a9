"""FFmpeg work on its own: probing real files with PyAV, and every encode decoded back to check codec,
duration and dimensions, including odd sizes, rotation tags, no audio and variable frame rate."""

from pathlib import Path

import pytest

from pipelines.video import media


@pytest.mark.parametrize(
    ("clip", "width", "height", "has_audio"),
    [("plain", 320, 240, True), ("silent", 320, 240, False), ("odd", 321, 241, True),
     ("portrait", 240, 320, True), ("rotated", 240, 320, True)],
)  # fmt: skip
def test_probe_reports_displayed_size_and_audio(clips, clip, width, height, has_audio):
    info = media.probe(clips[clip])
    assert (info.width, info.height, info.has_audio) == (width, height, has_audio)
    assert info.video_codec == "h264"
    assert abs(info.duration - (3.0 if clip == "plain" else 2.0)) < 0.1


def test_probe_reports_rotation_tag(clips):
    assert media.probe(clips["rotated"]).rotation == 90
    assert media.probe(clips["plain"]).rotation == 0


@pytest.mark.parametrize(
    "content", [b"", b"not a video at all" * 100, b"\x00\x00\x00\x18ftypmp42" + b"\x00" * 500]
)
def test_probe_refuses_what_is_not_a_video(tmp_path, content):
    path = tmp_path / "fake.mp4"
    path.write_bytes(content)
    with pytest.raises(media.NotAVideo):
        media.probe(path)


def test_probe_refuses_audio_only_file(tmp_path):
    import subprocess

    path = tmp_path / "tone.m4a"
    tone = [media.ffmpeg_exe(), "-loglevel", "error", "-f", "lavfi", "-i", "sine=duration=1", str(path)]
    subprocess.run(tone, check=True)
    with pytest.raises(media.NotAVideo, match="no video stream"):
        media.probe(path)


EXPECTED = {"mp4": ("h264", "aac"), "webm": ("vp9", "opus"), "gif": ("gif", None)}


@pytest.mark.parametrize("fmt", media.FORMATS)
@pytest.mark.parametrize("clip", ["plain", "silent", "odd", "rotated", "vfr"])
def test_encode_decodes_back_with_expected_codec_size_and_duration(clips, tmp_path, clip, fmt):
    source = clips[clip]
    info = media.probe(source)
    target = tmp_path / f"out.{fmt}"
    progress: list[float] = []
    media.run_ffmpeg(
        media.encode_args(fmt, info, source, target), media.output_seconds(fmt, info), progress.append
    )
    out = media.probe(target)
    video_codec, audio_codec = EXPECTED[fmt]
    assert out.video_codec == video_codec
    assert out.audio_codec == (audio_codec if info.has_audio else None)
    assert abs(out.duration - info.duration) <= 0.2
    if fmt == "gif":
        assert out.width <= media.GIF_MAX_WIDTH
    else:  # even sizes for yuv420p, rotation applied to pixels
        assert (out.width, out.height) == (info.width // 2 * 2, info.height // 2 * 2)
        assert out.rotation == 0
    assert progress and progress[-1] == 1.0


def test_thumbnail_is_one_jpeg_frame(clips, tmp_path):
    info = media.probe(clips["rotated"])
    target = tmp_path / "thumb.jpg"
    media.run_ffmpeg(media.thumbnail_args(info, clips["rotated"], target), 0)
    thumb = media.probe(target)
    assert thumb.video_codec == "mjpeg"
    assert (thumb.width, thumb.height) == (240, 320)
    assert target.read_bytes()[:2] == b"\xff\xd8"


def test_ffmpeg_failure_raises_with_its_error(tmp_path):
    info = media.VideoInfo(
        duration=1, width=2, height=2, fps=25, video_codec="h264", audio_codec=None, rotation=0
    )
    with pytest.raises(media.FFmpegFailed, match="ffmpeg exited with"):
        media.run_ffmpeg(media.encode_args("mp4", info, tmp_path / "missing.mp4", tmp_path / "o.mp4"), 1)


def test_unknown_format_is_refused():
    info = media.VideoInfo(
        duration=1, width=2, height=2, fps=25, video_codec="h264", audio_codec=None, rotation=0
    )
    with pytest.raises(ValueError, match="format: 'avi' must be one of mp4, webm, gif"):
        media.encode_args("avi", info, Path("a"), Path("b"))


def test_ffmpeg_writing_more_than_a_pipe_holds_to_stderr_does_not_hang():
    """stderr is drained while stdout is read: here ffmpeg logs every frame (about 170 KB, more than the
    64 KiB a pipe holds, as a corrupt upload does at error level), which used to block both processes."""
    import threading

    source = ["-f", "lavfi", "-i", "testsrc=duration=20:rate=25"]
    args = ["-loglevel", "info", "-hide_banner", "-nostdin", "-y", *source]
    args += ["-vf", "showinfo", "-f", "null", "-"]
    finished = threading.Event()

    def transcode() -> None:
        media.run_ffmpeg(args, 20.0)
        finished.set()

    worker = threading.Thread(target=transcode, daemon=True)
    worker.start()
    worker.join(timeout=60)
    assert finished.is_set()


# -- what FFmpeg may open (docs/security.md) ----------------------------------------------------------------


def _playlists(tmp_path: Path, target: str) -> dict[str, Path]:
    """Files that are playlists or lists for FFmpeg, each pointing at ``target``. The FFmpeg builds here
    refuse them already (hls and concat's own safety rules); media.py's protocol and format whitelists keep
    that so whatever the build, and these tests check the outcome: nothing fetched, nothing pulled in."""
    hls = tmp_path / "source.m3u8"
    hls.write_text(f"#EXTM3U\n#EXT-X-TARGETDURATION:2\n#EXTINF:2.0,\n{target}\n#EXT-X-ENDLIST\n")
    concat = tmp_path / "list.mp4"
    concat.write_text(f"ffconcat version 1.0\nfile '{target}'\n")
    return {"hls": hls, "concat": concat}


def test_a_playlist_never_makes_ffmpeg_fetch_what_it_lists(tmp_path):
    from benchmarks.support.http_server import LocalHTTPServer, body

    with LocalHTTPServer({"/segment.ts": body(b"\x47" * 188 * 10)}) as server:
        for name, path in _playlists(tmp_path, server.url("/segment.ts")).items():
            with pytest.raises(media.NotAVideo):
                media.probe(path)
            info = media.VideoInfo(2.0, 320, 240, 25.0, "h264", None, 0)
            with pytest.raises(media.FFmpegFailed):
                media.run_ffmpeg(media.encode_args("mp4", info, path, tmp_path / f"{name}-out.mp4"), 2.0)
        assert server.paths == []  # neither PyAV nor the ffmpeg binary connected


def test_a_playlist_never_pulls_another_local_video_in(clips, tmp_path):
    for path in _playlists(tmp_path, str(clips["plain"])).values():
        with pytest.raises(media.NotAVideo):
            media.probe(path)
        with pytest.raises(media.FFmpegFailed):
            media.run_ffmpeg(media.thumbnail_args(media.probe(clips["plain"]), path, tmp_path / "t.jpg"), 1.0)
    assert media.probe(clips["plain"]).width == 320  # the file itself still opens
