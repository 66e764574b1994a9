"""Run the main job end to end on the embedded default, offline.

Makes a 10 s sample clip with FFmpeg's test sources, writes its payload, runs ``video_pipeline`` through
``dagster job execute`` exactly as a user would, and prints where the outputs and the email landed. Of the
run's console output it shows the steps' own lines (``offload.console``); the whole output, Dagster's DEBUG
events and warnings included, is kept in ``var/samples/demo.log`` and the run's event log.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import yaml

from offload import paths
from offload.cli import dagster_executable, ensure_instance
from offload.console import ConsoleFilter
from offload.labels import label_tags
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
    log_file = paths.samples_dir() / "demo.log"
    returncode = execute("video_pipeline", payload_file, log_file)
    if returncode != 0:
        print(
            f"video_pipeline failed; see the lines above, and the whole output in {log_file}", file=sys.stderr
        )
        return returncode
    outputs = sorted(p for p in paths.storage_dir().rglob("*") if p.is_file() and "sample" in p.name)
    emails = sorted(paths.outbox_dir().glob("*.eml"), key=lambda p: p.stat().st_mtime)
    print("\nvideo_pipeline succeeded")
    print(f"outputs ({paths.storage_dir()}):")
    for path in outputs:
        print(f"  {path}  ({path.stat().st_size:,} bytes)")
    if emails:
        print(f"email to the user: {emails[-1]}")
    print(f"the run's whole console output (Dagster's DEBUG events too): {log_file}")
    print(f"runs are kept in {paths.dagster_home()}; browse them with: .venv/bin/offload dev")
    return 0


def execute(job: str, payload_file: Path, log_file: Path) -> int:
    """``dagster job execute`` of ``job``: its whole output to ``log_file``, its steps' lines to stdout.
    The run carries the payload's ids as tags, as a run the client triggers does (``offload.labels``)."""
    labels = json.dumps(label_tags(yaml.safe_load(payload_file.read_text()) or {}))
    command = [dagster_executable(), "job", "execute", "-f", "definitions.py", "-j", job,
               "-c", str(payload_file), "--tags", labels]  # fmt: skip
    shown = ConsoleFilter()
    with (
        log_file.open("w", encoding="utf-8") as log,
        subprocess.Popen(
            command, cwd=paths.PROJECT_ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
        ) as process,
    ):
        assert process.stdout is not None
        for line in process.stdout:
            log.write(line)
            text = shown.line(line)
            if text is not None:
                print(text, flush=True)
    return process.returncode


if __name__ == "__main__":
    sys.exit(main())
