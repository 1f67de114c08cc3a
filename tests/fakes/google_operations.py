"""The Google stand-in with deletes and long-running operations (what no server here has).

Follows the guide's "Supprimer une étude, une série ou une instance" section and the shared notes:

- ``DELETE .../studies/{s}`` and ``.../series/{se}`` answer ``{"name": "projects/P/locations/L/
  datasets/D/operations/ID"}``; the instances go when the operation finishes successfully;
- ``GET /v1/{name}`` answers the operation: ``done`` absent until it finishes, then ``done: true``
  with ``response`` (``google.protobuf.Empty``) or ``error`` (``code``, ``message``), and
  ``metadata`` (``apiMethodName``, ``createTime``, ``endTime``, ``logsUrl``);
- ``DELETE .../instances/{i}`` removes it at once and answers ``{}``;
- a missing resource answers 403, as Google does;
- QIDO by UID at each level with Number of Study/Series Related Instances.

How operations behave is set on the server: ``done_after_polls`` or ``done_after_seconds``,
``error`` (code, message) to end in error, ``never_done``. ``inject(method, path_part, *statuses)``
makes the next matching requests answer those statuses (429 with ``Retry-After: 0``, 503, ...).
"""

from __future__ import annotations

import datetime
import itertools
import re
import socket
import threading
import time
from dataclasses import dataclass, field
from typing import Any, cast
from urllib.parse import parse_qs

from google_standin import GoogleStandin, Key, _BadRequest, _Handler

_UID_TAGS = ("0020000D", "0020000E", "00080018")
_METHODS = {2: "DeleteStudy", 3: "DeleteSeries"}


@dataclass
class Operation:
    name: str
    prefix: tuple[str, ...]  # (study,) or (study, series)
    created: float
    created_utc: str
    polls: int = 0
    finished: bool = False


@dataclass
class _Injection:
    method: str
    path_part: str
    statuses: list[int] = field(default_factory=list)


class _OpsHandler(_Handler):
    def setup(self) -> None:
        super().setup()
        # Headers and body go out in two writes: without this, Nagle + delayed ACK add ~40 ms.
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def _route(self, standin: Any, path: str, query: str, body: bytes) -> None:
        ops = cast(GoogleOperationsStandin, standin)
        status = ops._injected(self.command, path)
        if status is not None:
            self.send_response(status)
            self.send_header("Retry-After", "0")
            payload = b'{"error": {"code": %d, "message": "injected"}}' % status
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)
            return
        if path.startswith("/v1/") and ops.expected_token is not None:
            if self.headers.get("Authorization") != f"Bearer {ops.expected_token}":
                raise _BadRequest(401, "Request had invalid authentication credentials.")
        if self.command == "GET" and path.startswith(ops.operations_path + "/"):
            self.send_json(200, ops._poll(path[len("/v1/") :]))
            return
        rest = path[len(ops.dicomweb_path) :] if path.startswith(ops.dicomweb_path) else None
        params = parse_qs(query)
        uids = _path_uids(rest) if rest is not None else None
        if self.command == "DELETE" and uids:
            self._delete(ops, uids)
        elif self.command == "GET" and rest is not None and _is_search(rest, params):
            self.send_json(200, ops._search(rest, params), "application/dicom+json")
        else:
            super()._route(standin, path, query, body)

    def _delete(self, ops: GoogleOperationsStandin, uids: tuple[str, ...]) -> None:
        if not ops._holds(uids):
            raise _BadRequest(403, "resource not found or permission denied")
        if len(uids) == 3:
            ops._remove(uids)
            self.send_json(200, {})
            return
        self.send_json(200, {"name": ops._start(uids)})


def _path_uids(rest: str) -> tuple[str, ...] | None:
    m = re.fullmatch(r"/studies/([^/]+)(?:/series/([^/]+)(?:/instances/([^/]+))?)?/?", rest)
    return tuple(g for g in m.groups() if g is not None) if m else None


def _is_search(rest: str, params: dict[str, list[str]]) -> bool:
    return bool(
        re.fullmatch(r"/studies/?", rest)
        and "StudyInstanceUID" in params
        or re.fullmatch(r"/studies/[^/]+/series/?", rest)
        or re.fullmatch(r"/studies/[^/]+/series/[^/]+/instances/?", rest)
    )


def _utc(epoch: float) -> str:
    when = datetime.datetime.fromtimestamp(epoch, datetime.timezone.utc)
    return when.isoformat(timespec="seconds").replace("+00:00", "Z")


class GoogleOperationsStandin(GoogleStandin):
    """GoogleStandin plus deletes, operations, QIDO by UID and injected failures.

    Args:
      done_after_polls: an operation is done at its N-th poll (when ``done_after_seconds`` is
        None).
      done_after_seconds: an operation is done this long after its DELETE, however often polled.
      error: (code, message) every finished operation ends in, instead of success.
      never_done: operations never finish.
    """

    handler_class = _OpsHandler

    def __init__(
        self,
        *,
        done_after_polls: int = 2,
        done_after_seconds: float | None = None,
        error: tuple[int, str] | None = None,
        never_done: bool = False,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.done_after_polls = done_after_polls
        self.done_after_seconds = done_after_seconds
        self.error = error
        self.never_done = never_done
        self.operations: dict[str, Operation] = {}
        self._ids = itertools.count(1)
        self._injections: list[_Injection] = []
        self._ops_lock = threading.Lock()
        self.operations_path = self.dicomweb_path.split("/dicomStores/")[0] + "/operations"
        self.max_running = 0  # most operations unfinished at once (what --max_operations bounds)

    def inject(self, method: str, path_part: str, *statuses: int) -> None:
        """The next requests of ``method`` whose path contains ``path_part`` get ``statuses``."""
        with self._ops_lock:
            self._injections.append(_Injection(method, path_part, list(statuses)))

    def running(self) -> int:
        with self._ops_lock:
            return sum(not op.finished for op in self.operations.values())

    def _injected(self, method: str, path: str) -> int | None:
        with self._ops_lock:
            for injection in self._injections:
                if injection.method == method and injection.path_part in path:
                    if injection.statuses:
                        return injection.statuses.pop(0)
        return None

    def _keys(self, prefix: tuple[str, ...]) -> list[Key]:
        with self._lock:
            return [k for k in self.instances if k[: len(prefix)] == prefix]

    def _holds(self, uids: tuple[str, ...]) -> bool:
        # A study being deleted is still there until its operation finishes.
        return bool(self._keys(uids))

    def _remove(self, prefix: tuple[str, ...]) -> None:
        with self._lock:
            for key in [k for k in self.instances if k[: len(prefix)] == prefix]:
                del self.instances[key]

    def _start(self, uids: tuple[str, ...]) -> str:
        name = self.operations_path[len("/v1/") :] + f"/{next(self._ids)}"
        now = time.time()
        with self._ops_lock:
            self.operations[name] = Operation(name, uids, time.monotonic(), _utc(now))
            self.max_running = max(
                self.max_running, sum(not op.finished for op in self.operations.values())
            )
        return name

    def _poll(self, name: str) -> dict[str, Any]:
        with self._ops_lock:
            op = self.operations.get(name)
            if op is None:
                raise _BadRequest(404, f"operation {name} not found")
            op.polls += 1
            if self.never_done:
                done = False
            elif self.done_after_seconds is not None:
                done = time.monotonic() - op.created >= self.done_after_seconds
            else:
                done = op.polls >= self.done_after_polls
            first_finish = done and not op.finished
            op.finished = op.finished or done
        if first_finish and self.error is None:
            self._remove(op.prefix)
        answer: dict[str, Any] = {
            "name": name,
            "metadata": {
                "@type": "type.googleapis.com/google.cloud.healthcare.v1.OperationMetadata",
                "apiMethodName": "google.cloud.healthcare.v1.dicomweb.DicomWebService."
                + _METHODS[len(op.prefix) + 1],
                "createTime": op.created_utc,
                "logsUrl": "https://console.cloud.google.com/logs",
            },
        }
        if not done:
            return answer
        answer["done"] = True
        answer["metadata"]["endTime"] = _utc(time.time())
        if self.error is not None:
            answer["error"] = {"code": self.error[0], "message": self.error[1]}
        else:
            answer["response"] = {"@type": "type.googleapis.com/google.protobuf.Empty"}
        return answer

    def _search(self, rest: str, params: dict[str, list[str]]) -> list[dict[str, Any]]:
        """QIDO by UID at the level the path names, with the related-instance counts."""
        path = [p for p in rest.strip("/").split("/") if p]
        scope = tuple(path[1::2])  # UIDs in the path: (), (study,), (study, series)
        level = len(scope)  # 0: study search, 1: series, 2: instances
        keys = self._keys(scope)
        wanted = params.get(("StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID")[level])
        groups: dict[tuple[str, ...], int] = {}
        for key in keys:
            head = key[: level + 1]
            if wanted and head[-1] != wanted[0]:
                continue
            groups[head] = groups.get(head, 0) + 1
        rows = []
        for head, count in sorted(groups.items()):
            row: dict[str, Any] = {
                tag: {"vr": "UI", "Value": [uid]} for tag, uid in zip(_UID_TAGS, head, strict=False)
            }
            if level < 2:
                row["00201208" if level == 0 else "00201209"] = {"vr": "IS", "Value": [count]}
            rows.append(row)
        try:
            offset = int(params.get("offset", ["0"])[0])
            limit = int(params.get("limit", ["1000"])[0])
        except ValueError as exc:
            raise _BadRequest(400, "limit and offset must be integers") from exc
        return rows[offset : offset + limit]
