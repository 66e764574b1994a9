"""Shared fixtures: generated clips (made once per session with FFmpeg test sources), an isolated data
directory so no test writes into the project's var/, and a Postgres database of this session's own."""

from collections.abc import Iterator
from pathlib import Path

import pytest

from benchmarks.support.postgres import temporary_database


@pytest.fixture(scope="session")
def clips(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Small clips covering what real uploads bring: audio or not, odd sizes, phone rotation, VFR."""
    from pipelines.video.samples import make_clip  # imported here so tests of offload/ need no pipelines

    root = tmp_path_factory.mktemp("clips")
    return {
        "plain": make_clip(root / "plain.mp4", seconds=3, width=320, height=240),
        "silent": make_clip(root / "silent.mp4", seconds=2, width=320, height=240, audio=False),
        "odd": make_clip(root / "odd.mp4", seconds=2, width=321, height=241),
        "portrait": make_clip(root / "portrait.mp4", seconds=2, width=240, height=320),
        "rotated": make_clip(root / "rotated.mp4", seconds=2, width=320, height=240, rotation=90),
        "vfr": make_clip(root / "vfr.mp4", seconds=3, width=320, height=240, variable_rate=True),
    }


@pytest.fixture
def data_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Point OFFLOAD_DATA_DIR (work files, storage, outbox) at a fresh directory."""
    root = tmp_path / "data"
    monkeypatch.setenv("OFFLOAD_DATA_DIR", str(root))
    return root


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    """A database on the local PostgreSQL, created for this session and dropped after it."""
    with temporary_database() as url:
        yield url
