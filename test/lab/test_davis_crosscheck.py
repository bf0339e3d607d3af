"""``lab/davis_crosscheck.py`` end to end, against a stand-in for DAVIS 2017's toolkit
built on our own measures. The real toolkit is not ours to bundle (README says what the
tool found with it), so this checks the tool's own part: the layout it writes for the
toolkit, and which frames and objects it pairs. A stand-in that agrees with ``evaluate``
must give zero gaps; one that disagrees must show them."""

import re
import sys
import textwrap

import pytest

from lab.samples import PHOTOS, missing

pytestmark = pytest.mark.skipif(missing() is not None, reason=str(missing()))

# The toolkit's interface as the tool uses it, on our measures; OFFSET shifts its F.
STAND_IN = {
    "__init__.py": "",
    "davis.py": """
        from pathlib import Path
        import numpy as np
        from PIL import Image

        class DAVIS:
            def __init__(self, root, task, subset):
                assert task == "semi-supervised"
                self.root = Path(root)
                names = (self.root / "ImageSets" / "2017" / f"{subset}.txt").read_text()
                self.sequences = names.split()

            def get_all_masks(self, sequence, separate_objects_masks):
                frames = sorted((self.root / "JPEGImages" / "480p" / sequence).glob("*.jpg"))
                pngs = sorted((self.root / "Annotations" / "480p" / sequence).glob("*.png"))
                assert separate_objects_masks and len(frames) == len(pngs) > 0
                ids = np.stack([np.array(Image.open(p)) for p in pngs])
                ids[ids == 255] = 0
                objects = np.arange(1, ids[0].max() + 1)[:, None, None, None]
                return objects == ids[None], [p.stem for p in pngs]
        """,
    "evaluation.py": """
        import numpy as np
        from lab.metrics import contour_accuracy, region_similarity
        OFFSET = 0.0

        class DAVISEvaluation:
            @staticmethod
            def _evaluate_semisupervised(truth, result, metric):
                assert truth.shape == result.shape and metric == ("J", "F")
                J = np.array([[region_similarity(r, g) for r, g in zip(rs, gs)]
                              for rs, gs in zip(result, truth)])
                F = np.array([[contour_accuracy(r, g) + OFFSET for r, g in zip(rs, gs)]
                              for rs, gs in zip(result, truth)])
                return J, F
        """,
    "utils.py": """
        import numpy as np

        def db_statistics(values):
            return np.nanmean(values), None, None
        """,
}


@pytest.fixture
def crosscheck():
    from lab import davis_crosscheck
    yield davis_crosscheck
    for name in [n for n in sys.modules if n.split(".")[0] == "davis2017"]:
        del sys.modules[name]


def run(crosscheck, tmp_path, capsys, offset):
    toolkit = tmp_path / f"toolkit{offset}"
    for name, text in STAND_IN.items():
        text = textwrap.dedent(text).replace("OFFSET = 0.0", f"OFFSET = {offset}")
        (toolkit / "davis2017").mkdir(parents=True, exist_ok=True)
        (toolkit / "davis2017" / name).write_text(text)
    crosscheck.main([str(toolkit), "--videos", "2", "--frames", "12", "--void", "--photos",
                     str(PHOTOS)])
    sys.path.remove(str(toolkit))
    return capsys.readouterr().out


def test_a_toolkit_that_agrees_shows_no_gap_and_one_that_does_not_shows_it(
        crosscheck, tmp_path, capsys):
    out = run(crosscheck, tmp_path, capsys, 0.0)
    gaps = re.findall(r"gap (\S+?);?$", out, re.M)
    assert len(gaps) == 2 and all(float(g) < 1e-12 for g in gaps), out
    assert "J 0.0e+00, F 0.0e+00" in out
    objects = int(re.search(r"memory on: (\d+) objects", out).group(1))
    frames = int(re.search(r"over (\d+) object-frames", out).group(1))
    assert objects > 0 and frames == 2 * objects * 10  # both modes, frames 1-10 of 12
    for name in [n for n in sys.modules if n.split(".")[0] == "davis2017"]:
        del sys.modules[name]
    out = run(crosscheck, tmp_path, capsys, 0.25)
    assert "J 0.0e+00, F 2.5e-01" in out, out
