"""Checkpoints in Meta's format: round trip, variant detection, and clear errors."""

import os

import pytest
import torch

from sam_ros.model import SAM2, CheckpointError, build_sam2, get_config, save_checkpoint


@pytest.fixture(scope="module")
def tiny_checkpoint(tmp_path_factory):
    torch.manual_seed(0)
    model = SAM2(get_config("sam2.1_hiera_t"))
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0, 0.02)
    path = tmp_path_factory.mktemp("ckpt") / "sam2.1_hiera_tiny.pt"
    save_checkpoint(model, path)
    return path, model


def test_round_trip_and_auto_variant(tiny_checkpoint):
    path, model = tiny_checkpoint
    raw = torch.load(path, weights_only=True)
    assert list(raw) == ["model"]
    loaded = build_sam2("auto", checkpoint=path)
    assert loaded.config.name == "sam2.1_hiera_t"
    for key, value in model.state_dict().items():
        assert torch.equal(loaded.state_dict()[key], value), key
    assert not loaded.training
    explicit = build_sam2("sam2.1_hiera_t", checkpoint=path, image_size=512)
    assert explicit.image_size == 512


def test_missing_file(tmp_path):
    with pytest.raises(CheckpointError, match="no_such.pt: no such file"):
        build_sam2("auto", checkpoint=tmp_path / "no_such.pt")


def test_truncated_file(tiny_checkpoint, tmp_path):
    path, _ = tiny_checkpoint
    cut = tmp_path / "cut.pt"
    cut.write_bytes(path.read_bytes()[: os.path.getsize(path) // 2])
    with pytest.raises(CheckpointError, match="cut.pt: truncated or corrupt"):
        build_sam2("auto", checkpoint=cut)


class RunsCodeWhenUnpickled:
    def __reduce__(self):
        return (print, ("this would run at load time",))


@pytest.mark.parametrize("content,says", [
    (b"these are not weights\n" * 20, "a text file, not a checkpoint (it starts 'these are"),
    (b"version https://git-lfs.github.com/spec/v1\noid sha256:0\nsize 1\n", "Git LFS pointer"),
    (b"<!DOCTYPE html><html><body>404</body></html>", "a web page (HTML)"),
    (bytes(range(256)) * 3, "truncated or corrupt"),
    (b"", "empty file"),
])
def test_files_that_are_not_checkpoints_are_named(tmp_path, content, says):
    path = tmp_path / "sam2.1_hiera_tiny.pt"
    path.write_bytes(content)
    with pytest.raises(CheckpointError) as err:
        build_sam2("auto", checkpoint=path)
    assert str(path) in str(err.value) and says in str(err.value), str(err.value)


def test_pickle_that_needs_code_is_refused(tmp_path):
    path = tmp_path / "evil.pt"
    torch.save({"model": RunsCodeWhenUnpickled()}, path)
    with pytest.raises(CheckpointError, match="evil.pt: refused.*need code"):
        build_sam2("auto", checkpoint=path)


def test_other_variant_is_named(tiny_checkpoint):
    path, _ = tiny_checkpoint
    with pytest.raises(CheckpointError) as info:
        build_sam2("sam2.1_hiera_s", checkpoint=path)
    message = str(info.value)
    assert "sam2.1_hiera_tiny.pt" in message and "sam2.1_hiera_s" in message
    assert "missing keys" in message and "looks like sam2.1_hiera_t" in message
    with pytest.raises(CheckpointError, match="unexpected keys.*no_obj_embed_spatial"):
        build_sam2("sam2_hiera_t", checkpoint=path)


def test_other_model_and_wrong_shape(tiny_checkpoint, tmp_path):
    path, model = tiny_checkpoint
    other = tmp_path / "resnet.pt"
    torch.save({"model": {"conv1.weight": torch.zeros(3, 3)}}, other)
    with pytest.raises(CheckpointError, match="not a SAM 2 checkpoint"):
        build_sam2("auto", checkpoint=other)
    with pytest.raises(CheckpointError, match="1 missing keys|missing keys.*does not look like"):
        build_sam2("sam2.1_hiera_t", checkpoint=other)
    state = {k: v.clone() for k, v in model.state_dict().items()}
    state["no_mem_embed"] = torch.zeros(1, 1, 128)
    bad = tmp_path / "bad_shape.pt"
    torch.save({"model": state}, bad)
    with pytest.raises(CheckpointError, match=r"1 tensors of the wrong shape \(no_mem_embed: "
                       r"file \(1, 1, 128\) vs model \(1, 1, 256\)"):
        build_sam2("sam2.1_hiera_t", checkpoint=bad)
    not_dict = tmp_path / "list.pt"
    torch.save([torch.zeros(1)], not_dict)
    with pytest.raises(CheckpointError, match="expected \\{'model': state_dict\\}"):
        build_sam2("auto", checkpoint=not_dict)
