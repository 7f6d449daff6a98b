"""Images in, one layout out: `load_image(source) -> uint8 [H, W, 3]` RGB.

The layout is height, width, channel (HWC) so that an image is exactly one frame of a video
(`Video.frames` is [T, H, W, 3]); a model-side transform turns it into CHW floats when it needs to.

Accepted sources and how each is read:

    str / Path          a file PIL can open (png, jpeg, webp, gif: first frame, ...), EXIF rotation applied
    bytes / bytearray   the encoded file itself
    PIL.Image.Image     any mode; see "modes" below
    numpy uint8         [H, W] grey, [H, W, 1] grey, [H, W, 2] grey+alpha, [H, W, 3] RGB, [H, W, 4] RGBA
    torch uint8         [H, W] grey, or 3-D: CHW or HWC with 1-4 channels (ambiguity rule below)

Modes: grey is repeated into three channels; palette and CMYK go through PIL's own conversion to RGB;
an alpha channel is COMPOSITED ON WHITE (out = rgb * a + 255 * (1 - a), rounded), because an
image viewer shows transparent pixels as background and dropping alpha would expose whatever colour
the encoder left under them (often black). 16-bit and float PIL modes are clipped to 0..255 by PIL.

CHW vs HWC for a 3-D torch tensor: the channel dimension is whichever of the first and last has a
size in 1..4. When both do (a tiny image), a size of 3 marks the channels, and when that still does
not decide ([3, W, 3], [1, W, 4], ...) the tensor is CHW (torchvision's convention): permute such a
tiny HWC image to CHW yourself. numpy arrays are always HWC (PIL/OpenCV's convention).

The result is always a new, contiguous tensor that shares no memory with the source.

    >>> load_image(np.zeros((48, 64), np.uint8)).shape                 # grey -> RGB
    torch.Size([48, 64, 3])
    >>> load_image(torch.zeros(3, 48, 64, dtype=torch.uint8)).shape    # CHW -> HWC
    torch.Size([48, 64, 3])
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import numpy as np
import PIL.Image
import PIL.ImageOps
import torch

from unified.errors import InputError, MediaDecodeError
from unified.media.member import Member

ACCEPTED = (
    "a path (str or pathlib.Path), encoded bytes, a PIL.Image, a numpy uint8 array [H, W], [H, W, C] "
    "or a torch uint8 tensor [H, W], [C, H, W], [H, W, C] (C in 1..4)"
)


def load_image(source: Any, *, what: str = "image") -> torch.Tensor:
    """Read one image as an RGB uint8 tensor [H, W, 3] (see the module docstring for every source type).

    `what` names the input in error messages (the video loader passes e.g. "frames[3]").

        >>> load_image("cat.png").dtype
        torch.uint8

    Raises InputError for a missing file, an unsupported type or a wrong dtype/shape, and
    MediaDecodeError for bytes or a file that are not a decodable image.
    """
    if isinstance(source, Member):  # inside a tar shard: its bytes
        source = source.read()
    if isinstance(source, (str, Path)):
        return _from_pil(_open_path(Path(source), what), what, source)
    if isinstance(source, (bytes, bytearray, memoryview)):
        return _from_pil(_open_bytes(bytes(source), what), what, source)
    if isinstance(source, PIL.Image.Image):
        return _from_pil(source, what, source)
    if isinstance(source, np.ndarray):
        return _from_hwc(source, what)
    if isinstance(source, torch.Tensor):
        return _from_tensor(source, what)
    raise InputError(what, source, f"unsupported type {type(source).__name__}; expected {ACCEPTED}")


def _open_path(path: Path, what: str) -> PIL.Image.Image:
    if not path.exists():
        raise InputError(what, str(path), "no such file")
    if not path.is_file():
        raise InputError(what, str(path), "not a file")
    try:
        data = path.read_bytes()
    except OSError as err:
        raise InputError(what, str(path), f"cannot read the file: {err.strerror or err}") from err
    return _open_bytes(data, what, shown=str(path))


def _open_bytes(data: bytes, what: str, shown: Any = None) -> PIL.Image.Image:
    shown = data if shown is None else shown
    if not data:
        raise MediaDecodeError(what, shown, "empty input, not an image")
    try:
        image = PIL.Image.open(io.BytesIO(data))
        image.load()  # decode now: PIL is lazy and would fail later, outside this try
        # EXIF orientation: phone photos are stored sideways with a tag saying how to turn them.
        return PIL.ImageOps.exif_transpose(image)
    except PIL.Image.DecompressionBombError as err:
        raise MediaDecodeError(what, shown, f"image too large to decode safely: {err}") from err
    except (OSError, ValueError, SyntaxError, EOFError) as err:
        # PIL reports unknown formats as UnidentifiedImageError (an OSError) and truncated data as
        # OSError/SyntaxError/EOFError depending on the plugin.
        raise MediaDecodeError(what, shown, f"not a decodable image ({type(err).__name__}: {err})") from err


def _from_pil(image: PIL.Image.Image, what: str, shown: Any) -> torch.Tensor:
    mode = image.mode
    if image.width == 0 or image.height == 0:
        raise InputError(what, shown, f"empty image of size {image.width}x{image.height}")
    try:
        if mode == "P" and "transparency" in image.info:
            image = image.convert("RGBA")  # a palette with a transparent index carries alpha
        if image.mode in ("RGBA", "LA", "PA", "RGBa", "La"):
            array = np.asarray(image.convert("RGBA"))  # [H, W, 4]
            return _from_hwc(array, what)
        if image.mode != "RGB":
            image = image.convert("RGB")  # L, 1, P, CMYK, YCbCr, I;16, I, F ...
    except (ValueError, OSError) as err:
        raise InputError(what, shown, f"cannot convert PIL mode {mode!r} to RGB: {err}") from err
    return torch.from_numpy(np.array(image, dtype=np.uint8, copy=True))  # [H, W, 3]


def _from_hwc(array: np.ndarray, what: str) -> torch.Tensor:
    if array.dtype != np.uint8:
        raise InputError(
            what,
            f"array(shape={array.shape}, dtype={array.dtype})",
            "expected dtype uint8 (0..255); convert floats in [0, 1] with (x * 255).round().astype(np.uint8)",
        )
    if array.ndim == 2:
        array = array[:, :, None]  # [H, W] -> [H, W, 1]
    if array.ndim != 3 or array.shape[2] not in (1, 2, 3, 4):
        raise InputError(
            what, f"array(shape={array.shape})", "expected shape [H, W] or [H, W, C] with C in 1, 2, 3, 4"
        )
    if array.shape[0] == 0 or array.shape[1] == 0:
        raise InputError(what, f"array(shape={array.shape})", "empty image (zero height or width)")
    return torch.from_numpy(_to_rgb(array))


def _to_rgb(array: np.ndarray) -> np.ndarray:
    """uint8 [H, W, C], C in 1..4 -> new contiguous uint8 [H, W, 3]; the last channel of C=2/4 is alpha."""
    channels = array.shape[2]
    colour = array[:, :, :-1] if channels in (2, 4) else array  # [H, W, 1 or 3]
    if channels in (2, 4):
        # Composite on white in integer arithmetic: rgb * a / 255 + 255 * (255 - a) / 255, rounded half up.
        alpha = array[:, :, -1:].astype(np.uint32)  # [H, W, 1]
        colour = (colour.astype(np.uint32) * alpha + 255 * (255 - alpha) + 127) // 255
    colour = colour.astype(np.uint8, copy=False)
    if colour.shape[2] == 1:
        colour = np.repeat(colour, 3, axis=2)  # grey -> [H, W, 3]
    return np.array(colour, dtype=np.uint8, order="C", copy=True)


def _from_tensor(tensor: torch.Tensor, what: str) -> torch.Tensor:
    shown = f"tensor(shape={tuple(tensor.shape)}, dtype={tensor.dtype})"
    if tensor.dtype != torch.uint8:
        raise InputError(
            what, shown, "expected dtype torch.uint8; convert floats in [0, 1] with (x * 255).round().byte()"
        )
    if tensor.ndim == 3:
        first, last = tensor.shape[0], tensor.shape[2]
        if not (1 <= first <= 4 or 1 <= last <= 4):
            raise InputError(what, shown, "3-D tensors must be [C, H, W] or [H, W, C] with C in 1..4")
        if 1 <= last <= 4 and (not 1 <= first <= 4 or (last == 3 and first != 3)):
            pass  # HWC already
        else:
            tensor = tensor.permute(1, 2, 0)  # CHW -> HWC
    elif tensor.ndim != 2:
        raise InputError(what, shown, "expected shape [H, W], [C, H, W] or [H, W, C]")
    return _from_hwc(tensor.detach().cpu().numpy(), what)
