"""Bytes the emulator produces or inspects: the cover PNG, uploaded photos and multipart bodies.

Stdlib only (``zlib``, ``struct``, ``email``) so importing the emulator stays cheap and needs no
imaging library.
"""

from __future__ import annotations

import json
import struct
import zlib
from dataclasses import dataclass
from email.message import EmailMessage
from email.parser import BytesParser
from email.policy import HTTP

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"

_COVER_PNG: bytes | None = None


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    crc = zlib.crc32(kind + data) & 0xFFFFFFFF
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", crc)


def make_png(width: int = 256, height: int = 256) -> bytes:
    """Return a valid RGB PNG (a colour gradient) of the given size, with correct CRCs.

    :param width: image width in pixels (1-65535).
    :param height: image height in pixels (1-65535).
    """
    if not (0 < width <= 65535 and 0 < height <= 65535):
        raise ValueError(f"PNG size {width}x{height} out of range")
    rows = bytearray()
    for y in range(height):
        rows.append(0)  # filter type "None" for every scanline
        green = (y * 255) // max(height - 1, 1)
        for x in range(width):
            red = (x * 255) // max(width - 1, 1)
            rows += bytes((red, green, (red + green) // 2 & 0xFF))
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)  # 8-bit RGB, no interlace
    return (
        PNG_SIGNATURE
        + _png_chunk(b"IHDR", ihdr)
        + _png_chunk(b"IDAT", zlib.compress(bytes(rows), 9))
        + _png_chunk(b"IEND", b"")
    )


def make_png_header(width: int, height: int) -> bytes:
    """A PNG whose IHDR claims ``width`` x ``height`` while holding only one tiny IDAT chunk.

    Enough to test dimension checks with huge sizes without building megabytes of pixels:
    the emulator, like the service's first check, reads the size from the header.
    """
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        PNG_SIGNATURE
        + _png_chunk(b"IHDR", ihdr)
        + _png_chunk(b"IDAT", zlib.compress(b"\x00\x00\x00\x00"))
        + _png_chunk(b"IEND", b"")
    )


def make_jpeg_header(width: int, height: int) -> bytes:
    """Minimal JPEG markers (SOI, APP0/JFIF, SOF0, EOI) declaring ``width`` x ``height``.

    Not a decodable picture, but it has the structure the dimension sniffer (and the service's
    own pre-check) reads: markers walked from SOI up to the start-of-frame segment.
    """
    app0 = b"JFIF\x00\x01\x01\x00\x00\x01\x00\x01\x00\x00"
    sof0 = struct.pack(">BHHB", 8, height, width, 3) + b"\x01\x22\x00\x02\x11\x01\x03\x11\x01"
    return (
        b"\xff\xd8"
        + b"\xff\xe0"
        + struct.pack(">H", len(app0) + 2)
        + app0
        + b"\xff\xc0"
        + struct.pack(">H", len(sof0) + 2)
        + sof0
        + b"\xff\xd9"
    )


def cover_png() -> bytes:
    """The cover picture every SUCCEED job serves: a 256x256 gradient, built once and cached."""
    global _COVER_PNG
    if _COVER_PNG is None:
        _COVER_PNG = make_png(256, 256)
    return _COVER_PNG


@dataclass(frozen=True)
class ImageInfo:
    """What the emulator learnt from an uploaded photo."""

    kind: str  # "png" or "jpeg"
    width: int
    height: int
    size: int


class ImageError(ValueError):
    """The bytes are not a PNG or JPEG the service would accept; the message says why."""


def inspect_image(data: bytes) -> ImageInfo:
    """Identify a PNG or JPEG by its magic bytes and read its real dimensions.

    :param data: the uploaded file.
    :raises ImageError: not PNG/JPEG, or a header that cannot be read.
    """
    if data.startswith(PNG_SIGNATURE):
        # The first chunk must be a well-formed IHDR (length 13, valid CRC).
        if len(data) < 33:
            raise ImageError("truncated PNG (no IHDR chunk)")
        length, kind = struct.unpack(">I4s", data[8:16])
        if kind != b"IHDR" or length != 13:
            raise ImageError("PNG without an IHDR chunk")
        ihdr = data[16:29]
        (crc,) = struct.unpack(">I", data[29:33])
        if zlib.crc32(b"IHDR" + ihdr) & 0xFFFFFFFF != crc:
            raise ImageError("PNG IHDR chunk has a bad CRC")
        width, height = struct.unpack(">II", ihdr[:8])
        return ImageInfo("png", width, height, len(data))
    if data.startswith(b"\xff\xd8"):
        return _inspect_jpeg(data)
    raise ImageError("not a JPEG or PNG image")


def _inspect_jpeg(data: bytes) -> ImageInfo:
    i = 2
    n = len(data)
    while i + 4 <= n:
        if data[i] != 0xFF:
            raise ImageError("corrupt JPEG marker stream")
        marker = data[i + 1]
        if marker == 0xFF:  # fill byte
            i += 1
            continue
        if marker in (0xD8, 0x01) or 0xD0 <= marker <= 0xD7:  # markers without a length
            i += 2
            continue
        if marker in (0xD9, 0xDA):  # end of image / start of scan before any frame header
            break
        (length,) = struct.unpack(">H", data[i + 2 : i + 4])
        if length < 2:
            raise ImageError("corrupt JPEG segment length")
        # SOF0..SOF15 carry the frame size, except DHT (C4), JPG (C8) and DAC (CC).
        if 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC):
            if i + 9 > n:
                break
            height, width = struct.unpack(">HH", data[i + 5 : i + 9])
            return ImageInfo("jpeg", width, height, n)
        i += 2 + length
    raise ImageError("JPEG without a frame header")


@dataclass(frozen=True)
class FormPart:
    """One field of a ``multipart/form-data`` body."""

    name: str
    data: bytes
    filename: str | None
    content_type: str | None

    def text(self) -> str:
        return self.data.decode("utf-8", errors="replace")


class MultipartError(ValueError):
    """The body is not a readable multipart/form-data document."""


def parse_multipart(content_type: str, body: bytes) -> dict[str, FormPart]:
    """Parse ``multipart/form-data`` with the stdlib ``email`` parser (``cgi`` is gone in 3.13).

    The first part of a given name wins, as most web frameworks do.

    :param content_type: the request's Content-Type, with its ``boundary`` parameter.
    :param body: the raw request body.
    :raises MultipartError: no boundary, or no parts.
    """
    if not content_type.lower().startswith("multipart/form-data"):
        raise MultipartError("Content-Type must be multipart/form-data")
    if "boundary=" not in content_type.lower():
        raise MultipartError("multipart Content-Type without a boundary")
    # A synthetic header block turns the HTTP body into a MIME document; bytes stay bytes because
    # BytesParser carries non-ASCII octets through (surrogateescape) and get_payload(decode=True)
    # gives them back unchanged.
    head = f"Content-Type: {content_type}\r\nMIME-Version: 1.0\r\n\r\n".encode("latin-1", "replace")
    message = BytesParser(policy=HTTP).parsebytes(head + body)
    if not isinstance(message, EmailMessage) or not message.is_multipart():
        raise MultipartError("body is not multipart")
    if any(
        type(d).__name__ in ("StartBoundaryNotFoundDefect", "NoBoundaryInMultipartDefect")
        for d in message.defects
    ):
        raise MultipartError("multipart boundary not found in the body")
    parts: dict[str, FormPart] = {}
    for part in message.iter_parts():
        if not isinstance(part, EmailMessage):
            continue
        name = part.get_param("name", header="content-disposition")
        if not isinstance(name, str) or not name:
            continue
        payload = part.get_payload(decode=True)
        data = payload if isinstance(payload, bytes) else b""
        filename = part.get_filename()
        if name not in parts:
            parts[name] = FormPart(name, data, filename, part.get_content_type() if filename else None)
    if not parts:
        raise MultipartError("multipart body has no named parts")
    return parts


# -- 3D models (issue #14) -----------------------------------------------------------------------

GLB_MAGIC = b"glTF"
_GLB_JSON = 0x4E4F534A  # "JSON"
_GLB_BIN = 0x004E4942  # "BIN\0"


def make_glb(name: str = "model") -> bytes:
    """A small valid binary glTF 2.0 file: one scene, one node, one triangle mesh.

    Layout (glTF 2.0 spec, "GLB File Format"): a 12-byte header (``glTF``, version 2, total length),
    a JSON chunk padded with spaces and a BIN chunk padded with zeros, both to 4 bytes.

    :param name: the node's name, so each emulated asset's model differs (and so its MD5).
    """
    positions = struct.pack("<9f", 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0, 0.0)
    gltf = {
        "asset": {"version": "2.0", "generator": "metastudio-emulator"},
        "scene": 0,
        "scenes": [{"nodes": [0]}],
        "nodes": [{"mesh": 0, "name": name}],
        "meshes": [{"primitives": [{"attributes": {"POSITION": 0}}]}],
        "buffers": [{"byteLength": len(positions)}],
        "bufferViews": [{"buffer": 0, "byteOffset": 0, "byteLength": len(positions), "target": 34962}],
        "accessors": [
            {
                "bufferView": 0,
                "componentType": 5126,  # FLOAT
                "count": 3,
                "type": "VEC3",
                "min": [0.0, 0.0, 0.0],
                "max": [1.0, 1.0, 0.0],
            }
        ],
    }
    json_bytes = json.dumps(gltf, separators=(",", ":")).encode("utf-8")
    json_bytes += b" " * (-len(json_bytes) % 4)
    bin_bytes = positions + b"\x00" * (-len(positions) % 4)
    chunks = struct.pack("<II", len(json_bytes), _GLB_JSON) + json_bytes
    chunks += struct.pack("<II", len(bin_bytes), _GLB_BIN) + bin_bytes
    return GLB_MAGIC + struct.pack("<II", 2, 12 + len(chunks)) + chunks


def parse_glb(data: bytes) -> dict[str, object]:
    """The JSON chunk of a GLB, after checking the header and chunk lengths (for tests)."""
    if len(data) < 20 or data[:4] != GLB_MAGIC:
        raise ValueError("not a GLB file")
    version, length = struct.unpack_from("<II", data, 4)
    if version != 2 or length != len(data):
        raise ValueError(f"GLB version {version}, length {length} for {len(data)} bytes")
    chunk_length, chunk_type = struct.unpack_from("<II", data, 12)
    if chunk_type != _GLB_JSON or 20 + chunk_length > len(data):
        raise ValueError("the first GLB chunk is not a complete JSON chunk")
    parsed = json.loads(data[20 : 20 + chunk_length])
    if not isinstance(parsed, dict):
        raise ValueError("the GLB JSON chunk is not an object")
    return parsed
