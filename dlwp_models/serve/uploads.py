"""The one request-decoding helper: the upload's bytes (size-limited, in memory only; the image
part of a multipart form) and the decoded RGB image, each failure an :class:`ApiError` with the
status code the API documents (400, 413, 415)."""

from __future__ import annotations

import io

from PIL import Image, UnidentifiedImageError
from python_multipart.multipart import MultipartParseError, MultipartParser, parse_options_header
from starlette.requests import Request

from ..errors import ApiError, ImageInputError, ImageTooLargeError
from ..inputs.decode_cost import check_decode_cost
from ..inputs.images import load_image

__all__ = ["Upload", "UploadBudget", "read_upload", "image_bytes", "decode_image", "image_from_multipart"]

_ACCEPTED = (
    "send the image file's bytes as image/* or application/octet-stream, or a multipart form with a field 'image'"
)


class UploadBudget:
    """The bytes of the uploads being received at once, bounded (``limit``): a request takes its
    ``Content-Length`` before reading (or its bytes as they come, without one) and gives them back
    when its body is no longer needed. Used from the event loop only."""

    def __init__(self, limit: int) -> None:
        self.limit, self.used = limit, 0

    def take(self, size: int) -> bool:
        """Take ``size`` bytes if they are free."""
        if self.used + size > self.limit:
            return False
        self.used += size
        return True

    def give(self, size: int) -> None:
        self.used -= size


class Upload:
    """A request's body as received: its bytes, its media type, and the bytes of the upload budget
    it holds (:meth:`release` gives them back)."""

    def __init__(self, body: bytes, content_type: str, budget: UploadBudget, held: int) -> None:
        self.body, self.content_type, self._budget, self._held = body, content_type, budget, held

    @property
    def is_multipart(self) -> bool:
        return self.content_type.split(";", 1)[0].strip().lower() == "multipart/form-data"

    def release(self) -> None:
        self.body = b""
        self._budget.give(self._held)
        self._held = 0


async def read_upload(request: Request, *, max_bytes: int, budget: UploadBudget) -> Upload:
    """The request's body (``image/*``, ``application/octet-stream`` or a multipart form, parsed
    later by :func:`image_bytes`), refused with 415 for another type, 413 as soon as it is known
    to exceed ``max_bytes`` (from ``Content-Length`` before reading anything, else while reading),
    and 503 when the uploads in progress already hold the ``budget``."""
    content_type = request.headers.get("content-type", "")
    media = content_type.split(";", 1)[0].strip().lower()
    if not (media.startswith("image/") or media in ("application/octet-stream", "multipart/form-data")):
        raise ApiError(415, f"unsupported content type {media or '(none)'!r}; {_ACCEPTED}.")
    too_large = ApiError(
        413, f"the upload is larger than the server's limit of {max_bytes / 2**20:g} MiB; send a smaller image."
    )
    busy = ApiError(
        503, "the server is receiving as many uploads as it holds at once; retry in a moment.", {"Retry-After": "1"}
    )
    declared = request.headers.get("content-length")
    held = 0
    if declared is not None and declared.isdigit():
        if int(declared) > max_bytes:
            raise too_large
        if not budget.take(int(declared)):
            raise busy
        held = int(declared)
    try:
        chunks, size = [], 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > max_bytes:
                raise too_large
            if size > held:  # no Content-Length (chunked), or more than it said
                if not budget.take(size - held):
                    raise busy
                held = size
            chunks.append(chunk)
    except BaseException:
        budget.give(held)
        raise
    return Upload(b"".join(chunks), content_type, budget, held)


def image_bytes(upload: Upload, max_parts: int) -> bytes:
    """The image file's bytes of an upload: its body, or the field ``image`` of its multipart form
    (at most ``max_parts`` parts; run it in a worker thread, after admission)."""
    if upload.is_multipart:
        return image_from_multipart(upload.body, upload.content_type, max_parts)
    return upload.body


def image_from_multipart(body: bytes, content_type: str, max_parts: int = 8) -> bytes:
    """The bytes of the form field ``image`` of a multipart/form-data body (held in memory); a
    form of more than ``max_parts`` parts is refused (400) when its next part begins."""
    _, options = parse_options_header(content_type)
    boundary = options.get(b"boundary")
    if not boundary:
        raise ApiError(
            400, "the multipart form has no boundary in its Content-Type; let the client library build the form."
        )
    parts: list[tuple[dict[bytes, bytes], bytearray]] = []
    header = [b"", b""]

    def on_part_begin() -> None:
        if len(parts) >= max_parts:
            raise _TooManyParts
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
    except _TooManyParts:
        raise ApiError(
            400,
            f"the multipart form has more than {max_parts} parts; send the photo in a field 'image' and little else.",
        ) from None
    except MultipartParseError:
        raise ApiError(400, "the multipart form is malformed; let the client library build it.") from None
    for headers, data in parts:
        _, disposition = parse_options_header(headers.get(b"content-disposition", b""))
        if disposition.get(b"name") == b"image":
            return bytes(data)
    raise ApiError(400, "the multipart form has no field named 'image'; put the photo in a field 'image'.")


class _TooManyParts(Exception):
    """A multipart form has more parts than the server reads."""


def decode_image(data: bytes, max_pixels: int, max_bytes: int) -> Image.Image:
    """``data`` decoded to an RGB PIL image (EXIF orientation applied), or a 400 / 413 ApiError.
    The pixel count and the memory decoding takes (depth and channels included, at most
    ``max_bytes``) are checked from the header, before any pixel is decoded."""
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
        check_decode_cost(image, "the upload", max_bytes)
    except ImageTooLargeError as exc:
        image.close()
        raise ApiError(413, str(exc)) from None
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
