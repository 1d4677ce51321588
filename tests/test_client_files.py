"""The client reads only regular files, with a size cap: no FIFO hang, no /dev/zero, no symlink loop."""
import os

import pytest

from dfserve.client.triton import read_video_file
from dfserve.errors import VideoError


def test_client_reads_only_regular_files_within_the_cap(tmp_path):
    ok = tmp_path / "ok.mp4"
    ok.write_bytes(b"\x00" * 1000)
    assert read_video_file(ok) == b"\x00" * 1000
    with pytest.raises(VideoError, match="ok.mp4: 1000 bytes is more than"):
        read_video_file(ok, max_bytes=999)
    fifo = tmp_path / "fifo.mp4"
    os.mkfifo(fifo)
    with pytest.raises(VideoError, match=r"fifo.mp4: is a pipe \(FIFO\)"):
        read_video_file(fifo)  # returns at once: a FIFO is never opened
    zero = tmp_path / "zero.mp4"
    zero.symlink_to("/dev/zero")
    with pytest.raises(VideoError, match="zero.mp4: is a device"):
        read_video_file(zero)
    loop = tmp_path / "loop.mp4"
    loop.symlink_to(loop)
    with pytest.raises(VideoError, match="loop.mp4: cannot be read"):
        read_video_file(loop)
    with pytest.raises(VideoError, match="is a folder"):
        read_video_file(tmp_path)
