"""What a suite's run leaves even when the device call's time limit kills it: a JSON file written as each figure
arrives, log lines with the time, and a wall-clock budget that skips the sections which would not fit."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


class Results:
    """A dict written to ``path`` whenever a figure is set, so a killed run keeps what it measured."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.data: dict[str, Any] = {"started_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
        self.path.parent.mkdir(parents=True, exist_ok=True)

    def __setitem__(self, key: str, value: Any) -> None:
        self.data[key] = value
        self.flush()
        print(f"[result] {key}: {json.dumps(value, default=str)[:1500]}", flush=True)

    def __getitem__(self, key: str) -> Any:
        return self.data[key]

    def get(self, key: str, default: Any = None) -> Any:
        return self.data.get(key, default)

    def flush(self) -> None:
        self.path.write_text(json.dumps(self.data, indent=1, default=str))


class Deadline:
    """The command's wall-clock budget: sections that would not fit are skipped, and say so."""

    def __init__(self, seconds: float):
        self.start = time.monotonic()
        self.seconds = seconds

    def left(self) -> float:
        return self.seconds - (time.monotonic() - self.start)

    def allows(self, needed_s: float) -> bool:
        return self.left() > needed_s
