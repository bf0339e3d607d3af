"""Official checkpoints by name (sam_ros.model.hub) against a local HTTP server on the
loopback address: Meta-style downloads, the mirror, the Hugging Face Hub fallback (a small
fake of the two calls huggingface_hub makes), offline mode, and every failure ending either
in a cached file that loads or in a clear error with nothing left in the cache. SAM and
MobileSAM by name too: their URLs, the MD5 digits in SAM's file names, no Hub fallback."""

import dataclasses
import errno
import hashlib
import http.server
import socket
import threading
import time
import urllib.parse

import pytest
import torch

from sam_ros.model import (
    SAM2,
    CheckpointError,
    build_model,
    build_sam2,
    get_config,
    hub,
    save_checkpoint,
)
from sam_ros.model.hub import CheckpointFetchError, OfficialCheckpoint, fetch_checkpoint
from sam_ros.tools import fetch as fetch_tool

NAME = "test_mini"  # a test-only official entry: the small bundled architecture, random weights
COMMIT = "0123456789abcdef0123456789abcdef01234567"


def random_checkpoint(variant, path, seed=0):
    torch.manual_seed(seed)
    model = SAM2(get_config(variant))
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0, 0.02)
    save_checkpoint(model, path)
    return path.read_bytes()


@pytest.fixture(scope="module")
def mini_bytes(tmp_path_factory):
    data = random_checkpoint("sam_ros_mini", tmp_path_factory.mktemp("ckpt") / "mini.pt")
    assert len(data) > 3 * (1 << 20)  # several download chunks
    return data


@pytest.fixture(scope="module")
def mobile_sam_bytes(tmp_path_factory):
    """A MobileSAM checkpoint in the official layout (a bare state dict), random weights:
    41 MB like the real one."""
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("ckpt") / "mobile_sam.pt"
    save_checkpoint(build_model("mobile_sam"), path)
    return path.read_bytes()


class LoopbackServer(http.server.ThreadingHTTPServer):
    """Answers each path with a configured behaviour and records every request."""

    daemon_threads = True

    def __init__(self):
        super().__init__(("127.0.0.1", 0), Handler)
        self.routes = {}
        self.requests = []
        self.ranges = []  # the Range header of each GET (None: the whole file)
        self.stop = threading.Event()
        self.url = f"http://127.0.0.1:{self.server_address[1]}"

    def paths(self, method="GET"):
        return [path for m, path in self.requests if m == method]


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def do_HEAD(self):
        self.answer()

    def do_GET(self):
        self.answer()

    def answer(self):
        self.server.requests.append((self.command, self.path))
        if self.command == "GET":
            self.server.ranges.append(self.headers.get("Range"))
        route = self.server.routes.get(self.path)
        try:
            if route is None:
                self.status(404)
            else:
                route(self)
        except (BrokenPipeError, ConnectionResetError):
            pass

    def status(self, code, headers=()):
        self.send_response(code)
        for key, value in headers:
            self.send_header(key, value)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def body(self, data, content_type="application/octet-stream", headers=(), until=None,
             ranges=True):
        """Headers for ``data`` (honouring a Range unless ``ranges`` is false), then its bytes
        up to offset ``until`` of the file (the end)."""
        start = 0
        if ranges and self.headers.get("Range", "").startswith("bytes="):
            start = int(self.headers["Range"][6:].split("-")[0])
        self.send_response(206 if start else 200)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(data) - start))
        if start:
            self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        for key, value in headers:
            self.send_header(key, value)
        self.end_headers()
        if self.command == "GET":
            self.wfile.write(data[start:until])
            self.wfile.flush()


def serve(data, **kwargs):
    return lambda h: h.body(data, **kwargs)


def cut_at(data, *offsets, times=None, headers=()):
    """Promise all of ``data`` (or the rest a Range asks for) and close the connection at
    byte ``offsets[i]`` of the file on the i-th GET (the last offset for later GETs; the
    first ``times`` GETs only, if given)."""
    gets = [0]

    def route(h):
        gets[0] += h.command == "GET"
        if h.command == "GET" and (times is None or gets[0] <= times):
            h.body(data, headers=headers, until=offsets[min(gets[0], len(offsets)) - 1])
            h.close_connection = True
            h.connection.shutdown(socket.SHUT_RDWR)
        else:
            h.body(data, headers=headers)
    return route


def stall_after(data, offset, seconds=30):
    """Send ``data`` up to byte ``offset`` of the file, then nothing for ``seconds``."""
    def route(h):
        h.body(data, until=offset)
        h.server.stop.wait(seconds)
    return route


def hub_headers(sha):
    """What huggingface_hub needs of /{repo}/resolve/main/{file} besides the size: the
    commit it resolved to, and an ETag (the file's SHA-256 for large files)."""
    return (("X-Repo-Commit", COMMIT), ("ETag", f'"{sha}"'))


def hub_file(data, sha):
    return lambda h: h.body(data, headers=hub_headers(sha))


@pytest.fixture
def server():
    srv = LoopbackServer()
    thread = threading.Thread(target=srv.serve_forever, daemon=True)
    thread.start()
    yield srv
    srv.stop.set()
    srv.shutdown()
    srv.server_close()


@pytest.fixture
def cache(tmp_path, monkeypatch, server):
    """An empty cache, Meta's server and the Hub replaced by the loopback server."""
    home = tmp_path / "cache"
    monkeypatch.setenv("SAM_ROS_HOME", str(home))
    for name in ("SAM_ROS_OFFLINE", "SAM_ROS_DOWNLOAD_BASE", "SAM_ROS_DOWNLOAD_TIMEOUT",
                 "XDG_CACHE_HOME"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(hub, "META_BASE_URL", f"{server.url}/meta")
    monkeypatch.setattr(hub, "GITHUB_BASE_URL", f"{server.url}/github")
    monkeypatch.setenv("HF_ENDPOINT", server.url)
    import huggingface_hub.constants
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
    # else its first request in a process also asks the endpoint for a list of AI agents
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_DISABLE_TELEMETRY", True)
    return home


@pytest.fixture
def entry(mini_bytes, monkeypatch):
    """A registered official checkpoint whose size and SHA-256 are the test file's."""
    official = OfficialCheckpoint(NAME, "sam_ros_mini", "0101", 8, len(mini_bytes),
                                  hashlib.sha256(mini_bytes).hexdigest(),
                                  hub_repo="facebook/test-mini")
    monkeypatch.setitem(hub.CHECKPOINTS, NAME, official)
    return official


def meta_path(official):
    """The path of its official URL (on the loopback server, once ``cache`` is set up)."""
    return urllib.parse.urlsplit(official.url).path


def registered(monkeypatch, name, **changes):
    """The official entry ``name`` with some fields changed, for the rest of the test."""
    official = dataclasses.replace(hub.CHECKPOINTS[name], **changes)
    monkeypatch.setitem(hub.CHECKPOINTS, name, official)
    return official


def hub_path(official):
    return f"/{official.hub_repo}/resolve/main/{official.filename}"


HUB_BOOKKEEPING = (".lock", ".metadata", ".gitignore", "CACHEDIR.TAG")


def cache_files(home):
    """Every file in the cache but locks and huggingface_hub's bookkeeping (its partial
    downloads do count)."""
    if not home.exists():
        return []
    return sorted(str(p.relative_to(home)) for p in home.rglob("*")
                  if p.is_file() and not p.name.endswith(HUB_BOOKKEEPING))


def assert_loads(path, mini_bytes):
    assert path.read_bytes() == mini_bytes
    assert build_sam2(checkpoint=path).config.name == "sam_ros_mini"


# ------------------------------------------------------------------ Meta-style downloads


def test_download_then_cache(server, cache, entry, mini_bytes):
    server.routes[meta_path(entry)] = serve(mini_bytes)
    seen = []
    path = fetch_checkpoint(NAME, progress=lambda done, total: seen.append((done, total)))
    assert path == cache / entry.filename and cache_files(cache) == [entry.filename]
    assert_loads(path, mini_bytes)
    assert seen[-1] == (len(mini_bytes), len(mini_bytes)) and len(seen) >= 3
    assert [d for d, _ in seen] == sorted(d for d, _ in seen)
    # the second time the cache answers: no request
    assert fetch_checkpoint(NAME) == path and server.paths() == [meta_path(entry)]


@pytest.mark.parametrize("case", ["404", "refused", "cut", "html", "slow", "wrong file",
                                  "not a checkpoint", "disk full", "no disk space",
                                  "interrupted"])
def test_failures_leave_no_cache_entry(case, server, cache, entry, mini_bytes, monkeypatch):
    """Every failed download: a clear CheckpointError naming what was tried, no cache entry;
    only a transfer cut part-way leaves its hidden part, which the next call resumes."""
    route = meta_path(entry)
    half = len(mini_bytes) // 2
    expected = {
        "404": "HTTP 404",
        "refused": "connection refused",
        "cut": f"the connection closed after {half} of {len(mini_bytes)} bytes "
               f"({half / 1e6:.1f} MB kept: the next try resumes there)",
        "html": "sent a web page (text/html)",
        "slow": "no data from the server for 0.5 s (timed out) after",
        "wrong file": "wrong content: SHA-256",
        "not a checkpoint": "it does not load: checkpoint",
        "disk full": "the disk is full",
        "no disk space": "not enough disk space",
    }.get(case)
    progress = None
    if case == "refused":
        with socket.socket() as s:  # a port nobody listens on
            s.bind(("127.0.0.1", 0))
            monkeypatch.setattr(hub, "META_BASE_URL", f"http://127.0.0.1:{s.getsockname()[1]}")
    elif case == "404":
        pass
    elif case == "cut":
        server.routes[route] = cut_at(mini_bytes, half)
    elif case == "html":
        server.routes[route] = serve(b"<html>please log in</html>", content_type="text/html")
    elif case == "slow":
        monkeypatch.setenv("SAM_ROS_DOWNLOAD_TIMEOUT", "0.5")
        server.routes[route] = stall_after(mini_bytes, half)
    elif case == "wrong file":
        other = bytearray(mini_bytes)
        other[-100] ^= 0xFF
        server.routes[route] = serve(bytes(other))
    elif case == "not a checkpoint":
        registered(monkeypatch, NAME, size=None, sha256=None)  # the loader judges
        server.routes[route] = serve(b"\x00" * 5000)
    elif case == "disk full":
        server.routes[route] = serve(mini_bytes)
        monkeypatch.setattr(hub, "_open_partial", filling_up(hub._open_partial, half))
    elif case == "no disk space":
        server.routes[route] = serve(mini_bytes)
        monkeypatch.setattr(hub.shutil, "disk_usage", lambda _: FakeUsage(1000))
    elif case == "interrupted":  # Ctrl-C, or the node shutting down, mid-transfer
        server.routes[route] = serve(mini_bytes)

        def progress(done, total):
            if done > (1 << 20):
                raise KeyboardInterrupt
    hub_route = hub_path(entry)  # the Hub fallback fails too (not found)
    if case == "interrupted":
        with pytest.raises(KeyboardInterrupt):
            fetch_checkpoint(NAME, progress=progress)
    else:
        start = time.monotonic()
        with pytest.raises(CheckpointFetchError) as info:
            fetch_checkpoint(NAME)
        message = str(info.value)
        assert f"cannot get checkpoint {NAME}" in message
        assert expected in message, message
        assert f"copy it to {cache / entry.filename}" in message
        assert entry.url in message
        assert isinstance(info.value, CheckpointError)
        assert time.monotonic() - start < 20
        assert f"Hugging Face Hub {entry.hub_repo}" in message
        if case != "no disk space":  # there the Hub is not even asked
            assert "404" in message.split("Hugging Face Hub")[1]
            assert hub_route in server.paths("HEAD")
    partial = f".{entry.filename}.partial"
    if case not in ("cut", "slow", "interrupted"):
        assert cache_files(cache) == []
        return
    # a cut transfer: its part is kept, and the next call resumes it
    assert cache_files(cache) == [partial]
    kept = (cache / partial).stat().st_size
    assert kept >= (1 << 20) and (cache / partial).read_bytes() == mini_bytes[:kept]
    server.routes[route] = serve(mini_bytes)
    server.ranges.clear()
    assert_loads(fetch_checkpoint(NAME), mini_bytes)
    assert server.ranges == [f"bytes={kept}-"] and cache_files(cache) == [entry.filename]


class FakeUsage:
    def __init__(self, free):
        self.free = free


def filling_up(open_partial, capacity):
    """``hub._open_partial`` whose file refuses writes past ``capacity`` bytes (ENOSPC)."""
    return lambda path, start: FullDisk(open_partial(path, start), capacity)


class FullDisk:
    def __init__(self, f, capacity):
        self.f, self.left = f, capacity

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.f.close()

    def write(self, data):
        if len(data) > self.left:
            raise OSError(errno.ENOSPC, "No space left on device")
        self.left -= len(data)
        return self.f.write(data)

    def flush(self):
        self.f.flush()

    def fileno(self):
        return self.f.fileno()

    def close(self):
        self.f.close()


def test_a_cut_transfer_resumes_at_once(server, cache, entry, mini_bytes):
    third = len(mini_bytes) // 3
    server.routes[meta_path(entry)] = cut_at(mini_bytes, third, 2 * third, times=2)
    seen = []
    path = fetch_checkpoint(NAME, progress=lambda done, total: seen.append((done, total)))
    assert_loads(path, mini_bytes)
    assert server.ranges == [None, f"bytes={third}-", f"bytes={2 * third}-"]
    assert [d for d, _ in seen] == sorted(d for d, _ in seen)
    assert seen[-1] == (len(mini_bytes), len(mini_bytes))
    assert cache_files(cache) == [entry.filename]


@pytest.mark.parametrize("case", ["a killed download", "damaged", "no ranges", "complete"])
def test_an_earlier_part_is_resumed(case, server, cache, entry, mini_bytes):
    """The hidden part an earlier process left: resumed with a Range; a part that turns out
    wrong is fetched again from the start; a server without ranges sends the whole file."""
    cache.mkdir()
    partial = cache / f".{entry.filename}.partial"
    kept = 1000 if case != "complete" else len(mini_bytes)
    partial.write_bytes(mini_bytes[:kept] if case != "damaged" else b"\xff" * kept)
    assert hub.cached_path(NAME) is None
    server.routes[meta_path(entry)] = serve(mini_bytes, ranges=case != "no ranges")
    assert_loads(fetch_checkpoint(NAME), mini_bytes)
    assert server.ranges == {"a killed download": [f"bytes={kept}-"],
                             "damaged": [f"bytes={kept}-", None],
                             "no ranges": [f"bytes={kept}-"],
                             "complete": []}[case]
    assert cache_files(cache) == [entry.filename]


def test_two_processes_download_once(server, cache, entry, mini_bytes):
    server.routes[meta_path(entry)] = serve(mini_bytes)
    paths = []
    threads = [threading.Thread(target=lambda: paths.append(fetch_checkpoint(NAME)))
               for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(paths) == 2 and paths[0] == paths[1]
    assert server.paths() == [meta_path(entry)]
    assert cache_files(cache) == [entry.filename]


def test_mirror(server, cache, entry, mini_bytes, monkeypatch):
    monkeypatch.setenv("SAM_ROS_DOWNLOAD_BASE", f"{server.url}/mirror/")
    server.routes[f"/mirror/{entry.filename}"] = serve(mini_bytes)
    assert_loads(fetch_checkpoint(NAME), mini_bytes)
    assert server.paths() == [f"/mirror/{entry.filename}"]


def test_mirror_failure_is_named(server, cache, entry, monkeypatch):
    monkeypatch.setenv("SAM_ROS_DOWNLOAD_BASE", f"{server.url}/mirror")
    with pytest.raises(CheckpointFetchError, match=f"mirror {server.url}/mirror/"
                       f"{entry.filename}: HTTP 404"):
        fetch_checkpoint(NAME)
    assert meta_path(entry) not in server.paths()


def test_offline_never_touches_the_network(server, cache, entry, mini_bytes, monkeypatch):
    monkeypatch.setenv("SAM_ROS_OFFLINE", "1")
    server.routes[meta_path(entry)] = serve(mini_bytes)
    server.routes[hub_path(entry)] = hub_file(mini_bytes, entry.sha256)
    with pytest.raises(CheckpointFetchError, match="not in the cache, and SAM_ROS_OFFLINE is set"):
        build_sam2(checkpoint=NAME)
    assert server.requests == [] and cache_files(cache) == []
    cache.mkdir()
    (cache / entry.filename).write_bytes(mini_bytes)  # placed by hand
    assert build_sam2(checkpoint=NAME).config.name == "sam_ros_mini"
    assert server.requests == []


# ------------------------------------------------------------------ the Hugging Face Hub


def test_hub_fallback(server, cache, entry, mini_bytes):
    server.routes[hub_path(entry)] = hub_file(mini_bytes, entry.sha256)
    seen = []
    path = fetch_checkpoint(NAME, progress=lambda done, total: seen.append((done, total)))
    assert_loads(path, mini_bytes)
    assert cache_files(cache) == [entry.filename]  # the Hub's staging copy is moved, not kept
    assert server.paths("GET") == [meta_path(entry), hub_path(entry)]
    assert seen[-1] == (len(mini_bytes), len(mini_bytes))


def test_hub_resumes_a_cut_transfer(server, cache, entry, mini_bytes):
    server.routes[hub_path(entry)] = cut_at(mini_bytes, len(mini_bytes) // 3, times=1,
                                            headers=hub_headers(entry.sha256))
    assert_loads(fetch_checkpoint(NAME), mini_bytes)
    assert server.paths("GET").count(hub_path(entry)) == 2


def test_no_network_fails_at_once(server, cache, entry, monkeypatch):
    """Names that do not resolve (as on a robot with no network): both sources fail within
    seconds, not after huggingface_hub's 24 s of retries."""
    monkeypatch.setattr(hub, "META_BASE_URL", "http://meta.sam-ros-test.invalid")
    monkeypatch.setenv("HF_ENDPOINT", "http://hub.sam-ros-test.invalid")
    start = time.monotonic()
    with pytest.raises(CheckpointFetchError) as info:
        fetch_checkpoint(NAME)
    assert time.monotonic() - start < 10
    meta, hub_line = str(info.value).split("\n")[1:3]
    assert "cannot resolve the server's name, no network?" in meta, meta
    assert "Hugging Face Hub" in hub_line and "cannot resolve the server's name" in hub_line
    assert server.requests == [] and cache_files(cache) == []


def test_hub_wrong_content_is_not_cached(server, cache, entry, mini_bytes):
    other = bytearray(mini_bytes)
    other[-100] ^= 0xFF
    server.routes[hub_path(entry)] = hub_file(bytes(other), entry.sha256)
    with pytest.raises(CheckpointFetchError, match=r"(?s)HTTP 404.*Hub .*wrong content"):
        fetch_checkpoint(NAME)
    assert cache_files(cache) == []


# ------------------------------------------------------------------ names, build_sam2, tool


def test_build_sam2_by_official_name(server, cache, monkeypatch, tmp_path):
    """A real name end to end: sam2.1_hiera_tiny from a mirror (random weights; its size and
    hash stand in for the official ones), loaded by build_sam2 with variant auto."""
    data = random_checkpoint("sam2.1_hiera_t", tmp_path / "t.pt")
    registered(monkeypatch, "sam2.1_hiera_tiny", size=len(data),
               sha256=hashlib.sha256(data).hexdigest())
    server.routes["/meta/segment_anything_2/092824/sam2.1_hiera_tiny.pt"] = serve(data)
    model = build_sam2(checkpoint="sam2.1_hiera_t")  # the config-style spelling
    assert model.config.name == "sam2.1_hiera_t"
    assert (cache / "sam2.1_hiera_tiny.pt").read_bytes() == data
    reference = torch.load(tmp_path / "t.pt", weights_only=True)["model"]
    key = "no_obj_embed_spatial"
    assert torch.equal(model.state_dict()[key], reference[key])
    assert build_sam2().config.name == "sam_ros_mini"  # no arguments: still the bundled model


def test_names_and_paths(cache, tmp_path, monkeypatch):
    official = hub.official_checkpoint
    assert official("sam2.1_hiera_small").filename == "sam2.1_hiera_small.pt"
    assert official("sam2.1_hiera_b+").name == "sam2.1_hiera_base_plus"
    assert official("facebook/sam2-hiera-large").name == "sam2_hiera_large"
    assert official("sam2.1_hiera_huge") is None
    assert len(hub.CHECKPOINTS) == 12
    assert hub.CHECKPOINTS["sam2_hiera_tiny"].url == (
        f"{hub.META_BASE_URL}/segment_anything_2/072824/sam2_hiera_tiny.pt")
    # an existing path wins over a name
    monkeypatch.chdir(tmp_path)
    (tmp_path / "sam2.1_hiera_tiny").write_bytes(b"x")
    assert hub.resolve_checkpoint("sam2.1_hiera_tiny") == "sam2.1_hiera_tiny"
    with pytest.raises(CheckpointError, match="not the name of an official checkpoint.*did you "
                                              "mean sam2.1_hiera_small"):
        build_sam2(checkpoint="sam2.1_hiera_smal")
    with pytest.raises(CheckpointError, match="did you mean sam_vit_h"):
        build_model(checkpoint="sam_vit_hh")
    with pytest.raises(CheckpointError, match="nope.pt: no such file"):
        build_sam2(checkpoint="nope.pt")


def test_cache_place(monkeypatch, tmp_path):
    monkeypatch.delenv("SAM_ROS_HOME", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert hub.cache_dir() == tmp_path / "xdg" / "sam_ros"
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path))
    assert hub.cache_dir() == tmp_path / ".cache" / "sam_ros"
    monkeypatch.setenv("SAM_ROS_HOME", "~/models")
    assert hub.cache_dir() == tmp_path / "models"


def test_percent_logger():
    lines = []
    report = hub.percent_logger(lines.append, "sam2.1_hiera_small")
    for done in range(0, 184_000_001, 1_000_000):
        report(done, 184_000_000)
    assert len(lines) == 11
    assert lines[1] == "sam2.1_hiera_small: 10% (19 of 184 MB)" and "100%" in lines[-1]


def test_fetch_tool(server, cache, entry, mini_bytes, capsys):
    assert fetch_tool.main(["--list"]) == 0
    out = capsys.readouterr().out
    assert all(name in out for name in hub.CHECKPOINTS) and f"cache: {cache}" in out
    assert f"{NAME}" in out and out.count(" no\n") == len(hub.CHECKPOINTS)

    with pytest.raises(SystemExit) as exit_info:
        fetch_tool.main(["sam2.1_hiera_huge"])
    assert exit_info.value.code == 2

    assert fetch_tool.main([NAME]) == 1  # nothing served yet
    assert "cannot get checkpoint test_mini" in capsys.readouterr().err

    server.routes[meta_path(entry)] = cut_at(mini_bytes, 3_000_000)
    assert fetch_tool.main([NAME]) == 1
    capsys.readouterr()
    assert fetch_tool.main(["--list"]) == 0
    line = next(line for line in capsys.readouterr().out.splitlines() if line.startswith(NAME))
    assert line.endswith(" no, 3 MB of a cut download kept (fetch resumes it)"), line

    server.routes[meta_path(entry)] = serve(mini_bytes)
    assert fetch_tool.main([NAME]) == 0
    captured = capsys.readouterr()
    assert str(cache / entry.filename) in captured.out
    assert f"{NAME}: 100% (" in captured.err  # not a terminal: a line per 10%
    assert fetch_tool.main(["--verify", NAME]) == 0
    (cache / entry.filename).write_bytes(mini_bytes[:-1] + b"!")
    assert fetch_tool.main(["--verify"]) == 1
    assert "wrong content" in capsys.readouterr().out


# ------------------------------------------------------------------ SAM and MobileSAM

SAM_FILES = {  # name -> (official URL, the MD5 digits in the file name)
    "sam_vit_b": ("https://dl.fbaipublicfiles.com/segment_anything/sam_vit_b_01ec64.pth",
                  "01ec64"),
    "sam_vit_l": ("https://dl.fbaipublicfiles.com/segment_anything/sam_vit_l_0b3195.pth",
                  "0b3195"),
    "sam_vit_h": ("https://dl.fbaipublicfiles.com/segment_anything/sam_vit_h_4b8939.pth",
                  "4b8939"),
    "mobile_sam": ("https://github.com/ChaoningZhang/MobileSAM/raw/master/weights/mobile_sam.pt",
                   None),
}


@pytest.mark.parametrize("name", list(SAM_FILES))
def test_sam_and_mobile_sam_names(name):
    """Where each file is published, the names it answers to, what is checked; no Hub copy
    (the facebook/sam-vit-* repositories hold transformers weights, not these files)."""
    url, md5_prefix = SAM_FILES[name]
    official = hub.CHECKPOINTS[name]
    assert official.url == url and official.filename == url.rsplit("/", 1)[1]
    assert official.variant == name and official.hub_repo is None
    assert official.md5_prefix == md5_prefix
    stem = official.filename.rsplit(".", 1)[0]
    assert official.sha256 and official.size and official.license == "Apache-2.0"
    assert hub.official_checkpoint(name) is official
    assert hub.official_checkpoint(stem) is official  # sam_vit_b_01ec64
    assert hub.official_checkpoint(official.filename) is None  # a file name is a path
    # the transformers SAM on the Hub is another format: its id is not one of these names
    assert hub.official_checkpoint("facebook/sam-vit-base") is None


def test_mobile_sam_fetched_by_name_then_cached(server, cache, monkeypatch, mobile_sam_bytes,
                                                capsys):
    """fetch mobile_sam downloads it from its GitHub URL; build_model by name then loads the
    cached file without a request. The only source is the official one: no Hub request."""
    official = registered(monkeypatch, "mobile_sam", size=len(mobile_sam_bytes),
                          sha256=hashlib.sha256(mobile_sam_bytes).hexdigest())
    route = "/github/ChaoningZhang/MobileSAM/raw/master/weights/mobile_sam.pt"
    server.routes[route] = serve(mobile_sam_bytes)
    assert fetch_tool.main(["mobile_sam"]) == 0
    assert f"mobile_sam: {cache / 'mobile_sam.pt'} (41 MB)" in capsys.readouterr().out
    assert cache_files(cache) == [official.filename] and server.paths() == [route]
    model = build_model(checkpoint="mobile_sam")
    assert model.config.name == "mobile_sam" and server.paths() == [route]
    served = torch.load(cache / "mobile_sam.pt", weights_only=True)
    key = "image_encoder.patch_embed.seq.0.c.weight"
    assert torch.equal(model.state_dict()[key], served[key])
    with pytest.raises(CheckpointError, match="holds a mobile_sam model, not a SAM2 one"):
        build_sam2(checkpoint=cache / "mobile_sam.pt")
    # by name, refused from the table: before a download, not after
    for name in ("mobile_sam", "sam_vit_h"):
        with pytest.raises(CheckpointError, match=f"is a {name} model, not a SAM2 one"):
            build_sam2(checkpoint=name)
    assert server.paths() == [route]


@pytest.mark.parametrize("case", ["wrong prefix", "wrong prefix, right SHA-256", "right prefix"])
def test_md5_prefix_of_sam_file_names(case, server, cache, entry, monkeypatch, mini_bytes):
    """SAM's file names carry the first digits of the file's MD5: a download whose MD5 does
    not begin with them is refused and nothing is cached, even when the SHA-256 matches."""
    md5 = hashlib.md5(mini_bytes).hexdigest()
    if case == "right prefix":
        official = registered(monkeypatch, NAME, md5_prefix=md5[:6], size=None, sha256=None)
    elif case == "wrong prefix":  # sam_vit_b itself, as if only its name's digest were known
        official = registered(monkeypatch, "sam_vit_b", size=None, sha256=None)
    else:
        official = registered(monkeypatch, NAME, md5_prefix="01ec64")
    server.routes[meta_path(official)] = serve(mini_bytes)
    if case == "right prefix":
        assert_loads(fetch_checkpoint(NAME), mini_bytes)
        assert cache_files(cache) == [official.filename]
        return
    with pytest.raises(CheckpointFetchError) as info:
        fetch_checkpoint(official.name)
    message = str(info.value)
    assert (f"{official.url}: wrong content: MD5 {md5} does not begin with 01ec64 as the "
            f"official file's does") in message, message
    assert f"copy it to {cache / official.filename}" in message
    assert cache_files(cache) == []
    if case == "wrong prefix":
        assert meta_path(official) == "/meta/segment_anything/sam_vit_b_01ec64.pth"
        assert f"  - Meta {official.url}" in message
        assert "Hugging Face" not in message and "huggingface.co" not in message
        assert server.paths("HEAD") == [] and server.paths() == [meta_path(official)]


def test_sam_names_offline(server, cache, monkeypatch, mobile_sam_bytes, capsys):
    """SAM_ROS_OFFLINE: a name not cached is an error that says where to put which file and
    where to get it, without a request; a file placed by hand loads by name."""
    monkeypatch.setenv("SAM_ROS_OFFLINE", "1")
    with pytest.raises(CheckpointFetchError) as info:
        build_model(checkpoint="sam_vit_b_01ec64")
    message = str(info.value)
    assert message.startswith("cannot get checkpoint sam_vit_b (375 MB): not in the cache, "
                              "and SAM_ROS_OFFLINE is set")
    assert f"download {server.url}/meta/segment_anything/sam_vit_b_01ec64.pth\n" in message
    assert f"and copy it to {cache / 'sam_vit_b_01ec64.pth'}\n" in message
    assert "python -m sam_ros.tools.fetch sam_vit_b," in message
    assert "huggingface" not in message
    cache.mkdir()
    (cache / "mobile_sam.pt").write_bytes(mobile_sam_bytes)  # placed by hand
    assert build_model(checkpoint="mobile_sam").config.name == "mobile_sam"
    assert server.requests == []

    assert fetch_tool.main(["--list"]) == 0
    lines = capsys.readouterr().out.splitlines()
    rows = {line.split()[0]: line for line in lines[2:-1]}
    assert list(rows) == list(hub.CHECKPOINTS)
    assert rows["sam_vit_h"].split()[1:5] == ["sam_vit_h", "2565", "MB", "Meta"]
    assert rows["sam_vit_b"].endswith(" no")
    assert rows["mobile_sam"].split()[1:6] == ["mobile_sam", "41", "MB", "MobileSAM", "authors"]
    assert f"yes, 41 MB, {cache / 'mobile_sam.pt'}" in rows["mobile_sam"]
    assert lines[-1].startswith("Licence: Apache-2.0.")
