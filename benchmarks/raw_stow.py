"""The ideal single-instance STOW client, as a process of its own (start-up counts too).

    python benchmarks/raw_stow.py --dicomweb_url URL --threads 8 'DIR/*.dcm'

One POST per instance (``multipart/related`` with one part: Orthanc refuses single-part
``application/dicom``) to ``URL/studies``, ``--threads`` threads sharing one pooled
``requests.Session``, each thread reading its file from disk just before sending it. Every
answer must be 200 and list exactly one instance in ReferencedSOPSequence and none failed.
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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("pattern")
    parser.add_argument("--dicomweb_url", required=True)
    parser.add_argument("--threads", type=int, default=8)
    args = parser.parse_args(argv)
    paths = sorted(glob.glob(args.pattern))
    session = requests.Session()
    adapter = HTTPAdapter(pool_connections=1, pool_maxsize=args.threads, max_retries=0)
    session.mount("http://", adapter)
    session.mount("https://", adapter)
    url = f"{args.dicomweb_url.rstrip('/')}/studies"

    def post(path: str) -> bool:
        with open(path, "rb") as f:
            data = f.read()
        boundary = uuid.uuid4().hex
        body = b"".join(
            (
                f"--{boundary}\r\nContent-Type: application/dicom\r\n\r\n".encode("ascii"),
                data,
                f"\r\n--{boundary}--\r\n".encode("ascii"),
            )
        )
        resp = session.post(
            url,
            data=body,
            headers={
                "Content-Type": f'multipart/related; type="application/dicom"; boundary={boundary}',
                "Accept": "application/dicom+json",
            },
            timeout=600,
        )
        if resp.status_code != 200:
            return False
        answer = resp.json()
        listed = answer.get(_REFERENCED, {}).get("Value", [])
        return len(listed) == 1 and not answer.get(_FAILED, {}).get("Value")

    start = time.perf_counter()
    with concurrent.futures.ThreadPoolExecutor(args.threads) as pool:
        results = list(pool.map(post, paths))
    seconds = time.perf_counter() - start
    stored = sum(results)
    print(json.dumps({"stored": stored, "failed": len(paths) - stored, "seconds": seconds}))
    return 0 if paths and stored == len(paths) else 1


if __name__ == "__main__":
    sys.exit(main())
