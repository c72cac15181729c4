"""When a models.config someone else wrote may be taken for the truth.

A file rewritten in place is empty, then partly written, for as long as its writer takes; a
single read may catch it half-way, and an empty file parses as a valid empty config. So a
content the daemon did not write (nor saw in sync) is acted on only once it has read the same
for `quiet` seconds: two reads at least that far apart.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class Settle:
    quiet: float
    _seen: object = None
    _since: float = 0.0
    _waiting: bool = False

    def wait(self, content: object, now: float) -> float:
        """Seconds until `content` (what a read of the file gave: a parsed config, or why it
        does not parse) may be acted on; 0 when it has read the same for `quiet` seconds."""
        if not self._waiting or content != self._seen:
            self._seen, self._since, self._waiting = content, now, True
        return max(0.0, self._since + self.quiet - now)

    def known(self) -> None:
        """The file holds what the daemon knows (it wrote it, or saw it in sync)."""
        self._seen, self._waiting = None, False
