"""Unit tests for transforms/endpoint.py: base URL validation and the URLs built from it."""

from __future__ import annotations

import pytest

from transforms.dicomweb.endpoint import GOOGLE_API_ROOT, DicomwebEndpoint

GOOGLE_PATH = "projects/p-1/locations/us-central1/datasets/ds.1/dicomStores/store_1/dicomWeb"


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ("http://127.0.0.1:8042/dicom-web", "http://127.0.0.1:8042/dicom-web"),
        ("http://127.0.0.1:8042/dicom-web/", "http://127.0.0.1:8042/dicom-web"),
        ("https://pacs.example.org/dicomweb///", "https://pacs.example.org/dicomweb"),
        ("http://host", "http://host"),
        ("http://host/", "http://host"),
    ],
)
def test_base_url_loses_its_trailing_slashes(given: str, expected: str) -> None:
    endpoint = DicomwebEndpoint(given)
    assert endpoint.base_url == expected
    assert str(endpoint) == expected
    assert endpoint.studies_url() == expected + "/studies"


def test_equal_endpoints_after_normalisation() -> None:
    assert DicomwebEndpoint("http://h/x/") == DicomwebEndpoint("http://h/x")
    assert hash(DicomwebEndpoint("http://h/x/")) == hash(DicomwebEndpoint("http://h/x"))


@pytest.mark.parametrize(
    "url",
    [
        "http://user:secret@host/dicom-web",
        "https://user@host/dicom-web",
        "http://:secret@host/dicom-web",
    ],
)
def test_credentials_in_url_are_refused_without_echoing_them(url: str) -> None:
    with pytest.raises(ValueError, match="credentials") as info:
        DicomwebEndpoint(url)
    assert "secret" not in str(info.value)


@pytest.mark.parametrize(
    "url",
    [
        "http://host/dicom-web?access_token=secret",
        "http://host/dicom-web/?a=b",
        "http://host/dicom-web#secret",
    ],
)
def test_query_and_fragment_are_refused(url: str) -> None:
    with pytest.raises(ValueError, match="query or a fragment") as info:
        DicomwebEndpoint(url)
    assert "secret" not in str(info.value)


@pytest.mark.parametrize(
    "url",
    [
        "ftp://host/dicom-web",
        "file:///tmp/dicom",
        "gs://bucket/dicom",
        "host/dicom-web",
        "http:///dicom-web",
        "",
    ],
)
def test_non_http_urls_are_refused(url: str) -> None:
    with pytest.raises(ValueError, match=r"http\(s\)://host"):
        DicomwebEndpoint(url)


def test_refusal_of_a_bad_scheme_does_not_echo_credentials() -> None:
    with pytest.raises(ValueError) as info:
        DicomwebEndpoint("ftp://user:secret@host/x?token=hidden")
    assert "secret" not in str(info.value)
    assert "hidden" not in str(info.value)
    assert "ftp://host/x" in str(info.value)


def test_google_store_url_from_its_ids() -> None:
    endpoint = DicomwebEndpoint.for_google_store("p-1", "us-central1", "ds.1", "store_1")
    assert endpoint.base_url == f"{GOOGLE_API_ROOT}/{GOOGLE_PATH}"
    assert endpoint.base_url.startswith("https://healthcare.googleapis.com/v1/projects/")
    assert endpoint.is_google
    assert endpoint.google_store_path == GOOGLE_PATH


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("project", ""),
        ("project", "my/project"),
        ("location", "us central1"),
        ("dataset", "d?x=1"),
        ("dicom_store", "s#frag"),
        ("dicom_store", "store/../../other"),
        ("dataset", "dätaset"),
    ],
)
def test_invalid_google_ids_are_refused(field: str, value: str) -> None:
    ids = {"project": "p", "location": "l", "dataset": "d", "dicom_store": "s"}
    ids[field] = value
    with pytest.raises(ValueError, match=f"invalid Google {field}"):
        DicomwebEndpoint.for_google_store(**ids)


def test_google_id_with_trailing_newline_is_refused() -> None:
    with pytest.raises(ValueError, match="invalid Google project"):
        DicomwebEndpoint.for_google_store("p\n", "l", "d", "s")


@pytest.mark.parametrize(
    ("url", "is_google"),
    [
        ("https://healthcare.googleapis.com/v1/" + GOOGLE_PATH, True),
        ("https://HEALTHCARE.googleapis.com/v1/" + GOOGLE_PATH, True),
        ("http://127.0.0.1:8042/dicom-web", False),
        ("http://127.0.0.1:9/v1/" + GOOGLE_PATH, False),
        ("https://googleapis.com/v1/" + GOOGLE_PATH, False),
        ("https://healthcare.googleapis.com.evil.example/v1/" + GOOGLE_PATH, False),
    ],
)
def test_is_google_looks_at_the_host(url: str, is_google: bool) -> None:
    assert DicomwebEndpoint(url).is_google is is_google


@pytest.mark.parametrize(
    ("url", "path"),
    [
        ("https://healthcare.googleapis.com/v1/" + GOOGLE_PATH, GOOGLE_PATH),
        ("https://healthcare.googleapis.com/v1/" + GOOGLE_PATH + "/", GOOGLE_PATH),
        # The stand-in and proxies serve the same path elsewhere: the path alone decides.
        ("http://127.0.0.1:9/v1/" + GOOGLE_PATH, GOOGLE_PATH),
        ("http://127.0.0.1:8042/dicom-web", None),
        ("https://healthcare.googleapis.com/v1/projects/p/locations/l/datasets/d", None),
        ("https://h/v1/" + GOOGLE_PATH + "/studies", None),
        ("https://h/v1/projects/p/locations/l/datasets/d/dicomStores/s/other", None),
    ],
)
def test_google_store_path(url: str, path: str | None) -> None:
    assert DicomwebEndpoint(url).google_store_path == path


def test_url_builders() -> None:
    endpoint = DicomwebEndpoint("http://127.0.0.1:8042/dicom-web/")
    base = "http://127.0.0.1:8042/dicom-web"
    assert endpoint.studies_url() == f"{base}/studies"
    assert endpoint.study_url("1.2.3") == f"{base}/studies/1.2.3"
    assert endpoint.study_instances_url("1.2.3") == f"{base}/studies/1.2.3/instances"
    assert (
        endpoint.instance_url("1.2.3", "1.2.3.4", "1.2.3.4.5")
        == f"{base}/studies/1.2.3/series/1.2.3.4/instances/1.2.3.4.5"
    )


def test_url_builders_quote_a_uid_that_would_change_the_path() -> None:
    endpoint = DicomwebEndpoint("http://h/dicom-web")
    assert (
        endpoint.study_url("1.2/../../x?y#z")
        == "http://h/dicom-web/studies/1.2%2F..%2F..%2Fx%3Fy%23z"
    )
    url = endpoint.instance_url("1 2", "3/4", "5")
    assert url == "http://h/dicom-web/studies/1%202/series/3%2F4/instances/5"


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        (
            "https://user:secret@host.example:8443/p/q?token=abc#frag",
            "https://host.example:8443/p/q",
        ),
        ("http://host/p?access_token=abc", "http://host/p"),
        ("http://host/p", "http://host/p"),
        ("http://u@host:80/p/", "http://host:80/p/"),
    ],
)
def test_redacted_drops_user_information_query_and_fragment(url: str, expected: str) -> None:
    assert DicomwebEndpoint.redacted(url) == expected


def test_redacted_keeps_ipv6_brackets() -> None:
    assert DicomwebEndpoint.redacted("http://u:p@[::1]:8042/x?t=1") == "http://[::1]:8042/x"


@pytest.mark.parametrize("url", ["http://host/dicom-web?", "http://host/dicom-web#"])
def test_empty_query_or_fragment_marker_is_refused(url: str) -> None:
    try:
        endpoint = DicomwebEndpoint(url)
    except ValueError:
        return
    assert endpoint.studies_url() == "http://host/dicom-web/studies"


def test_control_characters_do_not_end_up_in_the_base_url() -> None:
    try:
        endpoint = DicomwebEndpoint("http://host/dicom-web\n")
    except ValueError:
        return
    assert endpoint.studies_url() == "http://host/dicom-web/studies"
