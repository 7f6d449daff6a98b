"""load_image: every source type gives the same RGB uint8 [H, W, 3]; conversions checked against hand-computed
pixels."""

import io

import numpy as np
import PIL.Image
import pytest
import torch

from unified.errors import InputError, MediaDecodeError
from unified.media import load_image

RGB = np.array(
    [[[255, 0, 0], [0, 255, 0], [0, 0, 255]], [[10, 20, 30], [200, 100, 0], [255, 255, 255]]], np.uint8
)  # [H=2, W=3, 3]


def png_bytes(image: PIL.Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


@pytest.fixture
def rgb_png(tmp_path):
    path = tmp_path / "rgb.png"
    PIL.Image.fromarray(RGB).save(path)
    return path


def test_every_source_type_gives_the_same_pixels(rgb_png):
    sources = {
        "str path": str(rgb_png),
        "Path": rgb_png,
        "bytes": rgb_png.read_bytes(),
        "bytearray": bytearray(rgb_png.read_bytes()),
        "PIL": PIL.Image.fromarray(RGB),
        "numpy HWC": RGB,
        "torch HWC": torch.from_numpy(RGB.copy()),
        "torch CHW": torch.from_numpy(RGB.copy()).permute(2, 0, 1),
    }
    for name, source in sources.items():
        image = load_image(source)
        assert image.dtype == torch.uint8 and image.shape == (2, 3, 3), name
        assert image.is_contiguous(), name
        np.testing.assert_array_equal(image.numpy(), RGB, err_msg=name)


def test_result_shares_no_memory_with_the_source():
    array = RGB.copy()
    image = load_image(array)
    array[:] = 0
    assert image[0, 0].tolist() == [255, 0, 0]


@pytest.mark.parametrize("shape", [(2, 3), (2, 3, 1)])
def test_grey_is_repeated_into_three_channels(shape):
    grey = np.array([[0, 7, 255], [128, 1, 99]], np.uint8).reshape(shape)
    image = load_image(grey).numpy()
    expected = [[[0] * 3, [7] * 3, [255] * 3], [[128] * 3, [1] * 3, [99] * 3]]
    assert image.tolist() == expected


def test_grey_png_file(tmp_path):
    path = tmp_path / "grey.png"
    PIL.Image.fromarray(np.array([[0, 50], [200, 255]], np.uint8), mode="L").save(path)
    assert load_image(path).tolist() == [[[0] * 3, [50] * 3], [[200] * 3, [255] * 3]]


def test_alpha_is_composited_on_white():
    rgba = np.array([[[200, 100, 0, 128], [200, 100, 0, 255], [200, 100, 0, 0], [0, 0, 0, 1]]], np.uint8)
    # out = rgb * a / 255 + 255 * (255 - a) / 255, rounded:
    #   a=128: 200 -> 100.39 + 127 = 227.39 -> 227;  100 -> 50.20 + 127 = 177.20 -> 177;  0 -> 127
    #   a=255: unchanged;  a=0: white;  black at a=1: 254
    expected = [[[227, 177, 127], [200, 100, 0], [255, 255, 255], [254, 254, 254]]]
    assert load_image(rgba).tolist() == expected
    assert load_image(PIL.Image.fromarray(rgba, mode="RGBA")).tolist() == expected
    assert load_image(png_bytes(PIL.Image.fromarray(rgba, mode="RGBA"))).tolist() == expected
    assert load_image(torch.from_numpy(rgba).permute(2, 0, 1)).tolist() == expected  # CHW, 4 channels


def test_grey_with_alpha():
    la = np.array([[[100, 255], [100, 0], [100, 51]]], np.uint8)  # [1, 3, 2]
    # a=51: 100 * 0.2 + 255 * 0.8 = 20 + 204 = 224
    assert load_image(la).tolist() == [[[100] * 3, [255] * 3, [224] * 3]]


def test_palette_and_cmyk_are_converted():
    palette_image = PIL.Image.new("P", (2, 1))
    palette_image.putpalette([10, 20, 30, 250, 240, 230] + [0] * (256 * 3 - 6))
    palette_image.putdata([1, 0])
    assert load_image(png_bytes(palette_image)).tolist() == [[[250, 240, 230], [10, 20, 30]]]

    palette_image.info["transparency"] = 1  # index 1 fully transparent -> white
    assert load_image(palette_image).tolist() == [[[255, 255, 255], [10, 20, 30]]]

    cmyk = PIL.Image.new("CMYK", (2, 1))
    cmyk.putdata([(0, 0, 0, 0), (255, 0, 0, 0)])  # no ink -> white; full cyan -> (0, 255, 255)
    assert load_image(cmyk).tolist() == [[[255, 255, 255], [0, 255, 255]]]


def test_exif_orientation_is_applied():
    stored = PIL.Image.fromarray(RGB)  # 2 high, 3 wide
    exif = PIL.Image.Exif()
    exif[0x0112] = 6  # "rotate 90 degrees clockwise to display"
    buffer = io.BytesIO()
    stored.save(buffer, format="PNG", exif=exif)
    shown = load_image(buffer.getvalue()).numpy()
    np.testing.assert_array_equal(shown, np.rot90(RGB, k=-1))  # k=-1: clockwise


def test_torch_layout_rule_for_tiny_images():
    tensor = torch.arange(3 * 5 * 3, dtype=torch.uint8).reshape(3, 5, 3)  # CHW or HWC: a tie, CHW wins
    image = load_image(tensor)
    assert image.shape == (5, 3, 3)
    assert image[0, 0].tolist() == tensor[:, 0, 0].tolist()
    assert load_image(torch.zeros(5, 6, 3, dtype=torch.uint8)).shape == (5, 6, 3)  # 5 is no channel count
    assert load_image(torch.zeros(3, 6, 5, dtype=torch.uint8)).shape == (6, 5, 3)  # CHW
    assert load_image(torch.zeros(2, 6, 3, dtype=torch.uint8)).shape == (2, 6, 3)  # HWC: the 3 is channels
    assert load_image(torch.zeros(3, 6, 2, dtype=torch.uint8)).shape == (6, 2, 3)  # CHW: the 3 is channels
    assert load_image(torch.zeros(1, 6, 4, dtype=torch.uint8)).shape == (6, 4, 3)  # a tie: CHW, grey


def test_missing_file_names_the_path(tmp_path):
    missing = tmp_path / "nope.png"
    with pytest.raises(InputError, match="no such file") as info:
        load_image(missing)
    assert not isinstance(info.value, MediaDecodeError)
    assert str(missing) in str(info.value) and info.value.what == "image"
    with pytest.raises(InputError, match="not a file"):
        load_image(tmp_path)


def test_undecodable_bytes_and_files(tmp_path, rgb_png):
    with pytest.raises(MediaDecodeError, match="not a decodable image") as info:
        load_image(b"definitely not an image" * 10)
    assert "230 bytes" in str(info.value)
    with pytest.raises(MediaDecodeError, match="empty"):
        load_image(b"")
    truncated = tmp_path / "cut.png"
    truncated.write_bytes(rgb_png.read_bytes()[:40])
    with pytest.raises(MediaDecodeError) as info:
        load_image(truncated)
    assert str(truncated) in str(info.value)


@pytest.mark.parametrize(
    "source, type_name", [(3, "int"), ({"a": 1}, "dict"), (None, "NoneType"), (1.5, "float")]
)
def test_unsupported_types_name_the_type_and_what_is_accepted(source, type_name):
    with pytest.raises(InputError) as info:
        load_image(source)
    message = str(info.value)
    assert f"unsupported type {type_name}" in message
    assert "path" in message and "bytes" in message and "PIL" in message and "uint8" in message


@pytest.mark.parametrize(
    "array, reason",
    [
        (np.zeros((4, 4, 3), np.float32), "dtype uint8"),
        (np.zeros((4, 4, 3), np.uint16), "dtype uint8"),
        (np.zeros((4, 4, 5), np.uint8), "shape"),
        (np.zeros((2, 4, 4, 3), np.uint8), "shape"),
        (np.zeros((4,), np.uint8), "shape"),
        (np.zeros((0, 4, 3), np.uint8), "empty"),
        (torch.zeros(3, 4, 4), "torch.uint8"),
        (torch.zeros(8, 8, 8, dtype=torch.uint8), "C in 1..4"),
        (torch.zeros(1, 3, 4, 4, dtype=torch.uint8), "expected shape"),
    ],
)
def test_wrong_dtype_or_shape_is_an_input_error(array, reason):
    with pytest.raises(InputError, match=reason) as info:
        load_image(array)
    assert str(tuple(array.shape)) in str(info.value)  # the message shows what was given


@pytest.mark.parametrize("image_format", ["PNG", "JPEG", "GIF", "WEBP"])
def test_corrupted_images_raise_only_media_decode_errors(image_format):
    buffer = io.BytesIO()
    PIL.Image.fromarray(np.random.default_rng(0).integers(0, 256, (32, 48, 3), dtype=np.uint8)).save(
        buffer, format=image_format
    )
    data = buffer.getvalue()
    rng = np.random.default_rng(1)
    for _ in range(40):
        damaged = bytearray(data[: rng.integers(1, len(data) + 1)])
        for _ in range(rng.integers(0, 10)):
            damaged[rng.integers(len(damaged))] = rng.integers(256)
        try:
            assert load_image(bytes(damaged)).shape[2] == 3
        except MediaDecodeError:
            pass
