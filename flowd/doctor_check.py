"""One doctor finding; shared by the doctor's check modules."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class Check:
    """One doctor finding: ``status`` is ok, warn or fail; ``hint`` says what to do."""

    name: str
    status: str
    message: str
    hint: str = ""
    details: list[str] = field(default_factory=list)
