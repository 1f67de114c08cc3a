"""Retrieve an instance's stored bytes from a DICOMweb server (test helper, stdlib parsing)."""

from __future__ import annotations

import email.parser
import email.policy

import requests

ACCEPT_STORED_BYTES = 'multipart/related; type="application/dicom"; transfer-syntax=*'


def retrieve_instance_bytes(url: str) -> bytes:
    """GET an instance with transfer-syntax=* and return the single part's bytes."""
    resp = requests.get(url, headers={"Accept": ACCEPT_STORED_BYTES}, timeout=60)
    resp.raise_for_status()
    header = f"Content-Type: {resp.headers['Content-Type']}\r\n\r\n".encode()
    message = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(header + resp.content)
    parts = [p.get_payload(decode=True) for p in message.iter_parts()]
    if len(parts) != 1:
        raise AssertionError(f"expected one part, got {len(parts)}")
    return bytes(parts[0])
