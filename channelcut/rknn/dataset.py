"""RKNN's quantization dataset: a text file with one sample per line, read as inference feeds.

Each line names one file per model input, separated by spaces; paths are relative to the
dataset file. Images (jpg, jpeg, png, bmp) are decoded as RGB, as RKNN-Toolkit reads them,
and resized to the input's height and width; `.npy` files hold the array itself (NHWC for a
4-D input, with or without the batch axis, as `inference` takes it). Either way the sample is
raw: config's mean_values/std_values/reorder_channel are applied afterwards, exactly as
`inference` applies them.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx

from channelcut.errors import ChannelcutError
from channelcut.verify import graph_inputs

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp")


class MissingDecoder(ChannelcutError):
    """Neither OpenCV nor Pillow is installed to decode the dataset's images."""


def read_dataset(path: str | Path, model: onnx.ModelProto) -> list[list[np.ndarray]]:
    """Every sample of the dataset file: one raw array per model input, in input order."""
    dataset = Path(path)
    try:
        text = dataset.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ChannelcutError(f"dataset {dataset}: cannot read it "
                              f"({getattr(exc, 'strerror', None) or exc}); give the path of a "
                              "text file with one sample per line") from None
    inputs = graph_inputs(model)
    samples = []
    for number, line in enumerate(text.splitlines(), start=1):
        files = line.split()
        if not files:
            continue
        where = f"dataset {dataset} line {number}"
        if len(files) != len(inputs):
            raise ChannelcutError(f"{where}: {len(files)} file(s) for a model with "
                                  f"{len(inputs)} input(s); give one file per input, "
                                  "separated by spaces")
        samples.append([load_input(dataset.parent / name, value, where,
                                   " (paths are relative to the dataset file)")
                        for name, value in zip(files, inputs)])
    if not samples:
        raise ChannelcutError(f"dataset {dataset}: no samples; write one line per sample with "
                              "its image or .npy file(s), paths relative to the dataset file")
    return samples


def load_input(path: str | Path, value: onnx.ValueInfoProto, where: str,
               missing_hint: str = "") -> np.ndarray:
    """One raw input from an image or .npy file, checked against the input's static shape."""
    file = Path(path)
    shape = [d.dim_value for d in value.type.tensor_type.shape.dim]
    if not file.is_file():
        raise ChannelcutError(f"{where}: {file} does not exist{missing_hint}")
    suffix = file.suffix.lower()
    if suffix == ".npy":
        try:
            array = np.load(file, allow_pickle=False)
        except (OSError, ValueError) as exc:
            raise ChannelcutError(f"{where}: {file} is not a readable .npy file ({exc})") from None
    elif suffix in IMAGE_SUFFIXES:
        array = _read_image(file, shape, where)
    else:
        raise ChannelcutError(f"{where}: {file} is neither an image ({', '.join(IMAGE_SUFFIXES)})"
                              " nor a .npy file")
    nhwc = [shape[0], *shape[2:], shape[1]] if len(shape) == 4 else shape
    if list(array.shape) not in (nhwc, nhwc[1:]):
        layout = " (NHWC)" if len(shape) == 4 else ""
        raise ChannelcutError(f"{where}: {file} has shape {list(array.shape)}; input "
                              f"{value.name!r} takes {nhwc}{layout}")
    return array


def _read_image(file: Path, shape: list[int], where: str) -> np.ndarray:
    """An HWC image with the input's channels (3: RGB, 1: gray), resized to its H and W."""
    if len(shape) != 4 or shape[1] not in (1, 3):
        raise ChannelcutError(f"{where}: {file} is an image, but the input of shape {shape} "
                              "is not an image of 1 or 3 channels; give a .npy file")
    height, width = shape[2], shape[3]
    try:
        import cv2  # noqa: PLC0415 - only image datasets need it
    except ImportError:
        return _read_image_pil(file, shape, where)
    image = cv2.imread(str(file), cv2.IMREAD_GRAYSCALE if shape[1] == 1 else cv2.IMREAD_COLOR)
    if image is None:
        raise ChannelcutError(f"{where}: {file} cannot be decoded as an image")
    if shape[1] == 3:
        image = cv2.cvtColor(image, cv2.COLOR_BGR2RGB)
    if image.shape[:2] != (height, width):
        image = cv2.resize(image, (width, height), interpolation=cv2.INTER_LINEAR)
    return image.reshape(height, width, shape[1])


def _read_image_pil(file: Path, shape: list[int], where: str) -> np.ndarray:
    """The same with Pillow, where OpenCV (RKNN-Toolkit's decoder) is not installed."""
    try:
        from PIL import Image  # noqa: PLC0415 - optional, as OpenCV
    except ImportError:
        raise MissingDecoder(f"{where}: decoding {file} needs OpenCV: pip install "
                             "'channelcut[rknn]' (or give .npy files)") from None
    try:
        with Image.open(file) as opened:
            image = opened.convert("L" if shape[1] == 1 else "RGB")
            if image.size != (shape[3], shape[2]):
                image = image.resize((shape[3], shape[2]), Image.BILINEAR)
            return np.asarray(image).reshape(shape[2], shape[3], shape[1])
    except OSError as exc:
        raise ChannelcutError(f"{where}: {file} cannot be decoded as an image "
                              f"({exc})") from None
