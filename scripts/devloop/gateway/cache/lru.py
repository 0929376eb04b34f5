"""A true least-recently-used map of bytes, bounded by entry count and total bytes: the cache's
in-process tier."""

from __future__ import annotations

from collections import OrderedDict


class LRUCache:
    """A true least-recently-used map of bytes, bounded by entry count and total value bytes.

    A read moves the entry to the most-recent end; inserting evicts from the least-recent end
    until both bounds hold. A value larger than max_bytes is not stored at all.
    """

    def __init__(self, max_entries: int, max_bytes: int) -> None:
        self.max_entries = max_entries
        self.max_bytes = max_bytes
        self._data: OrderedDict[str, bytes] = OrderedDict()
        self.bytes = 0
        self.evictions = 0

    def __len__(self) -> int:
        return len(self._data)

    def __contains__(self, key: str) -> bool:
        return key in self._data

    def keys(self) -> list[str]:
        """Keys from least to most recently used."""
        return list(self._data)

    def peek(self, key: str) -> bytes | None:
        """The value without counting as a use."""
        return self._data.get(key)

    def get(self, key: str) -> bytes | None:
        value = self._data.get(key)
        if value is not None:
            self._data.move_to_end(key)
        return value

    def set(self, key: str, value: bytes) -> bool:
        """Store `value`; False when it cannot fit at all."""
        if self.max_entries <= 0 or len(value) > self.max_bytes:
            self.delete(key)
            return False
        old = self._data.pop(key, None)
        if old is not None:
            self.bytes -= len(old)
        self._data[key] = value
        self.bytes += len(value)
        while len(self._data) > self.max_entries or self.bytes > self.max_bytes:
            _, evicted = self._data.popitem(last=False)
            self.bytes -= len(evicted)
            self.evictions += 1
        return True

    def delete(self, key: str) -> None:
        old = self._data.pop(key, None)
        if old is not None:
            self.bytes -= len(old)

    def clear(self) -> None:
        self._data.clear()
        self.bytes = 0
