"""The sample photographs and clips that the repository carries in ``data/`` (Apache-2.0,
from Meta's SAM 2 repository; ``data/README.md`` says which and how they were cut). The
generator's backgrounds, the oracles' inputs and the tests' real frames all come from here.
"""

from pathlib import Path

DATA = Path(__file__).resolve().parents[1] / "data"
PHOTOS = DATA / "images"
IMAGES = [PHOTOS / name for name in ("cars.jpg", "groceries.jpg", "truck.jpg")]
VIDEOS = [DATA / "videos" / name for name in ("01_dog.mp4", "03_blocks.mp4", "04_coffee.mp4")]


def missing():
    """The sample files that are not there (a checkout without ``data/``), as a message, or
    None when all are."""
    absent = [str(p) for p in IMAGES + VIDEOS if not p.is_file()]
    return f"sample data missing: {', '.join(absent)}" if absent else None
