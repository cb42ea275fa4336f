"""LoRA adapter slots: at most ``max_loras`` adapters resident (and so in one batch), least
recently used evicted first, but never one that a running request still uses."""

from __future__ import annotations

from collections import Counter, OrderedDict


class AdapterSlots:
    def __init__(self, max_loras: int) -> None:
        self.max_loras = max_loras
        self._resident: OrderedDict[str, None] = OrderedDict()
        self.running: Counter[str] = Counter()  # adapter -> running requests using it
        self.loads = 0

    @property
    def resident(self) -> list[str]:
        return list(self._resident)

    def _evictable(self) -> str | None:
        return next((name for name in self._resident if self.running[name] == 0), None)

    def can_admit(self, name: str) -> bool:
        return (
            name in self._resident
            or len(self._resident) < self.max_loras
            or self._evictable() is not None
        )

    def admit(self, name: str) -> bool:
        """Mark one more running request on ``name``; True when the adapter had to be loaded."""
        loaded = name not in self._resident
        if loaded:
            if len(self._resident) >= self.max_loras:
                victim = self._evictable()
                if victim is None:
                    raise RuntimeError("admit() without can_admit()")
                del self._resident[victim]
            self.loads += 1
        self._resident[name] = None
        self._resident.move_to_end(name)
        self.running[name] += 1
        return loaded

    def release(self, name: str) -> None:
        self.running[name] -= 1
        if self.running[name] <= 0:
            del self.running[name]
