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
from channelcut.validate import _raw_bytes, check_model

log = logging.getLogger(__name__)

# Protobuf cannot serialize a message of 2 GiB or more; past this size a model's large tensors
# go to one external data file next to it. A module constant so tests can lower it.
EXTERNAL_DATA_THRESHOLD = 2**31 - 1
# Tensors smaller than this stay inside the model file when the rest goes to external data.
EXTERNAL_TENSOR_MIN_BYTES = 1024


def load_model(source: onnx.ModelProto | str | Path, copy: bool = True,
               lazy: bool = False) -> onnx.ModelProto:
    """A model read from a path (with its external data), or a proto: a private copy of it,
    or with `copy=False` the caller's own proto, for readers that never modify it. Either is
    refused with a ChannelcutError when it is not valid ONNX (channelcut.validate).

    With `lazy`, a file's large external tensors are not read: they stay references to their
    data file, by absolute path (see `on_disk`), so a multi-GB model costs no memory until
    its weights are read (onnx-ir maps them); each reference is checked to lie inside its
    file and to fill its tensor's shape.
    """
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
        model = onnx.load_model(str(path), load_external_data=not lazy)
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
    if lazy:
        _refer_to_data_on_disk(model, path)
    check_model(model, str(path))
    return model


def initializer_inputs(model: onnx.ModelProto) -> list[str]:
    """Initializers that are also graph inputs, in input order: by ONNX's rules a caller may
    feed other values for them (old exporters, e.g. torch.onnx.export with
    keep_initializers_as_inputs, list every weight so)."""
    initializers = {t.name for t in model.graph.initializer}
    return [v.name for v in model.graph.input if v.name in initializers]


def without_initializer_inputs(model: onnx.ModelProto) -> onnx.ModelProto:
    """A copy of `model` whose graph inputs are only those a caller must feed: its
    initializers are constants (IR version 4 at least, the first that lets an initializer be
    no input)."""
    initializers = {t.name for t in model.graph.initializer}
    private = onnx.ModelProto()
    private.CopyFrom(model)
    kept = [v for v in private.graph.input if v.name not in initializers]
    del private.graph.input[:]
    private.graph.input.extend(kept)
    private.ir_version = max(private.ir_version, 4)
    return private


def on_disk(tensor: onnx.TensorProto) -> tuple[str, int, int] | None:
    """(file, offset, length) of a tensor whose data a lazy load left in its file, else None."""
    if not uses_external_data(tensor):
        return None
    info = dict((e.key, e.value) for e in tensor.external_data)
    location = info.get("location", "")
    if not os.path.isabs(location):
        return None  # a reference relative to a directory this proto does not know
    return location, int(info.get("offset") or 0), int(info.get("length") or 0)


def _refer_to_data_on_disk(model: onnx.ModelProto, path: Path) -> None:
    """Make the external references of the main graph's initializers (read from `path`)
    absolute, once checked. Small ones (shape constants: shape inference reads their values)
    and tensors elsewhere (attributes, subgraphs) are read in."""
    for tensor in model.graph.initializer:
        if uses_external_data(tensor):
            data_path, offset, length = _checked_reference(tensor, path)
            if length > EXTERNAL_TENSOR_MIN_BYTES:
                del tensor.external_data[:]
                for key, value in (("location", str(data_path.resolve())),
                                   ("offset", str(offset)), ("length", str(length))):
                    entry = tensor.external_data.add()
                    entry.key, entry.value = key, value
    for tensor in _all_tensors(model):
        if uses_external_data(tensor) and on_disk(tensor) is None:
            data_path, offset, length = _checked_reference(tensor, path)
            with open(data_path, "rb") as file:
                file.seek(offset)
                raw = file.read(length)
            del tensor.external_data[:]
            tensor.ClearField("data_location")
            tensor.raw_data = raw


def _checked_reference(tensor: onnx.TensorProto, path: Path) -> tuple[Path, int, int]:
    """(file, offset, length) of a tensor's data in a file beside the model at `path`; a
    ChannelcutError when the file is not there, or does not hold the whole tensor."""
    info = dict((e.key, e.value) for e in tensor.external_data)
    location = info.get("location", "")
    data_path = path.parent / location
    where = f"{path}: cannot read the model's external data (tensor {tensor.name!r} in " \
            f"{location!r}"
    fix = "keep the data file next to the model, under the name the model refers to, " \
          "and complete"
    if not location or os.path.isabs(location) or \
            os.path.normpath(location).split(os.sep)[0] == os.pardir:
        raise ChannelcutError(f"{where}: the location must be a file beside the model); "
                              "re-export the model")
    if not data_path.is_file():
        raise ChannelcutError(f"{where}: no such file); {fix}")
    offset, needed = int(info.get("offset") or 0), _raw_bytes(tensor)
    length = int(info["length"]) if info.get("length") else needed
    if length is None or offset + length > data_path.stat().st_size:
        raise ChannelcutError(f"{where}: offset {offset} and length {length} exceeds "
                              f"available data); {fix}")
    if needed is not None and length != needed:
        raise ChannelcutError(f"{where}: {length} bytes, its shape {list(tensor.dims)} "
                              f"needs {needed}); re-export the model")
    return data_path, offset, length


def save_model(model: onnx.ModelProto, path: str | Path, external_data: bool = False) -> None:
    """Write a model atomically. Its large tensors go to `<name>.data` beside it when it is
    past 2 GB, when it refers to data left on disk by a lazy load (copied file to file), or
    with `external_data` (the cut of a model that kept its weights apart keeps them apart)."""
    path = Path(path)
    _require_parent_dir(path)
    external = [t for t in _all_tensors(model) if uses_external_data(t)]
    if any(on_disk(t) is None for t in external):
        raise ChannelcutError(
            f"{path}: the model refers to external data that was never loaded; load it with "
            "channelcut.io.load_model(path) before saving"
        )
    if not external and not external_data and not needs_external_data(model):
        write_atomic(path, model.SerializeToString())
        return
    data_path = path.with_name(path.name + ".data")
    log.info("saving the model's tensors to %s", data_path)
    data_tmp = _temp_path(data_path)
    try:
        with _os_errors_named(data_path), open(data_tmp, "wb") as data_file:
            light = _with_data_in(model, data_file, data_path.name)
            try:
                model_bytes = light.SerializeToString()
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
        size = serialized_bytes(model)
    except (EncodeError, ValueError):  # protobuf refuses to even size a message past 2 GB
        return True
    return size > EXTERNAL_DATA_THRESHOLD


def serialized_bytes(model: onnx.ModelProto) -> int:
    """The size of the serialized model, at least (external data not counted): the raw data
    of its large initializers is counted from their shapes, without serializing it (protobuf's
    ByteSize serializes the whole message, a minute for a few GB)."""
    if not isinstance(model, onnx.ModelProto):
        return model.ByteSize()
    large = large_initializers(model)
    light = skeleton(model, large)
    # each tensor's raw_data field: tag, length and data; its message's length prefix grows
    return light.ByteSize() + sum(inline_bytes(t) + 16 for t in large.values()
                                      if not uses_external_data(t))


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


def large_initializers(model: onnx.ModelProto) -> dict[int, onnx.TensorProto]:
    """The main graph's initializers with raw data worth moving out, by position."""
    return {i: t for i, t in enumerate(model.graph.initializer)
            if uses_external_data(t) or (t.HasField("raw_data") and
                                         inline_bytes(t) >= EXTERNAL_TENSOR_MIN_BYTES)}


def inline_bytes(tensor: onnx.TensorProto) -> int:
    """Bytes of a tensor's raw data, from its shape where it can (reading `raw_data` from
    protobuf copies it)."""
    size = _raw_bytes(tensor)
    return len(tensor.raw_data) if size is None else size


def skeleton(model: onnx.ModelProto, moved: dict[int, onnx.TensorProto]) -> onnx.ModelProto:
    """A copy of `model` whose initializers at the positions in `moved` have no data (name,
    type and shape only): copying the model without copying its weights."""
    light = onnx.ModelProto()
    for field, value in model.ListFields():
        if field.name != "graph":
            _copy_field(light, field, value)
    for field, value in model.graph.ListFields():
        if field.name != "initializer":
            _copy_field(light.graph, field, value)
    for index, tensor in enumerate(model.graph.initializer):
        if index not in moved:
            light.graph.initializer.append(tensor)
            continue
        empty = light.graph.initializer.add(name=tensor.name, data_type=tensor.data_type,
                                            dims=tensor.dims, doc_string=tensor.doc_string)
        empty.metadata_props.extend(tensor.metadata_props)
    return light


def _copy_field(target, field, value) -> None:
    if hasattr(value, "extend"):  # a repeated field
        getattr(target, field.name).extend(value)
    elif hasattr(value, "CopyFrom"):  # a message
        getattr(target, field.name).CopyFrom(value)
    else:
        setattr(target, field.name, value)


def _with_data_in(model: onnx.ModelProto, data_file, location: str) -> onnx.ModelProto:
    """A copy of `model` whose large initializers refer to `data_file` (named `location`),
    where their data is written: raw data one tensor at a time, data left on disk by a lazy
    load copied from its file in large blocks. The caller's proto is not modified."""
    moved = large_initializers(model)
    light = skeleton(model, moved)
    offset = 0
    for index, tensor in moved.items():
        source = on_disk(tensor)
        if source is None:
            length = data_file.write(tensor.raw_data)
        else:
            length = _copy_range(*source, data_file)
        target = light.graph.initializer[index]
        for key, value in (("location", location), ("offset", str(offset)),
                           ("length", str(length))):
            entry = target.external_data.add()
            entry.key, entry.value = key, value
        target.data_location = onnx.TensorProto.EXTERNAL
        offset += length
    return light


COPY_BLOCK_BYTES = 64 * 2**20


def _copy_range(source: str, offset: int, length: int, data_file) -> int:
    """Append `length` bytes of `source` from `offset` to `data_file`, in large blocks."""
    with open(source, "rb") as file:
        file.seek(offset)
        left = length
        while left:
            block = file.read(min(left, COPY_BLOCK_BYTES))
            if not block:
                raise ChannelcutError(f"{source}: shorter than the model says; was it changed "
                                      "while channelcut ran?")
            data_file.write(block)
            left -= len(block)
    return length
