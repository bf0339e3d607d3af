"""Official checkpoints by name (sam_ros.model.hub) against a local HTTP server on the
loopback address: Meta-style downloads, the mirror, the Hugging Face Hub fallback (a small
fake of the two calls huggingface_hub makes), offline mode, and every failure ending either
in a cached file that loads or in a clear error with nothing left in the cache."""

import errno
import hashlib
import http.server
import socket
import threading
import time
from contextlib import contextmanager

import pytest
import torch

from sam_ros.model import SAM2, CheckpointError, build_sam2, get_config, hub, save_checkpoint
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


class LoopbackServer(http.server.ThreadingHTTPServer):
    """Answers each path with a configured behaviour and records every request."""

    daemon_threads = True

    def __init__(self):
        super().__init__(("127.0.0.1", 0), Handler)
        self.routes = {}
        self.requests = []
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

    def body(self, data, content_type="application/octet-stream", headers=(), send=None):
        """Headers for ``data`` (honouring a Range), then ``send`` bytes of it (all)."""
        start = 0
        if self.headers.get("Range", "").startswith("bytes="):
            start = int(self.headers["Range"][6:].split("-")[0])
        self.send_response(206 if start else 200)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(data) - start))
        for key, value in headers:
            self.send_header(key, value)
        self.end_headers()
        if self.command == "GET":
            self.wfile.write(data[start:start + (len(data) if send is None else send)])
            self.wfile.flush()


def serve(data, **kwargs):
    return lambda h: h.body(data, **kwargs)


def cut_at(data, size, times=None, headers=()):
    """Promise all of ``data``, send ``size`` bytes, close (the first ``times`` GETs)."""
    gets = [0]

    def route(h):
        gets[0] += h.command == "GET"
        if h.command == "GET" and (times is None or gets[0] <= times):
            h.body(data, headers=headers, send=size)
            h.close_connection = True
            h.connection.shutdown(socket.SHUT_RDWR)
        else:
            h.body(data, headers=headers)
    return route


def stall_after(data, size, seconds=30):
    def route(h):
        h.body(data, send=size)
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
    monkeypatch.setenv("HF_ENDPOINT", server.url)
    import huggingface_hub.constants
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
    return home


@pytest.fixture
def entry(mini_bytes, monkeypatch):
    """A registered official checkpoint whose size and SHA-256 are the test file's."""
    official = OfficialCheckpoint(NAME, "sam_ros_mini", "0101", 8, len(mini_bytes),
                                  hashlib.sha256(mini_bytes).hexdigest())
    monkeypatch.setitem(hub.CHECKPOINTS, NAME, official)
    return official


def meta_path(official):
    return f"/meta/{official.release}/{official.filename}"


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
def test_failures_leave_nothing(case, server, cache, entry, mini_bytes, monkeypatch):
    """Every failed download: a clear CheckpointError naming what was tried, no file."""
    route = meta_path(entry)
    half = len(mini_bytes) // 2
    expected = {
        "404": "HTTP 404",
        "refused": "connection refused",
        "cut": f"the connection closed after {half} of {len(mini_bytes)} bytes",
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
        monkeypatch.setitem(hub.CHECKPOINTS, NAME, OfficialCheckpoint(
            NAME, "sam_ros_mini", "0101", 8))  # no known size or hash: the loader judges
        server.routes[route] = serve(b"\x00" * 5000)
    elif case == "disk full":
        server.routes[route] = serve(mini_bytes)
        monkeypatch.setattr(hub, "_partial_file", filling_up(hub._partial_file, half))
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
        assert entry.meta_url in message
        assert isinstance(info.value, CheckpointError)
        assert time.monotonic() - start < 20
        assert f"Hugging Face Hub {entry.hub_repo}" in message
        if case != "no disk space":  # there the Hub is not even asked
            assert "404" in message.split("Hugging Face Hub")[1]
            assert hub_route in server.paths("HEAD")
    assert cache_files(cache) == []


class FakeUsage:
    def __init__(self, free):
        self.free = free


def filling_up(partial_file, capacity):
    """``hub._partial_file`` whose file refuses writes past ``capacity`` bytes (ENOSPC)."""
    @contextmanager
    def wrapped(target):
        with partial_file(target) as (path, f):
            yield path, FullDisk(f, capacity)
    return wrapped


class FullDisk:
    def __init__(self, f, capacity):
        self.f, self.left = f, capacity

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


def test_killed_download_leftovers_are_removed(server, cache, entry, mini_bytes):
    """A process killed mid-download leaves a hidden temporary file, never the cache entry;
    the next download removes it."""
    cache.mkdir()
    leftover = cache / f".{entry.filename}.k1ll3d.partial"
    leftover.write_bytes(mini_bytes[:1000])
    assert hub.cached_path(NAME) is None
    server.routes[meta_path(entry)] = serve(mini_bytes)
    fetch_checkpoint(NAME)
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
    official = hub.CHECKPOINTS["sam2.1_hiera_tiny"]
    monkeypatch.setitem(hub.CHECKPOINTS, official.name, OfficialCheckpoint(
        official.name, official.variant, official.release, official.megabytes, len(data),
        hashlib.sha256(data).hexdigest()))
    server.routes["/meta/092824/sam2.1_hiera_tiny.pt"] = serve(data)
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
    assert len(hub.CHECKPOINTS) == 8
    assert hub.CHECKPOINTS["sam2_hiera_tiny"].meta_url == (
        f"{hub.META_BASE_URL}/072824/sam2_hiera_tiny.pt")
    # an existing path wins over a name
    monkeypatch.chdir(tmp_path)
    (tmp_path / "sam2.1_hiera_tiny").write_bytes(b"x")
    assert hub.resolve_checkpoint("sam2.1_hiera_tiny") == "sam2.1_hiera_tiny"
    with pytest.raises(CheckpointError, match="not an official SAM 2 checkpoint name.*did you mean "
                                              "sam2.1_hiera_small"):
        build_sam2(checkpoint="sam2.1_hiera_smal")
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

    server.routes[meta_path(entry)] = serve(mini_bytes)
    assert fetch_tool.main([NAME]) == 0
    captured = capsys.readouterr()
    assert str(cache / entry.filename) in captured.out
    assert f"{NAME}: 100% (" in captured.err  # not a terminal: a line per 10%
    assert fetch_tool.main(["--verify", NAME]) == 0
    (cache / entry.filename).write_bytes(mini_bytes[:-1] + b"!")
    assert fetch_tool.main(["--verify"]) == 1
    assert "wrong content" in capsys.readouterr().out
