"""Workers: claim due steps, execute them concurrently, commit results in batches."""

from flowyard.worker.worker import Worker, WorkerConfig

__all__ = ["Worker", "WorkerConfig"]
