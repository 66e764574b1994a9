"""The machinery that runs jobs: instance, run queue, launcher, crash-resume, durable waits."""
