"""`http.get_checked` on its own, against a fake session that records every request: each hop
is vetted before it is asked for, redirects are followed here (never by requests), with the
caller's timeout, up to `MAX_REDIRECTS` hops; and `download._cache_write`'s message for a disk
that fails while a download is written."""

from __future__ import annotations

import errno

import pytest
from conftest import one_file_spec
from requests.structures import CaseInsensitiveDict

from dlwp_models.weights import download, http, store


class Answer:
    def __init__(self, status: int, location: str | None = None) -> None:
        self.status_code = status
        self.headers = CaseInsensitiveDict({} if location is None else {"Location": location})  # as requests
        self.closed = False

    def close(self) -> None:
        self.closed = True


class Session:
    """Answers ``hops`` redirects (302 to /1, /2, ...), then 200; records each request."""

    def __init__(self, hops: int, location=lambda n: f"/{n}") -> None:
        self.hops, self.location, self.requests, self.answers = hops, location, [], []

    def get(self, url, **kwargs):
        self.requests.append((url, kwargs))
        n = len(self.requests)
        answer = Answer(302, self.location(n)) if n <= self.hops else Answer(200)
        self.answers.append(answer)
        return answer


def get(session: Session, checked: list[str]):
    return http.get_checked(
        session, "https://a.test/start", check=checked.append, headers={"Range": "bytes=5-"}, timeout=(3.0, 7.0)
    )


def test_every_hop_is_checked_then_asked_for_without_requests_following_it():
    session, checked = Session(hops=2), []
    answer = get(session, checked)
    assert answer.status_code == 200 and not answer.closed
    assert (
        checked
        == [url for url, _ in session.requests]
        == ["https://a.test/start", "https://a.test/1", "https://a.test/2"]
    )
    for _, kwargs in session.requests:
        assert kwargs == {
            "headers": {"Range": "bytes=5-"},
            "stream": True,
            "timeout": (3.0, 7.0),
            "allow_redirects": False,
        }
    assert all(a.closed for a in session.answers[:-1])  # each redirect's connection is given back


def test_a_refused_hop_is_never_requested():
    session = Session(hops=1, location=lambda n: "http://a.test/plain")

    def check(url):
        if url.startswith("http:"):
            raise http.HttpLimitError(f"refused {url}")

    with pytest.raises(http.HttpLimitError, match="refused http://a.test/plain"):
        http.get_checked(session, "https://a.test/start", check=check, timeout=(1.0, 1.0))
    assert [url for url, _ in session.requests] == ["https://a.test/start"]


def test_up_to_max_redirects_hops_are_followed_and_no_more():
    assert get(Session(hops=http.MAX_REDIRECTS), []).status_code == 200
    session = Session(hops=http.MAX_REDIRECTS + 1)
    with pytest.raises(http.HttpLimitError) as info:
        get(session, [])
    assert str(info.value) == f"more than {http.MAX_REDIRECTS} redirects"
    assert len(session.requests) == http.MAX_REDIRECTS + 1


def test_a_redirect_without_a_location_is_refused():
    with pytest.raises(http.HttpLimitError) as info:
        get(Session(hops=1, location=lambda n: None), [])
    assert str(info.value) == "HTTP 302 redirect without a Location"


def test_a_disk_failing_while_a_download_is_written_names_the_step_the_file_and_what_to_do(hub_home):
    def full():
        raise OSError(errno.ENOSPC, "No space left on device")

    with pytest.raises(store.CacheWriteError) as info:
        download._cache_write(full, one_file_spec(sha256="ab" * 32), "write the download")
    path = store.cached_path(one_file_spec(sha256="ab" * 32))
    assert str(info.value) == (
        f"could not write the download of net.pth ({path}): No space left on device; the disk holding "
        f"{path.parent} is full. Free some space there, or set TORCH_HOME to a folder on a disk with room, and "
        "run again (a download resumes where it stopped)."
    )
    assert download._cache_write(lambda: 42, one_file_spec(sha256="ab" * 32), "write the download") == 42
