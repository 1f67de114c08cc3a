"""The ideal STOW client, as a process of its own (start-up counts too).

    python benchmarks/raw_stow.py --dicomweb_url URL --threads 8 [--batch 50] 'DIR/*.dcm'

One POST per instance (``multipart/related`` with one part: Orthanc refuses single-part
``application/dicom``) to ``URL/studies``, ``--threads`` threads sharing one pooled
``requests.Session``, each thread reading its files from disk just before sending them. With
``--batch N``, each POST holds N consecutive files (by path) as N parts: what batching alone
buys from the server, with no validation, grouping or existence check. Every answer must be
200 and list exactly the instances of its POST in ReferencedSOPSequence and none failed; a POST
that fails (an error status, a connection error) is sent again, up to three times in all, as
any client that must store everything would (Orthanc answers an occasional error to eight
concurrent large POSTs).
Prints one JSON line: ``{"stored": N, "failed": M, "seconds": S}`` where ``S`` runs from the
first POST to the last answer; exits 0 only when every file was stored. Imports nothing but
``requests``, so its start-up is the smallest a Python client can have.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import glob
import json
import sys
import time
import uuid

import requests
from requests.adapters import HTTPAdapter

_REFERENCED, _FAILED = "00081199", "00081198"
_ATTEMPTS = 3


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("pattern")
    parser.add_argument("--dicomweb_url", required=True)
    parser.add_argument("--threads", type=int, default=8)
    parser.add_argument("--batch", type=int, default=1, help="instances per POST")
    args = parser.parse_args(argv)
    paths = sorted(glob.glob(args.pattern))
    session = requests.Session()
    adapter = HTTPAdapter(pool_connections=1, pool_maxsize=args.threads, max_retries=0)
    session.mount("http://", adapter)
    session.mount("https://", adapter)
    url = f"{args.dicomweb_url.rstrip('/')}/studies"

    def post(batch: list[str]) -> int:
        boundary = uuid.uuid4().hex
        opening = f"--{boundary}\r\nContent-Type: application/dicom\r\n\r\n".encode("ascii")
        pieces = []
        for path in batch:
            with open(path, "rb") as f:
                pieces += [opening, f.read(), b"\r\n"]
        pieces.append(f"--{boundary}--\r\n".encode("ascii"))
        body = b"".join(pieces)
        headers = {
            "Content-Type": f'multipart/related; type="application/dicom"; boundary={boundary}',
            "Accept": "application/dicom+json",
        }
        for attempt in range(1, _ATTEMPTS + 1):  # the same work means every instance stored
            try:
                resp = session.post(url, data=body, headers=headers, timeout=600)
            except requests.RequestException as exc:
                why = type(exc).__name__
            else:
                if resp.status_code == 200:
                    answer = resp.json()
                    listed = answer.get(_REFERENCED, {}).get("Value", [])
                    if len(listed) == len(batch) and not answer.get(_FAILED, {}).get("Value"):
                        return len(batch)
                why = f"HTTP {resp.status_code}"
            print(f"attempt {attempt}: {why}", file=sys.stderr)
        return 0

    start = time.perf_counter()
    with concurrent.futures.ThreadPoolExecutor(args.threads) as pool:
        size = max(1, args.batch)
        results = list(pool.map(post, [paths[i : i + size] for i in range(0, len(paths), size)]))
    seconds = time.perf_counter() - start
    stored = sum(results)
    print(json.dumps({"stored": stored, "failed": len(paths) - stored, "seconds": seconds}))
    return 0 if paths and stored == len(paths) else 1


if __name__ == "__main__":
    sys.exit(main())
