"""Official SAM 2 / 2.1, SAM and MobileSAM checkpoints by name: from the cache, else downloaded.

A name such as ``sam2.1_hiera_small`` (also ``sam2.1_hiera_s`` or the Hub id
``facebook/sam2.1-hiera-small``), ``sam_vit_b`` (also ``sam_vit_b_01ec64``) or
``mobile_sam`` resolves to a file in the cache, ``$SAM_ROS_HOME`` (default
``$XDG_CACHE_HOME/sam_ros``, i.e. ``~/.cache/sam_ros``), under its official file name. A
missing file is downloaded from where its authors publish it (Meta's server for SAM 2 and
SAM, MobileSAM's GitHub repository), or from the mirror named by ``SAM_ROS_DOWNLOAD_BASE``,
and, for the SAM 2 files, from the Hugging Face Hub if that fails. It enters the cache only
complete and checked: it is written under a hidden name in the cache folder, its size and
digests are compared with the official ones, it must load as a checkpoint of the expected
variant (the strict ``weights_only`` loader), and only then is it renamed. A transfer that is
cut resumes where it stopped (HTTP Range): at once while each try brings new bytes, else at the
next call (a robot's Wi-Fi drops; a 900 MB file should not start over).

Environment: ``SAM_ROS_HOME`` (the cache), ``SAM_ROS_OFFLINE=1`` (cache only, never the
network), ``SAM_ROS_DOWNLOAD_BASE`` (a mirror: a web folder holding the files under their
official names), ``SAM_ROS_DOWNLOAD_TIMEOUT`` (seconds without data before giving up,
default 30). The Hub fallback honours ``HF_ENDPOINT`` and ``HF_HUB_OFFLINE``.
"""

import difflib
import errno
import hashlib
import http.client
import logging
import os
import shutil
import socket
import ssl
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from .checkpoint import CheckpointError, detect_variant, read_state_dict

log = logging.getLogger(__name__)

# Where the authors publish their files; an entry's URL pattern names one as {meta} or
# {github} (read when a URL is made, so a test can point them at a local server).
META_BASE_URL = "https://dl.fbaipublicfiles.com"
GITHUB_BASE_URL = "https://github.com"
SAM2_URL = "{meta}/segment_anything_2/{release}/{filename}"
SAM_URL = "{meta}/segment_anything/{filename}"
MOBILE_SAM_URL = "{github}/ChaoningZhang/MobileSAM/raw/master/weights/{filename}"
DEFAULT_TIMEOUT_S = 30.0
LICENSE = "Apache-2.0"
_CHUNK = 1 << 20
_RESUMES = 8  # in one call, tries after a cut transfer (each must have brought new bytes)
_RESUME_PAUSE_S = 1.0


@dataclass(frozen=True)
class OfficialCheckpoint:
    """One officially released file, where it is published, and what it must look like once
    downloaded (``None``: not checked)."""

    name: str  # what users type; the file is {name}.pt unless ``file`` says otherwise
    variant: str  # the model config it loads into (sam_ros.model.VARIANTS)
    release: str  # the release folder in its URL, if the pattern has one
    megabytes: int  # approximate size on disk, for display
    size: int | None = None  # exact size in bytes
    sha256: str | None = None
    url_pattern: str = SAM2_URL  # with {meta}, {github}, {release}, {filename}
    file: str | None = None  # the official file name, if not {name}.pt
    hub_repo: str | None = None  # a Hugging Face Hub repository holding the same file
    md5_prefix: str | None = None  # the first hex digits of its MD5 (SAM's file names)
    publisher: str = "Meta"
    license: str = LICENSE

    @property
    def filename(self):
        return self.file or f"{self.name}.pt"

    @property
    def url(self):
        return self.url_pattern.format(meta=META_BASE_URL, github=GITHUB_BASE_URL,
                                       release=self.release, filename=self.filename)

    @property
    def spellings(self):
        """Every name that designates this file: the name, the file's stem (SAM's carry a
        digest: sam_vit_b_01ec64), the variant, the Hub id."""
        names = {self.name, Path(self.filename).stem, self.variant, self.hub_repo}
        return names - {None}


# SAM 2 / 2.1: Meta's server, and the same files in facebook/<name> on the Hugging Face Hub.
# Exact sizes and SHA-256 are those of the Git LFS pointers of the copies on the Hugging
# Face Hub (the file pages of facebook/sam2.1-hiera-tiny, -small and facebook/sam2-hiera-
# tiny, -small, -base-plus show these hashes; the other hashes, and the sizes, come from
# LFS pointers of public copies of the files with the same hash). They could not be checked
# against Meta's server from here (no network); a None is simply not checked.
_SAM2_TABLE = [
    ("sam2.1_hiera_tiny", "sam2.1_hiera_t", "092824", 156, 156008466,
     "7402e0d864fa82708a20fbd15bc84245c2f26dff0eb43a4b5b93452deb34be69"),
    ("sam2.1_hiera_small", "sam2.1_hiera_s", "092824", 184, 184416285,
     "6d1aa6f30de5c92224f8172114de081d104bbd23dd9dc5c58996f0cad5dc4d38"),
    ("sam2.1_hiera_base_plus", "sam2.1_hiera_b+", "092824", 324, 323606802,
     "a2345aede8715ab1d5d31b4a509fb160c5a4af1970f199d9054ccfb746c004c5"),
    ("sam2.1_hiera_large", "sam2.1_hiera_l", "092824", 898, 898083611,
     "2647878d5dfa5098f2f8649825738a9345572bae2d4350a2468587ece47dd318"),
    ("sam2_hiera_tiny", "sam2_hiera_t", "072824", 156, 155906050,
     "65b50056e05bcb13694174f51bb6da89c894b57b75ccdf0ba6352c597c5d1125"),
    ("sam2_hiera_small", "sam2_hiera_s", "072824", 184, None,
     "95949964d4e548409021d47b22712d5f1abf2564cc0c3c765ba599a24ac7dce3"),
    ("sam2_hiera_base_plus", "sam2_hiera_b+", "072824", 323, 323493298,
     "d0bb7f236400a49669ffdd1be617959a8b1d1065081789d7bbff88eded3a8071"),
    ("sam2_hiera_large", "sam2_hiera_l", "072824", 898, 897952466,
     "7442e4e9b732a508f80e141e7c2913437a3610ee0c77381a66658c3a445df87b"),
]

# SAM (2023): the three files linked from facebookresearch/segment-anything's README, on
# Meta's server only (the facebook/sam-vit-* repositories on the Hub hold transformers
# weights, not these files). Their names end in the first six hex digits of the file's MD5
# (the full MD5s, e.g. in Sanster/IOPaint's iopaint/plugins/interactive_seg.py, begin so).
# SHA-256: the pooch registry of computational-cell-analytics/micro-sam (micro_sam/util.py),
# which checks them on every download, and many other projects that pin them; sizes: the
# same in several projects' download checks (vit_b's is also a wget log of Meta's server).
#
# MobileSAM: weights/mobile_sam.pt in ChaoningZhang/MobileSAM, the file its README loads
# (the release-asset URLs in circulation disagree with one another). SHA-256 from the same
# micro-sam registry, and with the size from projects that pin the file at commit
# f706ad9c4eb7f219c00d9050e46328518ffb65d2 of that repository. No Hub fallback either: no
# copy there could be checked from here to be its authors'.
_SAM_CHECKPOINTS = [
    OfficialCheckpoint("sam_vit_b", "sam_vit_b", "", 375, 375042383,
                       "ec2df62732614e57411cdcf32a23ffdf28910380d03139ee0f4fcbe91eb8c912",
                       SAM_URL, "sam_vit_b_01ec64.pth", md5_prefix="01ec64"),
    OfficialCheckpoint("sam_vit_l", "sam_vit_l", "", 1250, 1249524607,
                       "3adcc4315b642a4d2101128f611684e8734c41232a17c648ed1693702a49a622",
                       SAM_URL, "sam_vit_l_0b3195.pth", md5_prefix="0b3195"),
    OfficialCheckpoint("sam_vit_h", "sam_vit_h", "", 2565, 2564550879,
                       "a7bf3b02f3ebf1267aba913ff637d9a2d5c33d3173bb679e46d9f338c26f262e",
                       SAM_URL, "sam_vit_h_4b8939.pth", md5_prefix="4b8939"),
    OfficialCheckpoint("mobile_sam", "mobile_sam", "", 41, 40728226,
                       "6dbb90523a35330fedd7f1d3dfc66f995213d81b29a5ca8108dbcdd4e37d6c2f",
                       MOBILE_SAM_URL, "mobile_sam.pt", publisher="MobileSAM authors"),
]

CHECKPOINTS = {row[0]: OfficialCheckpoint(*row, hub_repo="facebook/" + row[0].replace("_", "-"))
               for row in _SAM2_TABLE}
CHECKPOINTS.update((checkpoint.name, checkpoint) for checkpoint in _SAM_CHECKPOINTS)


class CheckpointFetchError(CheckpointError):
    """An official checkpoint that is not cached and could not be downloaded.

    ``attempts`` lists ``(source, what happened)``; the message also says where to put
    the file by hand."""

    def __init__(self, checkpoint, attempts, cache_path, reason=""):
        self.checkpoint = checkpoint
        self.attempts = list(attempts)
        self.cache_path = Path(cache_path)
        reason = reason or "every source failed"
        lines = [f"cannot get checkpoint {checkpoint.name} ({checkpoint.megabytes} MB): {reason}"]
        lines += [f"  - {source}: {outcome}" for source, outcome in self.attempts]
        fetch = f"python -m sam_ros.tools.fetch {checkpoint.name}"
        lines.append(f"To place it by hand, download {checkpoint.url}")
        if checkpoint.hub_repo:
            lines.append(f"(or {checkpoint.filename} of https://huggingface.co/"
                         f"{checkpoint.hub_repo})")
        lines += [f"and copy it to {self.cache_path}",
                  f"(on a machine with network: {fetch}, then copy the cache folder)."]
        super().__init__("\n".join(lines))


def cache_dir():
    """Where checkpoints are cached: ``$SAM_ROS_HOME``, else ``$XDG_CACHE_HOME/sam_ros``,
    else ``~/.cache/sam_ros``."""
    home = os.environ.get("SAM_ROS_HOME")
    if home:
        return Path(home).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join("~", ".cache")
    return Path(base).expanduser() / "sam_ros"


def is_offline():
    """``SAM_ROS_OFFLINE`` set to 1 / true / yes / on: never touch the network."""
    return os.environ.get("SAM_ROS_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on")


def official_checkpoint(text):
    """The official checkpoint a name designates, or None. Accepted: the name
    (``sam2.1_hiera_tiny``, ``sam_vit_b``), the file stem (``sam_vit_b_01ec64``), the config
    name (``sam2.1_hiera_t``), the Hub id (``facebook/sam2.1-hiera-tiny``)."""
    text = os.fspath(text).strip()
    for checkpoint in CHECKPOINTS.values():
        if text in checkpoint.spellings:
            return checkpoint
    return None


def lookup_official(name):
    """``official_checkpoint``, raising a CheckpointError with a hint for an unknown name."""
    checkpoint = official_checkpoint(name)
    if checkpoint is None:
        close = difflib.get_close_matches(os.fspath(name), list(CHECKPOINTS), n=1)
        hint = f"; did you mean {close[0]}?" if close else ""
        raise CheckpointError(f"{name!r} is not the name of an official checkpoint "
                              f"(known: {', '.join(CHECKPOINTS)}){hint}")
    return checkpoint


def cached_path(name):
    """The cached file of an official checkpoint, or None if it is not cached."""
    path = cache_dir() / lookup_official(name).filename
    return path if path.is_file() else None


def kept_bytes(name):
    """Bytes of a cut download of an official checkpoint, kept for the next try to resume
    (0: none)."""
    partial = _partial_path(cache_dir() / lookup_official(name).filename)
    return partial.stat().st_size if partial.is_file() else 0


def resolve_checkpoint(checkpoint, progress=None):
    """What ``build_sam2`` loads for a ``checkpoint`` argument: an existing path as it is;
    an official name as its cached file (downloaded first if needed); anything else as it
    is (the loader then says the file does not exist). ``progress(done, total)`` follows a
    download (bytes; ``total`` may be None)."""
    text = os.fspath(checkpoint)
    if os.path.exists(text):
        return checkpoint
    official = official_checkpoint(text)
    if official is not None:
        return fetch_checkpoint(official.name, progress=progress)
    if "/" not in text and os.sep not in text and not text.endswith(
            (".pt", ".pth", ".safetensors", ".bin")):  # meant as a name, not a path
        try:
            lookup_official(text)
        except CheckpointError as exc:
            raise CheckpointError(f"checkpoint {text}: no such file, and {exc}") from None
    return checkpoint


def fetch_checkpoint(name, progress=None, timeout=None):
    """The cached file of an official checkpoint, downloaded first if it is not cached.

    Raises ``CheckpointFetchError`` (a ``CheckpointError``) naming every source tried."""
    checkpoint = lookup_official(name)
    home = cache_dir()
    target = home / checkpoint.filename
    if target.is_file():
        return target
    if is_offline():
        raise CheckpointFetchError(checkpoint, [], target,
                                   "not in the cache, and SAM_ROS_OFFLINE is set")
    try:
        home.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise CheckpointFetchError(checkpoint, [], target,
                                   f"cannot create the cache folder {home}: {exc}") from None
    if timeout is None:
        setting = os.environ.get("SAM_ROS_DOWNLOAD_TIMEOUT") or str(DEFAULT_TIMEOUT_S)
        try:
            timeout = float(setting)
        except ValueError:
            raise CheckpointError(f"SAM_ROS_DOWNLOAD_TIMEOUT={setting!r}: not a number of "
                                  "seconds") from None
    attempts = []
    try:
        with _exclusive(home / f".{checkpoint.filename}.lock"):
            if target.is_file():  # another process finished it while we waited
                return target
            for source, download in _sources(checkpoint, timeout):
                log.info("downloading %s (%d MB) from %s to %s", checkpoint.name,
                         checkpoint.megabytes, source, target)
                try:
                    download(target, progress)
                except _Failed as failure:
                    attempts.append((source, str(failure)))
                    continue
                _partial_path(target).unlink(missing_ok=True)  # a part kept of another source
                return target
    except OSError as exc:  # the cache folder itself: read-only, gone, ...
        raise CheckpointFetchError(checkpoint, attempts, target,
                                   f"cannot write to the cache folder {home}: {exc}") from None
    raise CheckpointFetchError(checkpoint, attempts, target)


def check_file(path, checkpoint, digests=None):
    """What is wrong with ``path`` as the file of ``checkpoint`` (its size, SHA-256, MD5
    prefix, whether it loads as that variant), or None if nothing is. ``digests``: the
    file's hex digests by algorithm, as far as known (the others are computed)."""
    path = Path(path)
    size = path.stat().st_size
    if checkpoint.size is not None and size != checkpoint.size:
        return f"{size} bytes, the official file has {checkpoint.size}"
    digests = dict(digests or {})
    missing = [name for name in _digests_checked(checkpoint) if name not in digests]
    if missing:
        digests.update(_file_digests(path, missing))
    if checkpoint.sha256 is not None and digests["sha256"] != checkpoint.sha256:
        return (f"wrong content: SHA-256 {digests['sha256']}, the official file has "
                f"{checkpoint.sha256}")
    if checkpoint.md5_prefix is not None and not digests["md5"].startswith(
            checkpoint.md5_prefix):
        return (f"wrong content: MD5 {digests['md5']} does not begin with "
                f"{checkpoint.md5_prefix} as the official file's does (its name is "
                f"{checkpoint.filename})")
    try:
        variant = detect_variant(read_state_dict(path), source=f"{checkpoint.name} file")
    except CheckpointError as exc:
        return f"it does not load: {exc}"
    if variant != checkpoint.variant:
        return f"it holds {variant}, not {checkpoint.variant}"
    return None


def percent_logger(log_line, label, step=10):
    """A ``progress`` callback that calls ``log_line(text)`` once per ``step`` percent
    (once per 50 MB when the total is unknown): a download in a log, e.g. a ROS node's."""
    reported = [-1]

    def report(done, total):
        mark = (100 * done // total) // step if total else done // (50 << 20)
        if mark > reported[0]:
            reported[0] = mark
            shown = f"{done / 1e6:.0f} of {total / 1e6:.0f} MB" if total else f"{done / 1e6:.0f} MB"
            percent = f"{mark * step}% " if total else ""
            log_line(f"{label}: {percent}({shown})")

    return report


# ---------------------------------------------------------------------- internals


class _Failed(Exception):
    """One source failed; the message says how (the caller tries the next source)."""


def _sources(checkpoint, timeout):
    """(label, download(target, progress)) for each source, in the order they are tried:
    the mirror if one is named, else the publisher's URL; then the Hub, if it has the file."""
    mirror = os.environ.get("SAM_ROS_DOWNLOAD_BASE", "").strip()
    if mirror:
        url = f"{mirror.rstrip('/')}/{checkpoint.filename}"
        label = f"mirror {url}"
    else:
        url = checkpoint.url
        label = f"{checkpoint.publisher} {url}"

    def from_url(target, progress):
        _download_url(url, checkpoint, target, progress, timeout)

    def from_hub(target, progress):
        _download_hub(checkpoint, target, progress)

    sources = [(label, from_url)]
    if checkpoint.hub_repo:
        sources.append((f"Hugging Face Hub {checkpoint.hub_repo} ({checkpoint.filename})",
                        from_hub))
    return sources


@contextmanager
def _exclusive(lock_path):
    """One downloader per file across processes (two nodes starting at once)."""
    try:
        import fcntl
    except ImportError:  # not POSIX: no lock, the temporary names still never collide
        yield
        return
    with open(lock_path, "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def _partial_path(target):
    """Where a download of ``target`` grows: hidden, beside it (the rename stays on one file
    system), and kept after a cut so that the next try resumes it. Only the holder of the
    lock (``_exclusive``) writes it."""
    return target.with_name(f".{target.name}.partial")


class _Cut(Exception):
    """A transfer stopped part-way (closed, timed out, reset); ``gained``: whether this try
    brought new bytes."""

    def __init__(self, message, gained):
        super().__init__(message)
        self.gained = gained


def _download_url(url, checkpoint, target, progress, timeout):
    """GET ``url`` into the partial file beside ``target`` (resuming what an earlier try
    left), check it, rename it to ``target``. A cut transfer is resumed at once while each
    try brings new bytes; what a failed call received stays for the next. A complete file
    that fails its check is removed; if it had been resumed, it is fetched once more from the
    start (the kept part may be what was damaged)."""
    partial = _partial_path(target)
    bar = _Progress(checkpoint.name, checkpoint.size, progress)
    resumes, started_over = 0, False
    try:
        while True:
            resumed_from = partial.stat().st_size if partial.exists() else 0
            try:
                digests = _transfer(url, checkpoint, partial, bar, timeout)
            except _Cut as cut:
                kept = partial.stat().st_size if partial.exists() else 0
                if cut.gained and resumes < _RESUMES:
                    resumes += 1
                    log.warning("%s: %s; resuming at %s", checkpoint.name, cut, _mb(kept))
                    time.sleep(_RESUME_PAUSE_S)
                    continue
                raise _Failed(f"{cut} ({_mb(kept)} kept: the next try resumes there)") from None
            problem = check_file(partial, checkpoint, digests)
            if problem is None:
                os.replace(partial, target)
                return
            partial.unlink(missing_ok=True)
            if not resumed_from or started_over:
                raise _Failed(problem)
            started_over = True
            log.warning("%s: the resumed download is wrong (%s); starting it over",
                        checkpoint.name, problem)
    finally:
        bar.close()


def _transfer(url, checkpoint, partial, bar, timeout):
    """One GET of the rest of the file into ``partial``; the complete file's digests (as far
    as checked), or None when they are to be computed from the file."""
    have = partial.stat().st_size if partial.exists() else 0
    if have and checkpoint.size is not None and have >= checkpoint.size:
        if have == checkpoint.size:
            return None  # complete already (a kill between the last byte and the rename)
        partial.unlink()
        have = 0
    headers = {"User-Agent": "sam_ros"}
    if have:
        headers["Range"] = f"bytes={have}-"
    try:
        response = urllib.request.urlopen(urllib.request.Request(url, headers=headers),
                                          timeout=timeout)
    except urllib.error.HTTPError as exc:
        if exc.code == 416:  # the kept part is no prefix of the file: start over next time
            partial.unlink(missing_ok=True)
        raise _Failed(f"HTTP {exc.code} {exc.reason}") from None
    except (urllib.error.URLError, OSError, http.client.HTTPException) as exc:
        raise _Failed(_network_error(getattr(exc, "reason", exc), timeout)) from None
    with response:
        if response.headers.get("Content-Type", "").startswith("text/html"):
            raise _Failed("the server sent a web page (text/html), not the checkpoint "
                          "(a proxy or login page?)")
        start = have if response.status == 206 and _range_start(response) == have else 0
        length = response.headers.get("Content-Length")
        total = start + int(length) if length and length.isdigit() else None
        if total is not None and checkpoint.size is not None and total != checkpoint.size:
            partial.unlink(missing_ok=True)
            raise _Failed(f"the server offers {total} bytes, the official file has "
                          f"{checkpoint.size}")
        expected = checkpoint.size or total
        _check_free_space(partial.parent, None if expected is None else expected - start)
        hashers = _hashers_of_prefix(partial, start, _digests_checked(checkpoint))
        bar.set(start, expected)
        done = start
        with _open_partial(partial, start) as f:
            try:
                while True:
                    chunk = response.read(_CHUNK)
                    if not chunk:
                        break
                    f.write(chunk)
                    for hasher in hashers.values():
                        hasher.update(chunk)
                    done += len(chunk)
                    bar.update(len(chunk))
                f.flush()
                os.fsync(f.fileno())  # on disk before the rename: robots lose power
            except OSError as exc:
                if exc.errno == errno.ENOSPC:
                    f.close()
                    partial.unlink(missing_ok=True)  # a full disk needs the space back
                    raise _Failed(f"the disk is full ({partial.parent}) after {_mb(done)} of "
                                  f"{_mb(expected)}") from None
                raise _Cut(f"{_network_error(exc, timeout)} after {_mb(done)} of "
                           f"{_mb(expected)}", done > start) from None
            except http.client.HTTPException as exc:
                raise _Cut(f"the transfer broke after {_mb(done)} of {_mb(expected)} "
                           f"({type(exc).__name__})", done > start) from None
    if expected is not None and done != expected:
        raise _Cut(f"the connection closed after {done} of {expected} bytes", done > start)
    return {name: hasher.hexdigest() for name, hasher in hashers.items()}


def _range_start(response):
    """The first byte of a 206 answer (its Content-Range, ``bytes START-END/SIZE``)."""
    value = response.headers.get("Content-Range", "")
    try:
        return int(value.split()[1].split("-")[0])
    except (IndexError, ValueError):
        return None


def _open_partial(partial, start):
    """The partial file for writing at ``start``, cut there (bytes past it are dropped)."""
    f = open(partial, "r+b" if start else "wb")
    f.truncate(start)
    f.seek(start)
    return f


def _hashers_of_prefix(path, size, names):
    """Hashers for ``names`` fed the first ``size`` bytes of ``path`` (None: all of it), one
    pass for every algorithm."""
    hashers = {name: _hasher(name) for name in names}
    if hashers and size != 0:
        with open(path, "rb") as f:
            left = size
            while left is None or left > 0:
                chunk = f.read(_CHUNK if left is None else min(_CHUNK, left))
                if not chunk:
                    break
                if left is not None:
                    left -= len(chunk)
                for hasher in hashers.values():
                    hasher.update(chunk)
    return hashers


def _download_hub(checkpoint, target, progress):
    """Fetch the same file from the Hugging Face Hub (huggingface_hub does the transfer,
    with its own retries and resume) into a staging folder of the cache, check it, move it
    to ``target``."""
    try:
        from huggingface_hub import hf_hub_download
        from huggingface_hub.errors import EntryNotFoundError
    except ImportError:
        raise _Failed("skipped, huggingface_hub is not installed "
                      "(pip install huggingface_hub)") from None
    # Its errors: OSError (HTTP status, offline, size check, disk), ValueError, entry not
    # found, and its HTTP client's own transport errors once its retries are spent.
    hub_errors = (OSError, ValueError, EntryNotFoundError)
    try:
        import httpx2
        hub_errors += (httpx2.HTTPError,)
    except ImportError:
        pass
    staging = target.parent / ".hub"
    expected = checkpoint.size
    _check_free_space(target.parent, expected)
    endpoint = os.environ.get("HF_ENDPOINT") or None
    # With no network, huggingface_hub retries for about 24 s; a name that cannot be
    # resolved says the same at once.
    host = urllib.parse.urlsplit(endpoint or "https://huggingface.co").hostname
    try:
        socket.getaddrinfo(host, None)
    except socket.gaierror as exc:
        raise _Failed(_network_error(exc, None)) from None
    try:
        # The files are public: no token is sent (not even to an HF_ENDPOINT mirror).
        path = hf_hub_download(checkpoint.hub_repo, checkpoint.filename, local_dir=staging,
                               token=False, endpoint=endpoint,
                               tqdm_class=_hub_progress_class(checkpoint.name, expected, progress))
    except hub_errors as exc:
        raise _Failed(_hub_error(exc)) from None
    path = Path(path)
    try:
        _install(path, checkpoint, target)
    finally:
        path.unlink(missing_ok=True)


def _install(path, checkpoint, target, digests=None):
    """Check a complete download and rename it to ``target`` (atomic, same folder)."""
    problem = check_file(path, checkpoint, digests)
    if problem is not None:
        raise _Failed(problem)
    os.replace(path, target)


def _digests_checked(checkpoint):
    """The hash algorithms whose digests ``checkpoint`` is checked against."""
    return [name for name, known in (("sha256", checkpoint.sha256),
                                     ("md5", checkpoint.md5_prefix)) if known is not None]


def _hasher(name):
    # MD5 here only checks a published digest, so it is allowed on FIPS systems too
    return hashlib.new(name, usedforsecurity=False)


def _file_digests(path, names):
    """The hex digests of a file, one pass for every algorithm in ``names``."""
    return {name: hasher.hexdigest()
            for name, hasher in _hashers_of_prefix(path, None, names).items()}


def _check_free_space(folder, needed):
    if needed is None:
        return
    free = shutil.disk_usage(folder).free
    if free < needed:
        raise _Failed(f"not enough disk space in {folder}: {_mb(needed)} needed, "
                      f"{_mb(free)} free")


def _network_error(reason, timeout):
    if isinstance(reason, (TimeoutError, socket.timeout)):
        return f"no data from the server for {timeout:g} s (timed out)"
    if isinstance(reason, ConnectionRefusedError):
        return "connection refused"
    if isinstance(reason, socket.gaierror):
        return f"cannot resolve the server's name, no network? ({reason})"
    if isinstance(reason, ConnectionError):
        return f"connection lost ({type(reason).__name__})"
    if isinstance(reason, ssl.SSLError):
        return f"TLS error ({reason})"
    return f"{type(reason).__name__}: {reason}"


def _hub_error(exc):
    """The first line of a huggingface_hub error; of its cause where it has one (the
    "cannot find it in the local cache" wrapper hides the network or HTTP error)."""
    exc = exc.__cause__ or exc
    lines = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {lines[0]}" if lines else type(exc).__name__


def _mb(size):
    return "?" if size is None else f"{size / 1e6:.1f} MB"


class _Progress:
    """A tqdm bar when stderr is a terminal, and the caller's ``progress(done, total)``."""

    def __init__(self, label, total, callback):
        self.total, self.callback, self.done = total, callback, 0
        self.bar = None
        if sys.stderr.isatty():
            try:
                from tqdm import tqdm
            except ImportError:
                tqdm = None
            if tqdm is not None:
                self.bar = tqdm(total=total, desc=label, unit="B", unit_scale=True,
                                unit_divisor=1024)

    def set(self, done, total):
        """Start again from ``done`` of ``total`` bytes (a resumed or restarted transfer)."""
        self.total = total
        if self.bar is not None:
            self.bar.reset(total=self.total)
            self.bar.update(done)
        self.done = done
        if self.callback is not None and done:
            self.callback(self.done, self.total)

    def update(self, count):
        self.done += count
        if self.bar is not None:
            self.bar.update(count)
        if self.callback is not None:
            self.callback(self.done, self.total)

    def close(self):
        if self.bar is not None:
            self.bar.close()


def _hub_progress_class(label, known_total, callback):
    """A tqdm-like class for huggingface_hub's ``tqdm_class`` that feeds ``_Progress``."""

    class HubProgress:
        def __init__(self, *args, total=None, **kwargs):
            self.progress = _Progress(label, total or known_total, callback)

        def update(self, count=1):
            self.progress.update(count)

        def close(self):
            self.progress.close()

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            self.close()

    return HubProgress


__all__ = ["CHECKPOINTS", "GITHUB_BASE_URL", "META_BASE_URL", "CheckpointFetchError",
           "OfficialCheckpoint", "cache_dir", "cached_path", "check_file", "fetch_checkpoint",
           "is_offline", "kept_bytes", "lookup_official", "official_checkpoint", "percent_logger",
           "resolve_checkpoint"]
