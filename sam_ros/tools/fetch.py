"""Fetch official SAM 2 / 2.1, SAM and MobileSAM checkpoints into the cache ahead of time.

    python -m sam_ros.tools.fetch NAME [NAME ...]    download what is not cached yet
    python -m sam_ros.tools.fetch --list             every name, cached or not, its size
    python -m sam_ros.tools.fetch --verify [NAME]    re-check cached files (SHA-256, loading)

The cache is $SAM_ROS_HOME (default ~/.cache/sam_ros). To prepare a robot that is offline
in the field, fetch on a workstation and copy the cache folder to the robot's, or serve it
(e.g. python -m http.server -d ~/.cache/sam_ros) and set SAM_ROS_DOWNLOAD_BASE on the robot.
Exit status: 0 all done, 1 a download or check failed, 2 a name is unknown.
"""

import argparse
import sys

from sam_ros.model.checkpoint import CheckpointError
from sam_ros.model.hub import (
    CHECKPOINTS,
    cache_dir,
    cached_path,
    check_file,
    fetch_checkpoint,
    is_offline,
    kept_bytes,
    lookup_official,
    percent_logger,
)


def list_checkpoints(out):
    out.write(f"cache: {cache_dir()}{'  (SAM_ROS_OFFLINE: cache only)' if is_offline() else ''}\n")
    out.write(f"{'name':23} {'model':16} {'size':>7}  {'from':18} cached\n")
    for checkpoint in CHECKPOINTS.values():
        path = cached_path(checkpoint.name)
        kept = kept_bytes(checkpoint.name)
        state = (f"yes, {path.stat().st_size / 1e6:.0f} MB, {path}" if path else
                 f"no, {kept / 1e6:.0f} MB of a cut download kept (fetch resumes it)" if kept
                 else "no")
        out.write(f"{checkpoint.name:23} {checkpoint.variant:16} "
                  f"{checkpoint.megabytes:>4} MB  {checkpoint.publisher:18} {state}\n")
    licenses = sorted({checkpoint.license for checkpoint in CHECKPOINTS.values()})
    out.write(f"Licence: {', '.join(licenses)}. python -m sam_ros.tools.fetch NAME downloads "
              f"one.\n")


def verify(checkpoint):
    """What is wrong with the cached file of ``checkpoint``, or None."""
    path = cached_path(checkpoint.name)
    if path is None:
        return "not cached"
    problem = check_file(path, checkpoint)
    return None if problem is None else f"{path}: {problem}"


def main(argv=None):
    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[0], formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="\n".join(__doc__.splitlines()[1:]))
    parser.add_argument("names", nargs="*", metavar="NAME",
                        help=f"e.g. sam2.1_hiera_small; one of: {', '.join(CHECKPOINTS)}")
    parser.add_argument("--list", action="store_true", help="list the names and the cache")
    parser.add_argument("--verify", action="store_true",
                        help="check cached files (all cached ones if no NAME is given)")
    args = parser.parse_args(argv)
    if not args.names and not args.list and not args.verify:
        parser.error("give checkpoint names to fetch, or --list, or --verify")

    try:
        checkpoints = [lookup_official(name) for name in args.names]
    except CheckpointError as exc:
        parser.exit(2, f"fetch: {exc}\n")
    if args.list:
        list_checkpoints(sys.stdout)

    failed = False
    if args.verify:
        checkpoints = checkpoints or [c for c in CHECKPOINTS.values() if cached_path(c.name)]
        if not checkpoints:
            print(f"nothing cached in {cache_dir()}")
        for checkpoint in checkpoints:
            problem = verify(checkpoint)
            print(f"{checkpoint.name}: {'OK' if problem is None else problem}")
            failed |= problem is not None
        return 1 if failed else 0

    for checkpoint in checkpoints:
        # A bar on a terminal (the library draws it); in a log, a line per 10%.
        progress = None if sys.stderr.isatty() else percent_logger(
            lambda line: print(line, file=sys.stderr, flush=True), checkpoint.name)
        try:
            path = fetch_checkpoint(checkpoint.name, progress=progress)
        except CheckpointError as exc:
            print(f"fetch: {exc}", file=sys.stderr)
            failed = True
            continue
        print(f"{checkpoint.name}: {path} ({path.stat().st_size / 1e6:.0f} MB)")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
