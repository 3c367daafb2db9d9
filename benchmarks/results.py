"""Everything one run measured, keyed by workload, system and store size.

Workloads fill it; the report, the plot and the target checks only read it,
so a workload that failed or was skipped simply leaves holes that the report
shows as "-" (with the reason in the skipped/failed lists).
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

from .workloads import Sample

#: size key for figures that do not depend on the store size (e.g. the zmq echo)
ANY_SIZE = 0


@dataclasses.dataclass
class Results:
    data: dict[str, dict[str, dict[int, Any]]] = dataclasses.field(default_factory=dict)
    skipped: list[str] = dataclasses.field(default_factory=list)
    failed: list[str] = dataclasses.field(default_factory=list)
    notes: list[str] = dataclasses.field(default_factory=list)
    machine: dict[str, Any] = dataclasses.field(default_factory=dict)
    settings: dict[str, Any] = dataclasses.field(default_factory=dict)
    seconds: float = 0.0
    #: step name -> seconds it took (for the 1M estimate and to see where time goes)
    timings: dict[str, float] = dataclasses.field(default_factory=dict)

    def put(self, workload: str, system: str, size: int, value: Any) -> None:
        self.data.setdefault(workload, {}).setdefault(system, {})[size] = value

    def get(self, workload: str, system: str, size: int = ANY_SIZE) -> Any:
        return self.data.get(workload, {}).get(system, {}).get(size)

    def sample(self, workload: str, system: str, size: int = ANY_SIZE) -> Sample | None:
        value = self.get(workload, system, size)
        return value if isinstance(value, Sample) else None

    def systems(self, workload: str) -> list[str]:
        return list(self.data.get(workload, {}))

    def sizes(self, workload: str) -> list[int]:
        found = {s for per in self.data.get(workload, {}).values() for s in per}
        return sorted(found)

    def skip(self, line: str) -> None:
        if line not in self.skipped:
            self.skipped.append(line)
            print(line, flush=True)

    def fail(self, line: str) -> None:
        """Record a failure as one line (the full traceback goes to stderr)."""
        line = " ".join(line.split())
        self.failed.append(line)
        print(f"FAILED: {line}", flush=True)

    def note(self, line: str) -> None:
        if line not in self.notes:
            self.notes.append(line)

    def to_json(self) -> dict[str, Any]:
        def conv(v: Any) -> Any:
            if isinstance(v, Sample):
                return dataclasses.asdict(v)
            if isinstance(v, dict):
                return {str(k): conv(x) for k, x in v.items()}
            return v
        return {"machine": self.machine, "settings": self.settings, "seconds": self.seconds,
                "timings": self.timings,
                "data": conv(self.data), "skipped": self.skipped, "failed": self.failed,
                "notes": self.notes}

    def save(self, path: Path) -> None:
        path.write_text(json.dumps(self.to_json(), indent=1, ensure_ascii=False,
                                   default=str) + "\n", encoding="utf-8")
