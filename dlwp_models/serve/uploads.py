"""The one request-decoding helper: the upload's bytes (size-limited, in memory only; the image
part of a multipart form) and the decoded RGB image, each failure an :class:`ApiError` with the
status code the API documents (400, 413, 415)."""

from __future__ import annotations

import io

from PIL import Image, UnidentifiedImageError
from python_multipart.multipart import MultipartParseError, MultipartParser, parse_options_header
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request

from ..errors import ApiError, ImageInputError
from ..inputs.images import load_image

__all__ = ["read_upload", "decode_image", "image_from_multipart"]

_ACCEPTED = (
    "send the image file's bytes as image/* or application/octet-stream, or a multipart form with a field 'image'"
)


async def read_upload(request: Request, *, max_bytes: int) -> bytes:
    """The image file's bytes: the body when it is ``image/*`` or ``application/octet-stream``,
    or the field ``image`` of a multipart form (parsed in a worker thread). Decode them with
    :func:`decode_image`."""
    content_type = request.headers.get("content-type", "")
    media = content_type.split(";", 1)[0].strip().lower()
    if not (media.startswith("image/") or media in ("application/octet-stream", "multipart/form-data")):
        raise ApiError(415, f"unsupported content type {media or '(none)'!r}; {_ACCEPTED}.")
    body = await _read_body(request, max_bytes)
    if media == "multipart/form-data":
        body = await run_in_threadpool(image_from_multipart, body, content_type)
    return body


async def _read_body(request: Request, max_bytes: int) -> bytes:
    """The body, refused with 413 as soon as it is known to exceed ``max_bytes`` (from the
    Content-Length header before reading anything, else while reading)."""
    too_large = ApiError(
        413, f"the upload is larger than the server's limit of {max_bytes / 2**20:g} MiB; send a smaller image."
    )
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > max_bytes:
        raise too_large
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > max_bytes:
            raise too_large
        chunks.append(chunk)
    return b"".join(chunks)


def image_from_multipart(body: bytes, content_type: str) -> bytes:
    """The bytes of the form field ``image`` of a multipart/form-data body (held in memory)."""
    _, options = parse_options_header(content_type)
    boundary = options.get(b"boundary")
    if not boundary:
        raise ApiError(
            400, "the multipart form has no boundary in its Content-Type; let the client library build the form."
        )
    parts: list[tuple[dict[bytes, bytes], bytearray]] = []
    header = [b"", b""]

    def on_part_begin() -> None:
        parts.append(({}, bytearray()))

    def on_header_field(data: bytes, start: int, end: int) -> None:
        header[0] += data[start:end]

    def on_header_value(data: bytes, start: int, end: int) -> None:
        header[1] += data[start:end]

    def on_header_end() -> None:
        parts[-1][0][header[0].lower()] = header[1]
        header[0] = header[1] = b""

    def on_part_data(data: bytes, start: int, end: int) -> None:
        parts[-1][1].extend(data[start:end])

    parser = MultipartParser(
        boundary,
        {
            "on_part_begin": on_part_begin,
            "on_header_field": on_header_field,
            "on_header_value": on_header_value,
            "on_header_end": on_header_end,
            "on_part_data": on_part_data,
        },
    )
    try:
        parser.write(body)
        parser.finalize()
    except MultipartParseError:
        raise ApiError(400, "the multipart form is malformed; let the client library build it.") from None
    for headers, data in parts:
        _, disposition = parse_options_header(headers.get(b"content-disposition", b""))
        if disposition.get(b"name") == b"image":
            return bytes(data)
    raise ApiError(400, "the multipart form has no field named 'image'; put the photo in a field 'image'.")


def decode_image(data: bytes, max_pixels: int) -> Image.Image:
    """``data`` decoded to an RGB PIL image (EXIF orientation applied), or a 400 / 413 ApiError.
    The pixel count is checked from the header, before any pixel is decoded."""
    if not data:
        raise ApiError(400, f"the request body is empty; {_ACCEPTED}.")
    try:
        image = Image.open(io.BytesIO(data))  # reads the header only
    except Image.DecompressionBombError:
        raise _too_many_pixels(max_pixels) from None
    except UnidentifiedImageError:
        raise ApiError(
            400, "the upload is not an image the server can read; send a JPEG, PNG, WebP or other common image file."
        ) from None
    except (OSError, SyntaxError, ValueError):
        raise ApiError(
            400, "the upload could not be read as an image; it is damaged or truncated. Send the complete file."
        ) from None
    if image.width * image.height > max_pixels:
        image.close()
        raise _too_many_pixels(max_pixels, image.width, image.height)
    try:
        return load_image(image)  # decodes now; RGB; EXIF orientation
    except (ImageInputError, OSError, SyntaxError, ValueError):
        raise ApiError(
            400, "the upload could not be decoded as an image; it is damaged or truncated. Send the complete file."
        ) from None


def _too_many_pixels(limit: int, width: int | None = None, height: int | None = None) -> ApiError:
    size = f" ({width}×{height})" if width is not None else ""
    return ApiError(
        413,
        f"the image has too many pixels{size} for this server (at most {limit / 1e6:.0f} "
        "megapixels); downscale it first.",
    )
