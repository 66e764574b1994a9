"""Run the main job end to end on the embedded default, offline.

Makes a 10 s sample clip with FFmpeg's test sources, writes its payload, runs ``video_pipeline`` through
``dagster job execute`` exactly as a user would, and prints where the outputs and the email landed.
"""

from __future__ import annotations

import subprocess
import sys

import yaml

from offload import paths
from offload.cli import dagster_executable, ensure_instance
from pipelines.video.samples import make_clip


def main() -> int:
    ensure_instance()
    clip = paths.samples_dir() / "sample.mp4"
    if not clip.exists():
        make_clip(clip, seconds=10, width=640, height=360)
    payload = {
        "video_id": "sample",
        "video_url": clip.as_uri(),
        "user_id": "demo-user",
        "user_email": "demo@example.com",
        "formats": ["mp4", "webm", "gif"],
    }
    payload_file = paths.samples_dir() / "video_pipeline.yaml"
    payload_file.write_text(yaml.safe_dump(payload, sort_keys=False))
    print(f"payload: {payload_file}")
    command = [dagster_executable(), "job", "execute", "-f", "definitions.py",
               "-j", "video_pipeline", "-c", str(payload_file)]  # fmt: skip
    finished = subprocess.run(command, cwd=paths.PROJECT_ROOT)
    if finished.returncode != 0:
        print("video_pipeline failed; see the log above", file=sys.stderr)
        return finished.returncode
    outputs = sorted(p for p in paths.storage_dir().rglob("*") if p.is_file() and "sample" in p.name)
    emails = sorted(paths.outbox_dir().glob("*.eml"), key=lambda p: p.stat().st_mtime)
    print("\nvideo_pipeline succeeded")
    print(f"outputs ({paths.storage_dir()}):")
    for path in outputs:
        print(f"  {path}  ({path.stat().st_size:,} bytes)")
    if emails:
        print(f"email to the user: {emails[-1]}")
    print(f"runs are kept in {paths.dagster_home()}; browse them with: .venv/bin/offload dev")
    return 0


if __name__ == "__main__":
    sys.exit(main())
