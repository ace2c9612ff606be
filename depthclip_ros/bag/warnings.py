"""The warnings of one bag's processing, one entry per kind: the same words with other numbers
(`/tf ... not at 12.033 s`, `scale 7.1 outside`, `anchors in 3 feature cells`) are one kind,
told once with its count and its first and last log times, however long the bag."""

from __future__ import annotations

import re
import threading

# A number in a warning's words: what differs between frames of one kind.
_NUMBER = re.compile(r"[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?")


class BagWarnings:
    def __init__(self):
        self._kinds = {}  # kind -> [first words, count, first log time, last log time]
        self._lock = threading.Lock()  # reading and finishing frames add from their threads

    def add(self, words: str, log_time: int) -> None:
        kind = _NUMBER.sub("#", words)
        with self._lock:
            entry = self._kinds.get(kind)
            if entry is None:
                self._kinds[kind] = [words, 1, log_time, log_time]
            else:
                entry[1] += 1
                entry[3] = max(entry[3], log_time)

    def summary(self) -> list:
        """[{'warning': its first words, 'count', 'first', 'last' (log times, ns)}], in the
        order each kind was first met: plain data (it travels back through Ray)."""
        return [
            dict(warning=words, count=count, first=first, last=last)
            for words, count, first, last in self._kinds.values()
        ]


def warning_line(entry: dict) -> str:
    """One kind of warning as the bag tool prints it."""
    if entry["count"] == 1:
        return f"warning: {entry['warning']} (at log time {entry['first']} ns)"
    return (
        f"warning: {entry['warning']} ({entry['count']} times, log times {entry['first']} to "
        f"{entry['last']} ns)"
    )
