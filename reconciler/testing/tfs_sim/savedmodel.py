"""Reading a SavedModel folder the way the simulator needs: "is it loadable?" and its signatures.

TensorFlow is not a dependency. The few SavedModel messages needed (SavedModel, MetaGraphDef,
MetaInfoDef, SignatureDef, TensorInfo, TensorShapeProto) are declared here at run time with the
protobuf runtime, using TensorFlow's own field numbers (tensorflow/core/protobuf/
saved_model.proto, meta_graph.proto, tensor_shape.proto); every other field is kept as an
unknown field, so a real ``saved_model.pb`` parses.

What makes a version fail to load, checked in this order (messages as TensorFlow's loader):

1. the folder has neither ``saved_model.pb`` nor ``saved_model.pbtxt``: NOT_FOUND
   ``Could not find SavedModel .pb or .pbtxt at supplied export directory path: DIR``;
2. the file is *corrupt*: empty, unreadable, or not parseable as a ``SavedModel`` message
   (binary protobuf for ``.pb``, text format for ``.pbtxt``), or it holds no meta graph:
   DATA_LOSS ``Can't parse FILE as binary proto`` (``... as text proto`` for ``.pbtxt``);
3. no meta graph is tagged ``serve``: NOT_FOUND
   ``Could not find meta graph def matching supplied tags: { serve }``.

Variables are not checked. Signatures come from the ``serve`` meta graph's ``signature_def``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from google.protobuf import descriptor_pb2, descriptor_pool, message, message_factory, text_format

from reconciler.testing.tfs_sim.errors import Code, TfsError

SERVE_TAG = "serve"
PREDICT_METHOD = "tensorflow/serving/predict"

# tensorflow/core/framework/types.proto, the common ones.
DTYPE_NAMES: dict[int, str] = {
    0: "DT_INVALID",
    1: "DT_FLOAT",
    2: "DT_DOUBLE",
    3: "DT_INT32",
    4: "DT_UINT8",
    5: "DT_INT16",
    6: "DT_INT8",
    7: "DT_STRING",
    8: "DT_COMPLEX64",
    9: "DT_INT64",
    10: "DT_BOOL",
    14: "DT_BFLOAT16",
    17: "DT_UINT16",
    18: "DT_COMPLEX128",
    19: "DT_HALF",
    20: "DT_RESOURCE",
    21: "DT_VARIANT",
    22: "DT_UINT32",
    23: "DT_UINT64",
}


@dataclass(frozen=True)
class TensorSpec:
    """One input or output of a signature: its graph tensor name, dtype and shape."""

    name: str
    dtype: int
    dims: tuple[int, ...] | None  # None: unknown rank

    def to_json(self) -> dict[str, Any]:
        """As TFS renders a TensorInfo in metadata JSON."""
        shape: dict[str, Any] = (
            {"dim": [], "unknown_rank": True}
            if self.dims is None
            else {"dim": [{"size": str(d), "name": ""} for d in self.dims], "unknown_rank": False}
        )
        return {
            "dtype": DTYPE_NAMES.get(self.dtype, f"DT_{self.dtype}"),
            "tensor_shape": shape,
            "name": self.name,
        }


@dataclass(frozen=True)
class Signature:
    """A SignatureDef: named inputs and outputs and the method name."""

    inputs: dict[str, TensorSpec]
    outputs: dict[str, TensorSpec]
    method_name: str

    def to_json(self) -> dict[str, Any]:
        return {
            "inputs": {k: v.to_json() for k, v in sorted(self.inputs.items())},
            "outputs": {k: v.to_json() for k, v in sorted(self.outputs.items())},
            "method_name": self.method_name,
            "defaults": {},
        }


@dataclass(frozen=True)
class SavedModelInfo:
    """What the simulator keeps of a loaded version."""

    path: Path
    signatures: dict[str, Signature]

    def metadata_json(self) -> dict[str, Any]:
        """The ``signature_def`` part of a metadata answer (a SignatureDefMap)."""
        return {"signature_def": {k: v.to_json() for k, v in sorted(self.signatures.items())}}


def _field(
    name: str, number: int, ftype: int, *, repeated: bool = False, type_name: str = ""
) -> descriptor_pb2.FieldDescriptorProto:
    label = (
        descriptor_pb2.FieldDescriptorProto.LABEL_REPEATED
        if repeated
        else descriptor_pb2.FieldDescriptorProto.LABEL_OPTIONAL
    )
    field = descriptor_pb2.FieldDescriptorProto(name=name, number=number, type=ftype, label=label)  # type: ignore[arg-type]
    if type_name:
        field.type_name = type_name
    return field


def _map_entry(name: str, value_type: str) -> descriptor_pb2.DescriptorProto:
    fd = descriptor_pb2.FieldDescriptorProto
    entry = descriptor_pb2.DescriptorProto(name=name)
    entry.field.extend(
        [
            _field("key", 1, fd.TYPE_STRING),
            _field("value", 2, fd.TYPE_MESSAGE, type_name=value_type),
        ]
    )
    entry.options.map_entry = True
    return entry


def _build_saved_model_class() -> type[message.Message]:
    fd = descriptor_pb2.FieldDescriptorProto
    pkg = ".tfs_sim_savedmodel."
    file = descriptor_pb2.FileDescriptorProto(
        name="reconciler/testing/tfs_sim/savedmodel_subset.proto",
        package="tfs_sim_savedmodel",
        syntax="proto3",
    )
    dim = descriptor_pb2.DescriptorProto(name="Dim")
    dim.field.extend([_field("size", 1, fd.TYPE_INT64), _field("name", 2, fd.TYPE_STRING)])
    shape = descriptor_pb2.DescriptorProto(name="TensorShapeProto")
    shape.nested_type.append(dim)
    shape.field.extend(
        [
            _field(
                "dim", 2, fd.TYPE_MESSAGE, repeated=True, type_name=pkg + "TensorShapeProto.Dim"
            ),
            _field("unknown_rank", 3, fd.TYPE_BOOL),
        ]
    )
    tensor_info = descriptor_pb2.DescriptorProto(name="TensorInfo")
    tensor_info.field.extend(
        [
            _field("name", 1, fd.TYPE_STRING),
            _field("dtype", 2, fd.TYPE_INT32),
            _field("tensor_shape", 3, fd.TYPE_MESSAGE, type_name=pkg + "TensorShapeProto"),
        ]
    )
    sig = descriptor_pb2.DescriptorProto(name="SignatureDef")
    sig.nested_type.extend(
        [
            _map_entry("InputsEntry", pkg + "TensorInfo"),
            _map_entry("OutputsEntry", pkg + "TensorInfo"),
        ]
    )
    sig.field.extend(
        [
            _field(
                "inputs",
                1,
                fd.TYPE_MESSAGE,
                repeated=True,
                type_name=pkg + "SignatureDef.InputsEntry",
            ),
            _field(
                "outputs",
                2,
                fd.TYPE_MESSAGE,
                repeated=True,
                type_name=pkg + "SignatureDef.OutputsEntry",
            ),
            _field("method_name", 3, fd.TYPE_STRING),
        ]
    )
    meta_info = descriptor_pb2.DescriptorProto(name="MetaInfoDef")
    meta_info.field.append(_field("tags", 4, fd.TYPE_STRING, repeated=True))
    meta_graph = descriptor_pb2.DescriptorProto(name="MetaGraphDef")
    meta_graph.nested_type.append(_map_entry("SignatureDefEntry", pkg + "SignatureDef"))
    meta_graph.field.extend(
        [
            _field("meta_info_def", 1, fd.TYPE_MESSAGE, type_name=pkg + "MetaInfoDef"),
            _field(
                "signature_def",
                5,
                fd.TYPE_MESSAGE,
                repeated=True,
                type_name=pkg + "MetaGraphDef.SignatureDefEntry",
            ),
        ]
    )
    saved_model = descriptor_pb2.DescriptorProto(name="SavedModel")
    saved_model.field.extend(
        [
            _field("saved_model_schema_version", 1, fd.TYPE_INT64),
            _field(
                "meta_graphs", 2, fd.TYPE_MESSAGE, repeated=True, type_name=pkg + "MetaGraphDef"
            ),
        ]
    )
    file.message_type.extend([shape, tensor_info, sig, meta_info, meta_graph, saved_model])
    pool = descriptor_pool.DescriptorPool()
    pool.Add(file)
    return message_factory.GetMessageClass(
        pool.FindMessageTypeByName("tfs_sim_savedmodel.SavedModel")
    )


SavedModelMessage: type[message.Message] = _build_saved_model_class()
"""The ``SavedModel`` message subset (a protobuf class): parse, edit and re-serialise a
``saved_model.pb`` in tests; fields not declared here are kept as unknown fields."""
_SAVED_MODEL = SavedModelMessage  # the name tests first used


def _tensor_spec(info: Any) -> TensorSpec:
    shape = info.tensor_shape
    dims = None if shape.unknown_rank else tuple(int(d.size) for d in shape.dim)
    return TensorSpec(name=str(info.name), dtype=int(info.dtype), dims=dims)


def parse_saved_model(data: bytes, *, text: bool, filename: str) -> SavedModelInfo:
    """Parse the bytes of a ``saved_model.pb`` (or ``.pbtxt`` when ``text``); see module doc."""
    proto: Any = SavedModelMessage()
    kind = "text" if text else "binary"
    corrupt = TfsError(Code.DATA_LOSS, f"Can't parse {filename} as {kind} proto")
    if not data:
        raise corrupt
    try:
        if text:
            text_format.Parse(data.decode("utf-8"), proto, allow_unknown_field=True)
        else:
            proto.ParseFromString(data)
    except (message.DecodeError, text_format.ParseError, UnicodeDecodeError, ValueError) as e:
        raise corrupt from e
    if not proto.meta_graphs:
        raise corrupt
    for graph in proto.meta_graphs:
        if SERVE_TAG in graph.meta_info_def.tags:
            signatures = {
                str(name): Signature(
                    inputs={str(k): _tensor_spec(v) for k, v in sig.inputs.items()},
                    outputs={str(k): _tensor_spec(v) for k, v in sig.outputs.items()},
                    method_name=str(sig.method_name),
                )
                for name, sig in graph.signature_def.items()
            }
            return SavedModelInfo(path=Path(filename).parent, signatures=signatures)
    raise TfsError(
        Code.NOT_FOUND,
        "Could not find meta graph def matching supplied tags: { serve }. To inspect available "
        "tag-sets in the SavedModel, please use the SavedModel CLI: `saved_model_cli`",
    )


def load_saved_model(export_dir: Path, shown_as: str = "") -> SavedModelInfo:
    """Check that ``export_dir`` holds a loadable SavedModel and read its signatures.

    Raises TfsError with TensorFlow's code and message when the version would fail to load;
    messages name the folder as ``shown_as`` (the path in TFS's config) when given.
    """
    shown = shown_as or str(export_dir)
    for filename, text in (("saved_model.pb", False), ("saved_model.pbtxt", True)):
        path = export_dir / filename
        if path.is_file():
            try:
                data = path.read_bytes()
            except OSError as e:
                kind = "text" if text else "binary"
                raise TfsError(Code.DATA_LOSS, f"Can't parse {path} as {kind} proto") from e
            info = parse_saved_model(data, text=text, filename=f"{shown.rstrip('/')}/{filename}")
            return SavedModelInfo(path=export_dir, signatures=info.signatures)
    raise TfsError(
        Code.NOT_FOUND,
        "Could not find SavedModel .pb or .pbtxt at supplied export directory path: "
        f"{shown}. Check that the directory exists and that you have the right "
        "permissions for accessing it.",
    )
