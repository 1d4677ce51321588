"""Streaming multipart upload to disk, display-name sanitizing and a cheap "is this a video?" sniff."""
from __future__ import annotations

import re
import unicodedata
from pathlib import Path
from typing import Dict, Optional

from ..pipeline.decode import VIDEO_EXTENSIONS

MAX_NAME = 200
MAX_FIELDS_BYTES = 64 * 1024
SNIFF_BYTES = 4096


class UploadRejected(Exception):
    """An upload refused while it streams in (status code, error type, message)."""

    def __init__(self, status: int, kind: str, message: str, limit: Optional[str] = None):
        super().__init__(message)
        self.status, self.kind, self.message, self.limit = status, kind, message, limit


def display_name(raw: Optional[str]) -> str:
    """The client's file name as display text only: last path component, no control characters, bounded."""
    name = (raw or "").replace("\\", "/").rsplit("/", 1)[-1]
    name = "".join(ch for ch in name if unicodedata.category(ch)[0] != "C")  # drops NUL, newlines, bidi controls
    name = re.sub(r"\s+", " ", name).strip()
    if name in ("", ".", ".."):
        name = "upload"
    if len(name) > MAX_NAME:
        stem, dot, ext = name.rpartition(".")
        ext = ext if dot and len(ext) <= 10 else ""
        name = name[: MAX_NAME - len(ext) - 2] + "…" + (("." + ext) if ext else "")
    return name


def server_suffix(display: str) -> str:
    """An extension for the stored file, only from the known video list (FFmpeg needs it for raw streams)."""
    suffix = Path(display).suffix.lower()
    return suffix if suffix in VIDEO_EXTENSIONS else ".upload"


_NOT_VIDEO = [
    (b"\x89PNG\r\n\x1a\n", "a PNG image"), (b"\xff\xd8\xff", "a JPEG image"), (b"GIF87a", "a GIF image"),
    (b"GIF89a", "a GIF image"), (b"%PDF-", "a PDF document"), (b"PK\x03\x04", "a ZIP archive"),
    (b"\x1f\x8b", "a gzip archive"), (b"\x7fELF", "an executable"), (b"ID3", "an MP3 audio file"),
    (b"fLaC", "a FLAC audio file"),
]


def sniff_not_video(head: bytes) -> Optional[str]:
    """What the upload is when it is surely not a video (known non-video signature, or plain text); else None.

    Only refuses what is certain: anything else goes to the decoder, which says precisely what is wrong.
    """
    for magic, what in _NOT_VIDEO:
        if head.startswith(magic):
            return what
    if head.startswith(b"RIFF") and head[8:12] == b"WAVE":
        return "a WAV audio file"
    if head and b"\x00" not in head:
        try:
            text = head.decode("utf-8")
        except UnicodeDecodeError:
            return None
        if all(ch.isprintable() or ch in "\r\n\t\f" for ch in text):
            return "a text file"
    return None


class MultipartToDisk:
    """Feed the request body chunk by chunk; the `file` part goes to `dest`, other fields are kept (small)."""

    def __init__(self, content_type: str, dest: Path, max_bytes: int):
        from python_multipart.multipart import MultipartParser, parse_options_header

        self._parse_options = parse_options_header
        ctype, params = parse_options_header(content_type)
        if ctype != b"multipart/form-data" or not params.get(b"boundary"):
            raise UploadRejected(415, "UsageError", "POST /v1/jobs takes multipart/form-data with a `file` field")
        self.dest = Path(dest)
        self.max_bytes = max_bytes
        self.fields: Dict[str, str] = {}
        self.filename: Optional[str] = None
        self.size = 0
        self.head = b""
        self.got_file = False
        self._fh = None
        self._field_bytes = 0
        self._part_name = None
        self._part_is_file = False
        self._buf = bytearray()
        self._hname = bytearray()
        self._hval = bytearray()
        self._headers: Dict[bytes, bytes] = {}
        self.parser = MultipartParser(params[b"boundary"], {
            "on_part_begin": self._begin, "on_header_field": self._hfield, "on_header_value": self._hvalue,
            "on_header_end": self._hend, "on_headers_finished": self._hdone, "on_part_data": self._data,
            "on_part_end": self._end})

    # callbacks
    def _begin(self):
        self._headers, self._buf = {}, bytearray()

    def _hfield(self, data, start, end):
        self._hname += data[start:end]

    def _hvalue(self, data, start, end):
        self._hval += data[start:end]

    def _hend(self):
        self._headers[bytes(self._hname).lower()] = bytes(self._hval)
        self._hname, self._hval = bytearray(), bytearray()

    def _hdone(self):
        _, params = self._parse_options(self._headers.get(b"content-disposition", b""))
        self._part_name = params.get(b"name", b"").decode("utf-8", "replace")
        self._part_is_file = b"filename" in params
        if self._part_is_file:
            if self._part_name != "file":
                raise UploadRejected(422, "UsageError", f"unexpected file field {self._part_name!r}: send the video "
                                                        "as the `file` field")
            if self.got_file:
                raise UploadRejected(422, "UsageError", "one video per job: the `file` field was sent twice")
            self.got_file = True
            self.filename = params[b"filename"].decode("utf-8", "replace")
            self._fh = open(self.dest, "wb")

    def _data(self, data, start, end):
        chunk = data[start:end]
        if self._part_is_file:
            self.size += len(chunk)
            if self.size > self.max_bytes:
                raise UploadRejected(413, "UploadTooLarge", f"the upload is larger than the limit of "
                                                            f"{self.max_bytes} bytes (max_upload_bytes)",
                                     limit="max_upload_bytes")
            if len(self.head) < SNIFF_BYTES:
                self.head += chunk[: SNIFF_BYTES - len(self.head)]
            self._fh.write(chunk)
        else:
            self._field_bytes += len(chunk)
            if self._field_bytes > MAX_FIELDS_BYTES:
                raise UploadRejected(422, "UsageError", "option fields are too large")
            self._buf += chunk

    def _end(self):
        if self._part_is_file:
            self._fh.close()
            self._fh = None
        elif self._part_name:
            self.fields[self._part_name] = bytes(self._buf).decode("utf-8", "replace")

    def feed(self, chunk: bytes) -> None:
        self.parser.write(chunk)

    def finish(self) -> None:
        self.parser.finalize()

    def close(self) -> None:
        if self._fh is not None:
            self._fh.close()
            self._fh = None
