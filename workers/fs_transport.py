"""kombu's filesystem transport, made safe for several processes.

The stock transport opens the final `*.msg` file and then writes into it; a consumer polling the folder can
move and read the file before the write finished and crash on an empty payload (JSONDecodeError), which we
saw with a worker and beat on one machine. Here the payload goes to a temporary name the consumer ignores
(its suffix is not `.<queue>.msg`) and is renamed into place, which is atomic on POSIX.
"""

from __future__ import annotations

import logging
import os
import uuid
from queue import Empty
from time import monotonic
from typing import Any

from kombu.exceptions import ChannelError
from kombu.transport import filesystem
from kombu.utils.encoding import str_to_bytes
from kombu.utils.json import dumps

log = logging.getLogger(__name__)


class Channel(filesystem.Channel):
    def _put(self, queue: Any, payload: Any, **kwargs: Any) -> None:  # type: ignore[override]  # kombu passes kwargs
        name = f"{round(monotonic() * 1000)}_{uuid.uuid4()}.{queue}.msg"
        final = os.path.join(self.data_folder_out, name)
        tmp = os.path.join(self.data_folder_out, f".{name}.tmp")
        try:
            with open(tmp, "wb") as f:
                f.write(str_to_bytes(dumps(payload)))
                f.flush()
                os.fsync(f.fileno())
            os.rename(tmp, final)
        except OSError as exc:
            raise ChannelError(f"Cannot add file {final!r} to directory") from exc

    def _get(self, queue: Any, timeout: Any = None) -> Any:
        # Belt and braces: a file that is somehow unreadable is skipped and logged, never crashes the consumer.
        while True:
            try:
                return super()._get(queue)
            except ValueError as exc:
                log.error("skipping an unreadable message file in queue %s: %s", queue, exc)
            except Empty:
                raise


class Transport(filesystem.Transport):
    Channel = Channel
