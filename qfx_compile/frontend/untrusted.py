"""Checks on the untrusted parts of a model file before anything is built from them.

* :func:`check_text_fields`: every protobuf ``string`` field (names, op types, domains, attribute
  names and strings, metadata) must be UTF-8; python-protobuf hands invalid UTF-8 in a proto2
  ``string`` over as ``bytes``, which would otherwise travel into the compiler as a non-string.
* :func:`load_vectors_npz`: the ``qfx.vectors`` metadata is a base64 ``.npz`` (a zip file, possibly
  deflated): its declared member sizes and array headers are checked against
  :data:`MAX_VECTOR_BYTES` before anything is decompressed, so a small file cannot expand into gigabytes.
"""
from __future__ import annotations

import base64
import binascii
import io
import zipfile

import numpy as np
from google.protobuf.descriptor import FieldDescriptor

from .errors import ModelError

#: Test vectors take at most this many bytes once decompressed (both arrays together).
MAX_VECTOR_BYTES = 256 << 20
#: Zip members of the vectors .npz: input_raw.npy, output_raw.npy (and nothing else of any size).
_MEMBERS = ("input_raw.npy", "output_raw.npy")


def _shown(b: bytes) -> str:
    r = repr(b)  # printable ASCII: no escape sequence reaches the terminal
    return r if len(r) <= 64 else r[:60] + "...'"


def _repeated(fd) -> bool:
    r = getattr(fd, "is_repeated", None)
    return bool(r) if r is not None else fd.label == FieldDescriptor.LABEL_REPEATED


def check_text_fields(model, path: str) -> None:
    """Raise ModelError naming the first few string fields that are not UTF-8 text."""
    bad: list[str] = []
    stack = [("model", model)]
    while stack and len(bad) < 5:
        where, msg = stack.pop()
        for fd, value in msg.ListFields():
            if fd.type == FieldDescriptor.TYPE_MESSAGE:
                if _repeated(fd):
                    if fd.message_type.GetOptions().map_entry:
                        continue
                    stack.extend((f"{where}.{fd.name}[{i}]", m) for i, m in enumerate(value))
                else:
                    stack.append((f"{where}.{fd.name}", value))
            elif fd.type == FieldDescriptor.TYPE_STRING:
                vals = value if _repeated(fd) else [value]
                for v in vals:
                    if isinstance(v, bytes):
                        bad.append(f"{where}.{fd.name} = {_shown(v)}")
                        break
    if bad:
        raise ModelError(f"text fields must be UTF-8, these are not: {'; '.join(bad)}. Rename these nodes or "
                         f"tensors (names, op types and domains are text) and export the model again", path=path)


def load_vectors_npz(text: str, fix: str, path: str) -> tuple[np.ndarray, np.ndarray]:
    """(input_raw, output_raw) from the base64 .npz in ``text``, with bounded memory."""
    def bad(why: str) -> ModelError:
        return ModelError(f"metadata qfx.vectors is not a base64 .npz with input_raw and output_raw ({why}); {fix}",
                          path=path)

    try:
        blob = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError) as e:
        raise bad(f"base64: {e}") from None
    try:
        zf = zipfile.ZipFile(io.BytesIO(blob))
        infos = zf.infolist()
    except (zipfile.BadZipFile, zipfile.LargeZipFile, ValueError, OSError, EOFError) as e:
        raise bad(f"not a zip file: {e}") from None
    if len(infos) > 8:
        raise bad(f"{len(infos)} members") from None
    declared = sum(i.file_size for i in infos)
    if declared > MAX_VECTOR_BYTES:
        raise ModelError(f"metadata qfx.vectors would take {declared:,} bytes once decompressed, more than the "
                         f"{MAX_VECTOR_BYTES:,} allowed; export fewer test vectors; {fix}", path=path)
    arrays = {}
    for name in _MEMBERS:
        key = name[:-4]
        try:
            with zf.open(name) as f:
                version = np.lib.format.read_magic(f)
                if version == (1, 0):
                    shape, fortran, dtype = np.lib.format.read_array_header_1_0(f)
                else:
                    shape, fortran, dtype = np.lib.format.read_array_header_2_0(f)
                if dtype.hasobject:
                    raise ValueError("object arrays are not allowed")
                n = int(np.prod(shape, dtype=object)) * dtype.itemsize
                if n > MAX_VECTOR_BYTES:
                    raise ModelError(f"metadata qfx.vectors {key} would take {n:,} bytes, more than the "
                                     f"{MAX_VECTOR_BYTES:,} allowed; export fewer test vectors; {fix}", path=path)
            with zf.open(name) as f:
                # read at most the declared size (+ header): a member that inflates beyond it is refused
                data = f.read(n + 65536 + 1)
                if len(data) > n + 65536:
                    raise ValueError("member larger than its header says")
            arrays[key] = np.load(io.BytesIO(data), allow_pickle=False)
        except ModelError:
            raise
        except KeyError:
            raise bad(f"no {key}") from None
        except Exception as e:  # zlib.error, BadZipFile (CRC), ValueError from numpy's header parser, EOFError
            raise bad(f"{key}: {type(e).__name__}: {e}") from None
    return arrays["input_raw"], arrays["output_raw"]


def weight_arrays(path: str) -> list[tuple[str, str, int, int]]:
    """``(node, initializer, width, elements)`` of every constant a FixedPoint or QONNX Quant casts, read
    from the protobuf alone (no array is decoded or quantized): the input of a size check that runs before
    the frontend builds anything large. K-hot constants (``k_hot`` set: adders, not memory) are left out,
    but for their fixed-point rows (K = 0, Mix and Match).
    Returns [] for a file that does not parse (the frontend then says what is wrong with it)."""
    import os

    import onnx

    try:
        if os.path.getsize(path) > (2 << 30):
            return []
        m = onnx.ModelProto()
        with open(path, "rb") as f:
            m.ParseFromString(f.read())
    except Exception:
        return []
    inits = {t.name: t for t in m.graph.initializer}
    out = []
    for n in m.graph.node:
        if not len(n.input) or n.input[0] not in inits:
            continue
        t = inits[n.input[0]]
        elements = 1
        for d in t.dims:
            elements *= max(int(d), 0)
        width = None
        if n.op_type == "FixedPoint":
            attrs = {a.name: a for a in n.attribute}
            if "k_hot" in attrs:  # its fixed-point rows (K = 0) only: a lower bound of the memory
                ks = list(attrs["k_hot"].ints)
                plain = sum(1 for k in ks if k == 0)
                if not plain:
                    continue
                elements = elements * plain // len(ks)
            if "width" in attrs:
                width = int(attrs["width"].i)
        elif n.op_type in ("Quant", "IntQuant") and len(n.input) > 3 and n.input[3] in inits:
            try:
                from onnx import numpy_helper

                b = numpy_helper.to_array(inits[n.input[3]]).reshape(-1)
                width = int(b[0]) if b.size == 1 else None
            except Exception:
                width = None
        if width is not None and 1 <= width <= 1024 and elements > 0:
            out.append((str(n.name), str(t.name), width, elements))
    return out
