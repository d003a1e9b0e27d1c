"""Load and save ONNX models safely: clear errors, atomic writes, external data past 2 GB."""

from __future__ import annotations

import logging
import os
import secrets
from contextlib import contextmanager
from collections.abc import Callable, Iterator
from pathlib import Path

import onnx
from google.protobuf.message import DecodeError, EncodeError
from onnx.external_data_helper import uses_external_data

from channelcut.errors import ChannelcutError
from channelcut.validate import check_model

log = logging.getLogger(__name__)

# Protobuf cannot serialize a message of 2 GiB or more; past this size a model's large tensors
# go to one external data file next to it. A module constant so tests can lower it.
EXTERNAL_DATA_THRESHOLD = 2**31 - 1
# Tensors smaller than this stay inside the model file when the rest goes to external data.
EXTERNAL_TENSOR_MIN_BYTES = 1024


def load_model(source: onnx.ModelProto | str | Path, copy: bool = True) -> onnx.ModelProto:
    """A model read from a path (with its external data), or a proto: a private copy of it,
    or with `copy=False` the caller's own proto, for readers that never modify it. Either is
    refused with a ChannelcutError when it is not valid ONNX (channelcut.validate)."""
    if isinstance(source, onnx.ModelProto):
        check_model(source, "the model")
        if not copy:
            return source
        private = onnx.ModelProto()
        private.CopyFrom(source)
        return private
    if not isinstance(source, str | os.PathLike):
        raise ChannelcutError(
            f"model is a {type(source).__name__}; give an onnx.ModelProto, the path of an "
            ".onnx file, or (to channelcut.cut) a torch.nn.Module with example_inputs"
        )
    path = _require_file(Path(source), "model")
    hint = "re-export it from your framework, or check that the download finished"
    try:
        model = onnx.load_model(str(path), load_external_data=True)
    except DecodeError:
        raise ChannelcutError(
            f"{path}: not a valid ONNX model (truncated, or another format); {hint}"
        ) from None
    except (FileNotFoundError, onnx.checker.ValidationError, OSError, ValueError) as exc:
        # onnx raises these when a tensor's external data file is missing, out of range or
        # shorter than the model says.
        raise ChannelcutError(
            f"{path}: cannot read the model's external data ({error_line(exc)}); keep the "
            "data file next to the model, under the name the model refers to, and complete"
        ) from None
    check_model(model, str(path))
    return model


def save_model(model: onnx.ModelProto, path: str | Path) -> None:
    """Write a model atomically; past 2 GB its large tensors go to `<name>.data` beside it."""
    path = Path(path)
    _require_parent_dir(path)
    if any(uses_external_data(t) for t in _all_tensors(model)):
        raise ChannelcutError(
            f"{path}: the model refers to external data that was never loaded; load it with "
            "channelcut.io.load_model(path) before saving"
        )
    if not needs_external_data(model):
        write_atomic(path, model.SerializeToString())
        return
    data_path = path.with_name(path.name + ".data")
    log.info("model is over %d bytes: saving tensors to %s", EXTERNAL_DATA_THRESHOLD, data_path)
    data_tmp = _temp_path(data_path)
    try:
        with _os_errors_named(data_path), open(data_tmp, "wb") as data_file:
            with _tensors_moved_to(model, data_file, data_path.name):
                try:
                    model_bytes = model.SerializeToString()
                except (EncodeError, ValueError) as exc:
                    raise ChannelcutError(
                        f"{path}: the model is still over 2 GB without its large tensors "
                        f"({error_line(exc)}); it cannot be saved as ONNX"
                    ) from None
            data_file.flush()
            os.fsync(data_file.fileno())
        # The data file goes in place first, so a model file always finds the data it names;
        # if the model then fails to go in place, a data file that is new goes again.
        data_existed = data_path.exists()
        try:
            write_atomic(path, model_bytes,
                         before_replace=lambda: os.replace(data_tmp, data_path))
        except ChannelcutError:
            if not data_existed and not os.path.exists(data_tmp) and data_path.exists():
                data_path.unlink()
            raise
    finally:
        if os.path.exists(data_tmp):
            os.unlink(data_tmp)


def check_paths(input_path: str | Path, output_path: str | Path) -> None:
    """Refuse, before any work, an output that would overwrite the input or has no directory."""
    input_path, output_path = Path(input_path), Path(output_path)
    _require_file(input_path, "model")
    _require_parent_dir(output_path)
    if output_path.is_dir():
        raise ChannelcutError(f"{output_path}: is a directory; give a file name for the output")
    same = output_path.resolve() == input_path.resolve() or (
        output_path.exists() and os.path.samefile(input_path, output_path)
    )
    if same:
        raise ChannelcutError(
            f"{output_path}: is the input model itself; give another output path"
        )
    # Writing may also replace `<output>.data`; neither file may be the input's external data.
    existing = [p for p in (output_path, output_path.with_name(output_path.name + ".data"))
                if p.exists()]
    if existing:
        for data_file in _external_data_files(input_path):
            for target in existing:
                if data_file.exists() and os.path.samefile(data_file, target):
                    raise ChannelcutError(
                        f"{output_path}: writing it would replace {target}, the input model's "
                        "external data; give another output path"
                    )


def needs_external_data(model: onnx.ModelProto) -> bool:
    """Whether the model is too large for one protobuf file (see EXTERNAL_DATA_THRESHOLD)."""
    try:
        size = model.ByteSize()
    except (EncodeError, ValueError):  # protobuf refuses to even size a message past 2 GB
        return True
    return size > EXTERNAL_DATA_THRESHOLD


def write_atomic(
    path: str | Path, data: bytes, before_replace: Callable[[], None] | None = None
) -> None:
    """Write bytes to a temp file beside `path`, then rename it over `path` in one step."""
    path = Path(path)
    _require_parent_dir(path)
    tmp = _temp_path(path)
    try:
        with _os_errors_named(path):
            with open(tmp, "wb") as file:
                file.write(data)
                file.flush()
                os.fsync(file.fileno())
            if before_replace is not None:
                before_replace()
            os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def _external_data_files(model_path: Path) -> set[Path]:
    """The files a model keeps tensors in; empty when it has none or cannot be read."""
    try:
        model = onnx.load_model(str(model_path), load_external_data=False)
    except (DecodeError, OSError):
        return set()  # load_model reports an unreadable model properly later
    files = set()
    for tensor in _all_tensors(model):
        if uses_external_data(tensor):
            location = next((e.value for e in tensor.external_data if e.key == "location"), "")
            files.add(model_path.parent / location)
    return files


def error_line(exc: BaseException) -> str:
    """The first line of an exception's message, for error messages that must stay one line."""
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _require_file(path: Path, what: str) -> Path:
    """The path itself if it is a readable file, else a ChannelcutError that says what to do."""
    if not path.exists():
        raise ChannelcutError(f"{path}: no such file; check the {what} path")
    if path.is_dir():
        raise ChannelcutError(f"{path}: is a directory; give the path of the .onnx file")
    if not os.access(path, os.R_OK):
        raise ChannelcutError(f"{path}: not readable; check the file's permissions")
    return path


def _require_parent_dir(path: Path) -> None:
    parent = path.parent if str(path.parent) else Path(".")
    if not parent.is_dir():
        raise ChannelcutError(
            f"{path}: output directory {parent} does not exist; create it first"
        )


@contextmanager
def _os_errors_named(path: Path) -> Iterator[None]:
    """Turn a failed write (disk full, permissions) into one line naming the file."""
    try:
        yield
    except OSError as exc:
        raise ChannelcutError(f"{path}: cannot write ({exc.strerror or exc})") from None


def _temp_path(path: Path) -> str:
    """A fresh, empty temp file in `path`'s directory, so os.replace stays on one filesystem.

    Created with mode 0o666 less the umask, like any new file, so the renamed output gets the
    permissions the user expects (tempfile.mkstemp would make it 0o600).
    """
    with _os_errors_named(path):
        while True:
            tmp = path.parent / f".{path.name}.{secrets.token_hex(6)}.tmp"
            try:
                os.close(os.open(tmp, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o666))
            except FileExistsError:
                continue
            return str(tmp)


def _all_tensors(model: onnx.ModelProto) -> Iterator[onnx.TensorProto]:
    """Every tensor in the model: initializers and tensor attributes, subgraphs included."""

    def in_nodes(nodes) -> Iterator[onnx.TensorProto]:
        for node in nodes:
            for attr in node.attribute:
                if attr.HasField("t"):
                    yield attr.t
                yield from attr.tensors
                if attr.HasField("g"):
                    yield from in_graph(attr.g)
                for sub in attr.graphs:
                    yield from in_graph(sub)

    def in_graph(graph: onnx.GraphProto) -> Iterator[onnx.TensorProto]:
        yield from graph.initializer
        for sparse in graph.sparse_initializer:
            yield sparse.values
            yield sparse.indices
        yield from in_nodes(graph.node)

    yield from in_graph(model.graph)
    for function in model.functions:
        yield from in_nodes(function.node)


class _tensors_moved_to:
    """Context: large raw tensors live in `data_file` while inside; restored on exit.

    Moving data out of the caller's proto and back avoids a second in-memory copy of a
    multi-GB model; the proto is exactly as it was once the block ends, even on error.
    """

    def __init__(self, model: onnx.ModelProto, data_file, location: str) -> None:
        self.model, self.data_file, self.location = model, data_file, location
        self.moved: list[tuple[onnx.TensorProto, bytes, int | None]] = []

    def __enter__(self) -> None:
        offset = 0
        for tensor in _all_tensors(self.model):
            if not tensor.HasField("raw_data") or len(tensor.raw_data) < EXTERNAL_TENSOR_MIN_BYTES:
                continue
            raw = tensor.raw_data
            self.data_file.write(raw)
            location = tensor.data_location if tensor.HasField("data_location") else None
            self.moved.append((tensor, raw, location))
            del tensor.external_data[:]
            for key, value in (("location", self.location), ("offset", str(offset)),
                               ("length", str(len(raw)))):
                entry = tensor.external_data.add()
                entry.key, entry.value = key, value
            tensor.data_location = onnx.TensorProto.EXTERNAL
            tensor.ClearField("raw_data")
            offset += len(raw)

    def __exit__(self, *exc_info) -> None:
        for tensor, raw, location in self.moved:
            del tensor.external_data[:]
            if location is None:
                tensor.ClearField("data_location")
            else:
                tensor.data_location = location
            tensor.raw_data = raw
