"""The inputs verification runs on: the user's data (an .npz file, a folder of .npy files, or
a list of feeds) or seeded random input sets (channelcut.verify.input_sets)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx

from channelcut import io
from channelcut.errors import ChannelcutError
from channelcut.verify import INPUT_SETS, graph_inputs, input_sets


@dataclass(frozen=True)
class Checking:
    """What verification runs on: the user's inputs (a path or a list of feeds), or seeded
    random input sets (channelcut.verify.input_sets); `samples` caps the user's, or counts the
    random ones (default: verify.INPUT_SETS)."""

    inputs: str | Path | list[dict[str, np.ndarray]] | None = None
    samples: int | None = None
    seed: int = 0
    # declared input ranges (name -> (lo, hi)): the random sets are drawn inside them
    ranges: dict[str, tuple[np.ndarray, np.ndarray]] | None = None

    def feeds(self, model: onnx.ModelProto, shapes: dict[str, tuple[int, ...]]
              ) -> list[dict[str, np.ndarray]]:
        if self.inputs is None:
            return input_sets(model, shapes, self.seed, self.samples, self.ranges)
        if isinstance(self.inputs, str | Path):
            feeds = load_inputs(self.inputs, model, shapes)
        else:
            feeds = [_checked_feed(feed, model, shapes, "verify_inputs") for feed in self.inputs]
            if not feeds:
                raise ChannelcutError("verify_inputs is empty; give at least one sample")
        return feeds[: self.samples] if self.samples else feeds

    def describe(self) -> str:
        """Where the inputs came from, for the report."""
        if self.inputs is None:
            count = self.samples or len(INPUT_SETS)
            large = " (one of large magnitude)" if count >= len(INPUT_SETS) else ""
            plural = "s" if count > 1 else ""
            inside = " inside the declared input ranges" if self.ranges else ""
            return f"{count} seeded random input set{plural}{large}{inside}, seed {self.seed}"
        source = str(self.inputs) if isinstance(self.inputs, str | Path) else "the caller's"
        return f"{source} inputs" + (f", first {self.samples} samples" if self.samples else "")


def load_inputs(path: str | Path, model: onnx.ModelProto, shapes: dict[str, tuple[int, ...]]
                ) -> list[dict[str, np.ndarray]]:
    """Samples from an .npz file or a folder of .npy files, one feed per sample.

    Arrays are named after the model's inputs (`images.npy`, or the key `images`); each holds
    one sample at the input's shape or several stacked on a new first axis. A folder for a
    model with one input may also hold any .npy files: each is one sample (or a stack), taken
    in name order.
    """
    path = Path(path)
    names = [v.name for v in graph_inputs(model)]
    try:
        if path.is_dir():
            files = sorted(path.glob("*.npy"))
            if not files:
                raise ChannelcutError(f"{path}: holds no .npy files; give a folder with one "
                                      "per input (named after it), or an .npz file")
            arrays = {f.stem: np.load(f, allow_pickle=False) for f in files}
            if not set(names) <= set(arrays) and len(names) == 1:
                stacks = [_stacked(a, shapes[names[0]], f"{path / k}.npy")
                          for k, a in arrays.items()]
                return [{names[0]: sample} for stack in stacks for sample in stack]
        elif path.is_file():
            with np.load(path, allow_pickle=False) as data:
                if not isinstance(data, np.lib.npyio.NpzFile):
                    raise ChannelcutError(f"{path}: is one array; give an .npz file with one "
                                          f"array per input ({', '.join(names)})")
                arrays = {k: data[k] for k in data.files}
        else:
            raise ChannelcutError(f"{path}: no such file or folder; give an .npz file or a "
                                  "folder of .npy files")
    except (OSError, ValueError) as exc:
        raise ChannelcutError(f"{path}: cannot be read as NumPy data ({io.error_line(exc)}); "
                              "give an .npz file or a folder of .npy files") from None
    missing = [n for n in names if n not in arrays]
    if missing:
        raise ChannelcutError(f"{path}: has no array for input {missing[0]!r}; it has "
                              f"{', '.join(sorted(arrays)) or 'none'}, the model's inputs are "
                              f"{', '.join(names)}")
    stacks = {n: _stacked(arrays[n], shapes[n], f"{path}: {n}") for n in names}
    counts = {len(stack) for stack in stacks.values()}
    if len(counts) > 1:
        raise ChannelcutError(f"{path}: the inputs hold different numbers of samples "
                              f"({', '.join(f'{n} {len(s)}' for n, s in stacks.items())})")
    feeds = [{n: stacks[n][k] for n in names} for k in range(counts.pop())]
    return [_checked_feed(feed, model, shapes, str(path)) for feed in feeds]


def _stacked(array: np.ndarray, shape: tuple[int, ...], where: str) -> list[np.ndarray]:
    """One sample at `shape`, or several stacked on a new first axis, as a list of samples."""
    if tuple(array.shape) == tuple(shape):
        return [array]
    if array.ndim == len(shape) + 1 and tuple(array.shape[1:]) == tuple(shape):
        return list(array)
    raise ChannelcutError(f"{where}: shape {list(array.shape)} is neither the input's "
                          f"{list(shape)} nor N samples of it; give data of that shape (or set "
                          "the input's shape to the data's)")


def _checked_feed(feed: dict[str, np.ndarray], model: onnx.ModelProto,
                  shapes: dict[str, tuple[int, ...]], where: str) -> dict[str, np.ndarray]:
    """The feed at each input's dtype, after checking its names and shapes."""
    checked = {}
    for value in graph_inputs(model):
        if value.name not in feed:
            raise ChannelcutError(f"{where}: a sample has no value for input {value.name!r}")
        array = np.asarray(feed[value.name])
        if tuple(array.shape) != tuple(shapes[value.name]):
            raise ChannelcutError(f"{where}: input {value.name!r} has shape "
                                  f"{list(array.shape)}, the model runs at "
                                  f"{list(shapes[value.name])}")
        dtype = np.dtype(onnx.helper.tensor_dtype_to_np_dtype(value.type.tensor_type.elem_type))
        if not np.can_cast(array.dtype, dtype, casting="same_kind"):
            raise ChannelcutError(f"{where}: input {value.name!r} is {array.dtype}, the model "
                                  f"takes {dtype}")
        checked[value.name] = array.astype(dtype, copy=False)
    return checked
