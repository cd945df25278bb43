"""download / safe_extract_tar / msd_task01.fetch against a local HTTP server (no internet)."""

from __future__ import annotations

import hashlib
import re
import stat
import tarfile
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from synth_core.ingest.converters import msd_task01
from synth_core.ingest.download import download, safe_extract_tar

from .converters.fixtures import make_tar, msd_files

IDS = ["BRATS_001", "BRATS_002"]


@dataclass
class ServerState:
    files: dict[str, bytes] = field(default_factory=dict)
    ignore_range: bool = False
    truncate_first: int | None = None  # the first response stops after this many body bytes
    requests: list[tuple[str, str | None]] = field(default_factory=list)  # (path, Range header)
    lock: threading.Lock = field(default_factory=threading.Lock)


class RangeHandler(BaseHTTPRequestHandler):
    """Serves ``state.files``; answers ``Range: bytes=N-`` with 206 (or 200 when ``ignore_range``)."""

    server: ThreadingHTTPServer

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - silence the test output
        pass

    def do_GET(self) -> None:  # noqa: N802 - http.server API
        state: ServerState = self.server.state  # type: ignore[attr-defined]
        rng = self.headers.get("Range")
        with state.lock:
            state.requests.append((self.path, rng))
            first = len(state.requests) == 1
        data = state.files.get(self.path)
        if data is None:
            self.send_error(404)
            return
        start, status = 0, 200
        if rng and not state.ignore_range:
            m = re.fullmatch(r"bytes=(\d+)-", rng.strip())
            if m is None:
                self.send_error(400)
                return
            start = int(m.group(1))
            if start >= len(data):
                self.send_response(416)
                self.send_header("Content-Range", f"bytes */{len(data)}")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            status = 206
        body = data[start:]
        self.send_response(status)
        self.send_header("Content-Type", "application/x-tar")
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Accept-Ranges", "bytes")
        if status == 206:
            self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        self.end_headers()
        if first and state.truncate_first is not None:
            body = body[: state.truncate_first]
        self.wfile.write(body)


@dataclass
class Server:
    url: str
    state: ServerState


@pytest.fixture
def server() -> Iterator[Server]:
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), RangeHandler)
    httpd.daemon_threads = True
    state = ServerState()
    httpd.state = state  # type: ignore[attr-defined]
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield Server(f"http://127.0.0.1:{httpd.server_address[1]}", state)
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(timeout=5)


@pytest.fixture(scope="module")
def task01_tar(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    """The real archive layout: Task01_BrainTumour/{dataset.json,imagesTr,labelsTr,imagesTs}, ``._`` files."""
    path = tmp_path_factory.mktemp("tar") / "Task01_BrainTumour.tar"
    make_tar(path, msd_files(IDS, test_ids=["BRATS_485"]), prefix="Task01_BrainTumour/")
    return path.read_bytes()


def md5(data: bytes) -> str:
    return hashlib.md5(data).hexdigest()


def leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir()) if folder.exists() else []


# ---------------------------------------------------------------------------------------------
# download
# ---------------------------------------------------------------------------------------------


def test_full_download_extract_discover(server: Server, task01_tar: bytes, tmp_path: Path) -> None:
    server.state.files["/Task01_BrainTumour.tar"] = task01_tar
    dest = tmp_path / "dl" / "Task01_BrainTumour.tar"
    out = download(server.url + "/Task01_BrainTumour.tar", dest, md5=md5(task01_tar),
                   sha256=hashlib.sha256(task01_tar).hexdigest(), chunk=4096)
    assert out == dest and dest.read_bytes() == task01_tar
    assert leftovers(dest.parent) == ["Task01_BrainTumour.tar"]
    assert server.state.requests == [("/Task01_BrainTumour.tar", None)]

    files = safe_extract_tar(dest, tmp_path / "x")
    root = tmp_path / "x" / "Task01_BrainTumour"
    assert root / "dataset.json" in files and root / "imagesTr" / "BRATS_001.nii.gz" in files
    assert leftovers(tmp_path) == ["dl", "x"]  # no staging folder left
    found = msd_task01.discover(root)
    assert [s.source_ref for s in found.subjects] == IDS and found.rejected == []

    # a second call finds the verified file and makes no request
    download(server.url + "/Task01_BrainTumour.tar", dest, md5=md5(task01_tar))
    assert len(server.state.requests) == 1
    with pytest.raises(ValueError, match="already exists with a different md5"):
        download(server.url + "/Task01_BrainTumour.tar", dest, md5="0" * 32)


def test_resume_with_range(server: Server, task01_tar: bytes, tmp_path: Path) -> None:
    server.state.files["/a.tar"] = task01_tar
    dest = tmp_path / "a.tar"
    half = len(task01_tar) // 2
    (tmp_path / "a.tar.part").write_bytes(task01_tar[:half])
    download(server.url + "/a.tar", dest, md5=md5(task01_tar), chunk=1000)
    assert server.state.requests == [("/a.tar", f"bytes={half}-")]
    assert dest.read_bytes() == task01_tar
    assert not (tmp_path / "a.tar.part").exists()


def test_server_ignoring_range_restarts(server: Server, task01_tar: bytes, tmp_path: Path) -> None:
    server.state.files["/a.tar"] = task01_tar
    server.state.ignore_range = True
    dest = tmp_path / "a.tar"
    (tmp_path / "a.tar.part").write_bytes(task01_tar[:100])
    download(server.url + "/a.tar", dest, md5=md5(task01_tar))
    assert server.state.requests == [("/a.tar", "bytes=100-")]
    assert dest.read_bytes() == task01_tar


def test_complete_part_416(server: Server, task01_tar: bytes, tmp_path: Path) -> None:
    server.state.files["/a.tar"] = task01_tar
    (tmp_path / "a.tar.part").write_bytes(task01_tar)
    download(server.url + "/a.tar", tmp_path / "a.tar", md5=md5(task01_tar))
    assert server.state.requests == [("/a.tar", f"bytes={len(task01_tar)}-")]
    assert (tmp_path / "a.tar").read_bytes() == task01_tar


def test_dropped_connection_is_resumed(server: Server, task01_tar: bytes, tmp_path: Path) -> None:
    server.state.files["/a.tar"] = task01_tar
    server.state.truncate_first = 3000
    download(server.url + "/a.tar", tmp_path / "a.tar", md5=md5(task01_tar))
    assert server.state.requests == [("/a.tar", None), ("/a.tar", "bytes=3000-")]
    assert (tmp_path / "a.tar").read_bytes() == task01_tar


def test_wrong_md5(server: Server, task01_tar: bytes, tmp_path: Path) -> None:
    server.state.files["/a.tar"] = task01_tar
    url = server.url + "/a.tar"
    with pytest.raises(ValueError, match=rf"{re.escape(url)}.*md5 mismatch: expected {'f' * 32}, received {md5(task01_tar)}"):
        download(url, tmp_path / "a.tar", md5="F" * 32)
    assert leftovers(tmp_path) == []


def test_wrong_md5_after_resume_removes_part(server: Server, task01_tar: bytes, tmp_path: Path) -> None:
    server.state.files["/a.tar"] = task01_tar
    (tmp_path / "a.tar.part").write_bytes(b"garbage!" * 10)
    with pytest.raises(ValueError, match="md5 mismatch"):
        download(server.url + "/a.tar", tmp_path / "a.tar", md5=md5(task01_tar))
    assert leftovers(tmp_path) == []


def test_max_bytes(server: Server, task01_tar: bytes, tmp_path: Path) -> None:
    server.state.files["/a.tar"] = task01_tar
    with pytest.raises(ValueError, match=rf"max_bytes exceeded: expected at most 1000 bytes, received {len(task01_tar)}"):
        download(server.url + "/a.tar", tmp_path / "a.tar", max_bytes=1000)
    assert leftovers(tmp_path) == []


@pytest.mark.parametrize("url", ["file:///etc/passwd", "ftp://example.org/x.tar", "/local/path.tar", "http://"])
def test_non_http_refused(url: str, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"url: expected an http:// or https:// URL"):
        download(url, tmp_path / "x")
    assert leftovers(tmp_path) == []


def test_bad_checksum_argument(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="md5: expected 32 hexadecimal characters, received 'xyz'"):
        download("http://127.0.0.1:9/x", tmp_path / "x", md5="xyz")


def test_http_error_is_reported(server: Server, tmp_path: Path) -> None:
    with pytest.raises(ConnectionError, match="HTTP 404"):
        download(server.url + "/missing.tar", tmp_path / "m.tar", retries=0)


# ---------------------------------------------------------------------------------------------
# safe_extract_tar
# ---------------------------------------------------------------------------------------------


def _info(name: str, kind: bytes = tarfile.REGTYPE, size: int = 0, linkname: str = "", mode: int = 0o644) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.size = size
    info.linkname = linkname
    info.mode = mode
    return info


GOOD = {"Task01_BrainTumour/dataset.json": b"{}", "Task01_BrainTumour/imagesTr/BRATS_001.nii.gz": b"abc"}


@pytest.mark.parametrize(
    ("extra", "reason"),
    [
        ([_info("../evil", size=4)], r"tar member '\.\./evil': refused: '\.\.' path component"),
        ([_info("Task01_BrainTumour/../../evil", size=4)], r"refused: '\.\.' path component"),
        ([_info("/tmp/evil", size=4)], r"tar member '/tmp/evil': refused: absolute path"),
        ([_info("Task01_BrainTumour/link", tarfile.SYMTYPE, linkname="/etc/passwd")], r"'Task01_BrainTumour/link': refused: symlink"),
        ([_info("Task01_BrainTumour/hard", tarfile.LNKTYPE, linkname="Task01_BrainTumour/dataset.json")], r"refused: hardlink"),
        ([_info("Task01_BrainTumour/dev", tarfile.CHRTYPE)], r"refused: device file"),
        ([_info("Task01_BrainTumour/blk", tarfile.BLKTYPE)], r"refused: device file"),
        ([_info("Task01_BrainTumour/fifo", tarfile.FIFOTYPE)], r"refused: FIFO"),
        ([_info("Task01_BrainTumour/dataset.json", size=2)], r"refused: duplicate member name"),
        ([_info("Task01_BrainTumour/dataset.json/x", size=2)], r"refused: its parent .* is a file member"),
    ],
)
def test_unsafe_member_refused_before_anything(tmp_path: Path, extra: list[tarfile.TarInfo], reason: str) -> None:
    archive = make_tar(tmp_path / "in" / "a.tar", GOOD, extra=extra)  # good members come first
    work = tmp_path / "work"
    work.mkdir()
    with pytest.raises(ValueError, match=reason):
        safe_extract_tar(archive, work / "out")
    assert leftovers(work) == []
    assert not (tmp_path / "evil").exists() and not Path("/tmp/evil").exists()


def test_size_cap(tmp_path: Path) -> None:
    archive = make_tar(tmp_path / "a.tar", {"a/x": b"1" * 600, "a/y": b"2" * 600})
    with pytest.raises(ValueError, match=r"tar member 'a/y': refused: total size 1200 bytes exceeds max_total_bytes=1000"):
        safe_extract_tar(archive, tmp_path / "out", max_total_bytes=1000)
    assert leftovers(tmp_path) == ["a.tar"]
    with pytest.raises(ValueError, match="more than max_members=2"):
        safe_extract_tar(archive, tmp_path / "out", max_members=2)  # a/, a/x, a/y


def test_modes_sanitized_and_gzip(tmp_path: Path) -> None:
    extra = [_info("a/suid", size=3, mode=0o4777), _info("a/plain", size=3, mode=0o666)]
    archive = make_tar(tmp_path / "a.tgz", {"a/f": b"x"}, extra=extra, mode="w:gz")
    files = safe_extract_tar(archive, tmp_path / "out")
    assert [p.relative_to(tmp_path / "out").as_posix() for p in files] == ["a/f", "a/plain", "a/suid"]
    assert stat.S_IMODE((tmp_path / "out" / "a" / "suid").stat().st_mode) == 0o755
    assert stat.S_IMODE((tmp_path / "out" / "a" / "plain").stat().st_mode) == 0o644
    assert (tmp_path / "out" / "a" / "suid").read_bytes() == b"xxx"


def test_dest_must_be_new_or_empty(tmp_path: Path) -> None:
    archive = make_tar(tmp_path / "a.tar", {"a/f": b"x"})
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "keep").write_text("mine")
    with pytest.raises(ValueError, match="dest: expected a path that does not exist or an empty folder"):
        safe_extract_tar(archive, tmp_path / "out")
    (tmp_path / "empty").mkdir()
    assert safe_extract_tar(archive, tmp_path / "empty") == [tmp_path / "empty" / "a" / "f"]


def test_truncated_archive_leaves_nothing(tmp_path: Path) -> None:
    archive = make_tar(tmp_path / "a.tar", {"a/f": b"x" * 5000, "a/g": b"y" * 5000})
    archive.write_bytes(archive.read_bytes()[:3000])
    work = tmp_path / "work"
    work.mkdir()
    with pytest.raises(ValueError, match="a.tar"):
        safe_extract_tar(archive, work / "out")
    assert leftovers(work) == []


# ---------------------------------------------------------------------------------------------
# msd_task01.fetch
# ---------------------------------------------------------------------------------------------


def test_fetch_end_to_end_and_idempotent(server: Server, task01_tar: bytes, tmp_path: Path) -> None:
    server.state.files["/Task01_BrainTumour.tar"] = task01_tar
    url = server.url + "/Task01_BrainTumour.tar"
    root = msd_task01.fetch(tmp_path / "sources", url=url, md5=md5(task01_tar), timeout=10)
    assert root == tmp_path / "sources" / "Task01_BrainTumour"
    assert leftovers(tmp_path / "sources") == ["Task01_BrainTumour"]  # archive and staging removed
    assert (root / msd_task01.FETCH_MARKER).is_file()
    found = msd_task01.discover(root)
    assert [s.source_ref for s in found.subjects] == IDS and found.rejected == []
    assert len(msd_task01.discover(root, include_test=True).subjects) == 3
    assert len(server.state.requests) == 1

    again = msd_task01.fetch(tmp_path / "sources", url=url, md5=md5(task01_tar))
    assert again == root and len(server.state.requests) == 1  # no request the second time
    with pytest.raises(ValueError, match="was extracted from an archive with md5"):
        msd_task01.fetch(tmp_path / "sources", url=url, md5="0" * 32)


def test_fetch_refuses_foreign_folder_and_bad_archive(server: Server, tmp_path: Path) -> None:
    (tmp_path / "a" / "Task01_BrainTumour").mkdir(parents=True)
    with pytest.raises(ValueError, match="has no .synthmri-fetch.json marker"):
        msd_task01.fetch(tmp_path / "a", url=server.url + "/x.tar", md5=None)
    assert server.state.requests == []

    other = make_tar(tmp_path / "other.tar", {"Task02_Heart/dataset.json": b"{}"}).read_bytes()
    server.state.files["/other.tar"] = other
    with pytest.raises(ValueError, match=r"expected a top-level folder Task01_BrainTumour/, received \['Task02_Heart'\]"):
        msd_task01.fetch(tmp_path / "b", url=server.url + "/other.tar", md5=md5(other))
    assert leftovers(tmp_path / "b") == ["other.tar"]

    evil = make_tar(tmp_path / "evil.tar", GOOD, extra=[_info("../evil", size=4)]).read_bytes()
    server.state.files["/evil.tar"] = evil
    with pytest.raises(ValueError, match=r"'\.\./evil': refused"):
        msd_task01.fetch(tmp_path / "c", url=server.url + "/evil.tar", md5=md5(evil))
    assert leftovers(tmp_path / "c") == ["evil.tar"] and not (tmp_path / "evil").exists()
