"""Files that try to make FFmpeg read something else: playlists, concat lists, URLs. Each is refused by
name; the demuxer and protocol whitelists hold for the embedded engine and for bytes sent to the server."""
import av
import pytest

from dfserve.errors import VideoError
from dfserve.pipeline.decode import probe


@pytest.fixture(scope="module")
def target(tmp_path_factory):
    from dfserve import samples

    d = tmp_path_factory.mktemp("hostile")
    samples.make_face_video(d / "private.ts", n_frames=10, width=160, height=96)
    return d


def _hostile(d):
    return {
        "ffconcat.mp4": "ffconcat version 1.0\nfile private.ts\n",
        "playlist.mp4": "#EXTM3U\n#EXT-X-VERSION:3\n#EXT-X-TARGETDURATION:1\n#EXTINF:1.0,\nprivate.ts\n#EXT-X-ENDLIST\n",
        "playlist.m3u8": "#EXTM3U\n#EXT-X-TARGETDURATION:1\n#EXTINF:1.0,\nfile://" + str(d / "private.ts") + "\n#EXT-X-ENDLIST\n",
        "url.mp4": "file://" + str(d / "private.ts") + "\n",
    }


def test_concat_list_would_read_another_file_without_the_whitelist(target):
    (target / "check.ffconcat").write_text("ffconcat version 1.0\nfile private.ts\n")
    with av.open(str(target / "check.ffconcat")) as c:  # plain FFmpeg follows it: the threat is real
        assert sum(1 for _ in c.decode(video=0)) == 10


@pytest.mark.parametrize("name", ["ffconcat.mp4", "playlist.mp4", "playlist.m3u8", "url.mp4"])
def test_hostile_files_are_refused(target, name):
    p = target / name
    p.write_text(_hostile(target)[name])
    with pytest.raises(VideoError, match=name.replace(".", r"\.")):
        probe(str(p))
