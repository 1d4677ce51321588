"""Real images for calibration, validation and generated test videos (scikit-image, public domain).

No model hub or dataset download: scikit-image ships these images in its wheel.
"""
from __future__ import annotations

import numpy as np

from . import spec
from .contract import normalize_faces, resize_bgr  # noqa: F401 (re-exported for tests and tools)

# The astronaut's face in skimage.data.astronaut() (512x512), x1, y1, x2, y2, from the shipped
# RetinaFace ONNX; used to cut real face crops.
ASTRONAUT_FACE_BOX = (178, 57, 273, 177)


def astronaut_bgr() -> np.ndarray:
    from skimage import data

    return np.ascontiguousarray(data.astronaut()[..., ::-1])


def camera_bgr() -> np.ndarray:
    """skimage.data.camera(): a man with a camera (512x512 grayscale) as BGR."""
    from skimage import data

    g = data.camera()
    return np.ascontiguousarray(np.stack([g, g, g], axis=-1))


def coffee_bgr() -> np.ndarray:
    """skimage.data.coffee(): a cup of coffee, no face."""
    from skimage import data

    return np.ascontiguousarray(data.coffee()[..., ::-1])


def astronaut_face_crops(n: int, seed: int = 0) -> np.ndarray:
    """n uint8 BGR 112x112 crops of the astronaut's face with jittered boxes (real face pixels)."""
    rng = np.random.default_rng(seed)
    img = astronaut_bgr()
    x1, y1, x2, y2 = ASTRONAUT_FACE_BOX
    out = []
    for _ in range(n):
        j = rng.integers(-12, 13, size=4)
        bx1, by1 = max(0, x1 + j[0]), max(0, y1 + j[1])
        bx2, by2 = min(img.shape[1], x2 + j[2]), min(img.shape[0], y2 + j[3])
        crop = img[by1:by2, bx1:bx2]
        if rng.random() < 0.5:
            crop = crop[:, ::-1]
        out.append(resize_bgr(crop))
    return np.stack(out)


def calibration_faces(n: int = 24, seed: int = 0) -> np.ndarray:
    """Normalised float32 [n,3,112,112] real crops: astronaut faces plus crops of other images."""
    rng = np.random.default_rng(seed + 1)
    faces = list(astronaut_face_crops(n - n // 3, seed))
    others = [camera_bgr(), coffee_bgr()]
    for k in range(n // 3):
        img = others[k % 2]
        s = int(rng.integers(96, 256))
        y = int(rng.integers(0, img.shape[0] - s))
        x = int(rng.integers(0, img.shape[1] - s))
        faces.append(resize_bgr(img[y:y + s, x:x + s]))
    return normalize_faces(np.stack(faces))


# ------------------------------------------------------------------------------------------------
# Generated test videos: real face pixels moving and zooming over a plain background.
# ------------------------------------------------------------------------------------------------
ASTRONAUT_BODY = (100, 0, 360, 320)  # x1, y1, x2, y2 of the part of astronaut() pasted into videos
CODECS = {"h264": "libx264", "hevc": "libx265", "vp9": "libvpx-vp9", "av1": "libsvtav1", "mpeg4": "mpeg4",
          "mjpeg": "mjpeg", "gif": "gif", "ffv1": "ffv1"}
ENCODER_ALTERNATIVES = {"av1": ("libsvtav1", "libaom-av1", "librav1e"), "vp9": ("libvpx-vp9",)}


def encoder_for(codec: str):
    """The name of an FFmpeg encoder this PyAV build has for `codec` (h264, hevc, vp9, av1, ...), or None."""
    import av

    for name in ENCODER_ALTERNATIVES.get(codec, (CODECS.get(codec, codec),)):
        try:
            av.codec.Codec(name, "w")
            return name
        except Exception:  # noqa: BLE001 - av raises UnknownCodecError / ValueError by version
            continue
    return None


def _background(h: int, w: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    c0, c1 = rng.uniform(40, 200, 3), rng.uniform(40, 200, 3)
    t = (xx / max(w - 1, 1) * 0.6 + yy / max(h - 1, 1) * 0.4)[..., None]
    return (c0 * (1 - t) + c1 * t).astype(np.uint8)


def face_track(n_frames: int, width: int, height: int, zoom=(0.9, 1.4)):
    """Per-frame (scale, x, y) of the pasted astronaut: moves left to right while zooming."""
    bw, bh = ASTRONAUT_BODY[2] - ASTRONAUT_BODY[0], ASTRONAUT_BODY[3] - ASTRONAUT_BODY[1]
    base = 0.8 * height / bh
    out = []
    for i in range(n_frames):
        t = i / max(n_frames - 1, 1)
        s = base * (zoom[0] + (zoom[1] - zoom[0]) * t)
        x = int((width - bw * s) * (0.1 + 0.8 * t))
        y = int((height - bh * s) * (0.5 + 0.3 * np.sin(2 * np.pi * t)))
        out.append((s, max(0, x), max(0, y)))
    return out


def write_video(path, frames_bgr, fps: int = 30, codec: str = "h264", pix_fmt: str | None = None,
                rotation: int | None = None, pts=None, time_base=None, container_format: str | None = None,
                codec_options: dict | None = None) -> None:
    """Encode BGR frames with PyAV (libx264 / libx265 / libvpx-vp9 / AV1 / mpeg4 / mjpeg, yuv420p by default).

    rotation: a display matrix rotation (degrees counterclockwise, as FFmpeg's av_display_rotation_set;
    a phone's portrait clip stored landscape has -90). pts + time_base: explicit presentation times
    (variable frame rate). codec_options: encoder options added to (or overriding) the defaults, e.g.
    {"x264-params": "keyint=10:bframes=3:open-gop=1"} or {"g": "10"}. Frames are streamed: a generator
    of any length never sits in memory at once.
    """
    import itertools

    import av

    it = iter(frames_bgr)
    first = next(it, None)
    if first is None:
        raise ValueError(f"{path}: no frames to write")
    frames_bgr = itertools.chain([first], it)
    h, w = first.shape[:2]
    name = encoder_for(codec)
    if name is None:
        raise RuntimeError(f"this FFmpeg build has no encoder for {codec}")
    with av.open(str(path), mode="w", format=container_format) as out:
        st = out.add_stream(name, rate=fps)
        st.width, st.height = w, h
        st.pix_fmt = pix_fmt or {"mjpeg": "yuvj420p", "gif": "rgb8"}.get(codec, "yuv420p")
        opts = {}
        if name in ("libx264", "libx265"):
            opts.update(preset="ultrafast", crf="23")
        if name == "libx265":
            opts["x265-params"] = "log-level=error"
        if name == "libvpx-vp9":
            opts.update(deadline="realtime", **{"cpu-used": "8"})
        if name == "libsvtav1":
            import os

            os.environ.setdefault("SVT_LOG", "1")  # SVT-AV1 prints its configuration to stderr otherwise
            opts.update(preset="12")
        opts.update(codec_options or {})
        st.options = opts
        if time_base is not None:
            st.time_base = time_base
            st.codec_context.time_base = time_base
        if rotation is not None:
            st.set_display_rotation(rotation)
        for k, f in enumerate(frames_bgr):
            vf = av.VideoFrame.from_ndarray(np.ascontiguousarray(f), format="bgr24")
            if pts is not None:
                vf.pts, vf.time_base = pts[k], time_base
            for pkt in st.encode(vf):
                out.mux(pkt)
        for pkt in st.encode():
            out.mux(pkt)


def keyframe_options(codec: str, keyint: int, bframes: int = 3, open_gop: bool = True) -> dict:
    """Encoder options for a key frame every `keyint` frames (no scene-cut key frames), with B-frames and open
    GOPs (leading pictures that reference the GOP before) where the encoder has them: x264, x265; VP9 has
    neither (its key frames every `keyint`)."""
    name = encoder_for(codec)
    gop = f"keyint={keyint}:min-keyint={keyint}:scenecut=0:bframes={bframes}:open-gop={int(open_gop)}"
    if name == "libx264":
        return {"x264-params": gop}
    if name == "libx265":
        return {"x265-params": "log-level=error:" + gop}
    return {"g": str(keyint)}


def make_face_video(path, n_frames: int = 60, width: int = 640, height: int = 360, fps: int = 30,
                    codec: str = "h264", seed: int = 0, zoom=(0.9, 1.4), **write_kw) -> dict:
    """A video of the astronaut's face moving and zooming; returns the ground truth (per-frame boxes)."""
    from PIL import Image

    img = astronaut_bgr()
    x1, y1, x2, y2 = ASTRONAUT_BODY
    body = img[y1:y2, x1:x2]
    bg = _background(height, width, seed)
    fx1, fy1, fx2, fy2 = ASTRONAUT_FACE_BOX
    boxes = []

    def frames():
        for s, x, y in face_track(n_frames, width, height, zoom):
            f = bg.copy()
            bw, bh = max(1, int(body.shape[1] * s)), max(1, int(body.shape[0] * s))
            part = np.asarray(Image.fromarray(body).resize((bw, bh), Image.BILINEAR))
            part = part[: height - y, : width - x]
            f[y:y + part.shape[0], x:x + part.shape[1]] = part
            boxes.append([round(x + (fx1 - x1) * s, 1), round(y + (fy1 - y1) * s, 1),
                          round(x + (fx2 - x1) * s, 1), round(y + (fy2 - y1) * s, 1)])
            yield f

    write_video(path, frames(), fps, codec, **write_kw)
    return {"path": str(path), "frames": n_frames, "fps": fps, "width": width, "height": height,
            "codec": codec, "face": True, "boxes": boxes}


def loop_video(src, dst, times: int) -> dict:
    """`src` played `times` times over, remuxed into `dst` without re-encoding (a long video in seconds).

    Every packet of the first video stream is copied `times` times, its timestamps shifted by one period
    each time (the stream's span: the last packet's end minus the first's start), so the result really holds
    `times` x the frames and decodes as one stream (a clip that starts on a key frame, as make_face_video's
    do, restarts cleanly). Returns {"path", "frames", "seconds", "width", "height"}."""
    import av

    with av.open(str(src)) as inp:
        vs = inp.streams.video[0]
        pkts = [(bytes(p), p.pts, p.dts, p.duration, p.is_keyframe) for p in inp.demux(vs) if p.size]
        tb, rate, w, h = vs.time_base, vs.average_rate, vs.codec_context.width, vs.codec_context.height
        with av.open(str(dst), "w") as out:
            st = out.add_stream_from_template(vs)
            start = min(p[1] for p in pkts)
            period = max(p[1] + (p[3] or 0) for p in pkts) - start
            for k in range(times):
                for data, pts, dts, dur, key in pkts:
                    q = av.Packet(data)
                    q.stream, q.time_base = st, tb
                    q.pts, q.dts, q.duration = pts + k * period, dts + k * period, dur
                    q.is_keyframe = key
                    out.mux(q)
    n = len(pkts) * times
    return {"path": str(dst), "frames": n, "seconds": float(n / rate) if rate else None, "width": w, "height": h}


def face_frames(n_frames: int, width: int, height: int, seed: int = 0, zoom=(0.9, 1.4)) -> list:
    """The BGR frames make_face_video encodes (real face pixels), in memory."""
    from PIL import Image

    img = astronaut_bgr()
    x1, y1, x2, y2 = ASTRONAUT_BODY
    body = img[y1:y2, x1:x2]
    bg = _background(height, width, seed)
    out = []
    for s, x, y in face_track(n_frames, width, height, zoom):
        f = bg.copy()
        bw, bh = max(1, int(body.shape[1] * s)), max(1, int(body.shape[0] * s))
        part = np.asarray(Image.fromarray(body).resize((bw, bh), Image.BILINEAR))[: height - y, : width - x]
        f[y:y + part.shape[0], x:x + part.shape[1]] = part
        out.append(f)
    return out


# ------------------------------------------------------------------------------------------------
# Videos as they come from phones, the web and archives (tests/test_inputs.py).
# ------------------------------------------------------------------------------------------------
def make_portrait_phone_video(path, n_frames: int = 8, width: int = 180, height: int = 320, fps: int = 30,
                              rotation: int = -90) -> dict:
    """A clip as phones record it: frames stored in the sensor's orientation, with a display matrix saying how
    to turn them to show them. rotation -90 (the default; FFmpeg's rotate=90 tag, "turn 90 degrees clockwise")
    is a portrait clip held upright; 90 held the other way; 180 upside down. Players and OpenCV show the
    `upright` frames, width x height."""
    upright = face_frames(n_frames, width, height, seed=3, zoom=(1.0, 1.1))
    k = int(round(rotation / 90)) % 4  # the decoder turns stored frames by rot90(., k)
    stored = [np.ascontiguousarray(np.rot90(f, -k)) for f in upright]
    write_video(path, stored, fps, "h264", rotation=rotation)
    return {"path": str(path), "frames": n_frames, "fps": fps, "width": width, "height": height,
            "stored": stored[0].shape[:2], "rotation": rotation, "upright": upright}


def make_vfr_video(path, times_s, width: int = 320, height: int = 180) -> dict:
    """A variable frame rate video: one frame at each presentation time in `times_s` (MKV, ms timestamps)."""
    from fractions import Fraction

    tb = Fraction(1, 1000)
    pts = [int(round(t * 1000)) for t in times_s]
    frames = face_frames(len(pts), width, height, seed=4)
    write_video(path, frames, 30, "h264", pts=pts, time_base=tb)
    return {"path": str(path), "frames": len(pts), "times": [p / 1000 for p in pts], "width": width,
            "height": height}


def make_still_image(path, fmt: str = "PNG") -> dict:
    """The astronaut as a still PNG/JPEG/GIF, whatever the file name says."""
    from PIL import Image

    Image.fromarray(np.ascontiguousarray(astronaut_bgr()[..., ::-1])).save(str(path), format=fmt)
    return {"path": str(path), "still": True, "format": fmt}


def make_gif(path, n_frames: int = 10, width: int = 320, height: int = 180, fps: int = 10) -> dict:
    """An animated GIF of the moving face (PIL, as web tools make them); n_frames=1 gives a still GIF."""
    from PIL import Image

    frames = [Image.fromarray(np.ascontiguousarray(f[..., ::-1])) for f in face_frames(n_frames, width, height)]
    frames[0].save(str(path), format="GIF", save_all=n_frames > 1, append_images=frames[1:],
                   duration=int(1000 / fps), loop=0)
    return {"path": str(path), "frames": n_frames, "width": width, "height": height, "fps": fps}


def make_absurd_size_file(path, width: int = 16000, height: int = 16000) -> dict:
    """A Y4M (raw video) file whose header declares a huge frame size, with a few bytes of data."""
    from pathlib import Path

    Path(path).write_bytes(f"YUV4MPEG2 W{width} H{height} F30:1 Ip A1:1 C420jpeg\nFRAME\n".encode()
                           + bytes(4096))
    return {"path": str(path), "width": width, "height": height}


def make_absurd_duration_file(path, duration_s: float = 1e12) -> dict:
    """A real MKV whose header declares an absurd duration (the Segment Info Duration patched)."""
    import struct
    from pathlib import Path

    write_video(path, face_frames(4, 160, 96), 30, "h264", container_format="matroska")
    data = bytearray(Path(path).read_bytes())
    k = data.find(b"\x44\x89\x88")  # EBML Duration, 8-byte float, in TimestampScale units (ms)
    if k < 0:
        raise RuntimeError("no Matroska Duration element to patch")
    data[k + 3:k + 11] = struct.pack(">d", duration_s * 1000.0)
    Path(path).write_bytes(bytes(data))
    return {"path": str(path), "duration_s": duration_s}


# Over-limit files (issue 25: request limits are tested on real files of each kind, made in about a second).
def make_long_low_fps_video(path, minutes: float = 20, fps: int = 1, width: int = 64, height: int = 48) -> dict:
    """A long recording at a low frame rate (default 20 minutes at 1 fps = 1200 frames), tiny so it encodes fast:
    many frames and a long duration in a small file. MP4 declares its frame count; MKV does not."""
    n = int(round(minutes * 60 * fps))
    bg = _background(height, width, 5)
    write_video(path, (np.roll(bg, k % width, axis=1) for k in range(n)), fps, "h264")
    return {"path": str(path), "frames": n, "fps": fps, "width": width, "height": height,
            "duration_s": n / fps}


def make_8k_frame_video(path, width: int = 7680, height: int = 4320) -> dict:
    """One 8K UHD frame (7680x4320, H.264 level 6.x) as a video: a frame over a 4K pixel limit, ~100 kB."""
    write_video(path, [np.ascontiguousarray(np.broadcast_to(_background(height // 8, width // 8, 6)
                                                           .repeat(8, 0).repeat(8, 1), (height, width, 3)))], 30,
                "h264")
    return {"path": str(path), "frames": 1, "width": width, "height": height}


def make_decode_bomb(path, width: int = 1920, height: int = 1080, n_frames: int = 300, fps: int = 30) -> dict:
    """A decode bomb: a tiny file (~17 kB by default) that decodes to a huge amount of pixels (1080p x 300 =
    622 M pixels, 1.9 GB as BGR frames): one flat-colour frame repeated, H.264 skip frames after one key frame.
    In Matroska, whose header declares no frame count: only decoding finds out how much it holds."""
    import av

    with av.open(str(path), mode="w") as out:
        st = out.add_stream("libx264", rate=fps)
        st.width, st.height, st.pix_fmt = width, height, "yuv420p"
        st.options = {"preset": "ultrafast", "crf": "51", "x264-params": "keyint=1000000:scenecut=0:log=-1"}
        frame = av.VideoFrame.from_ndarray(np.full((height, width, 3), 90, np.uint8), format="bgr24")
        frame = frame.reformat(format="yuv420p")  # converted once, encoded n times
        for k in range(n_frames):
            frame.pts = k
            for pkt in st.encode(frame):
                out.mux(pkt)
        for pkt in st.encode():
            out.mux(pkt)
    return {"path": str(path), "frames": n_frames, "width": width, "height": height,
            "decoded_pixels": n_frames * width * height}


def make_noface_video(path, n_frames: int = 30, width: int = 640, height: int = 360, fps: int = 30,
                      codec: str = "h264") -> dict:
    """A pan over skimage's coffee cup: no face anywhere."""
    from PIL import Image

    src = coffee_bgr()
    big = np.asarray(Image.fromarray(src).resize((int(width * 1.5), int(height * 1.5)), Image.BILINEAR))
    dx = big.shape[1] - width
    write_video(path, (big[: height, int(dx * i / max(n_frames - 1, 1)):][:, :width] for i in range(n_frames)),
                fps, codec)
    return {"path": str(path), "frames": n_frames, "fps": fps, "width": width, "height": height,
            "codec": codec, "face": False, "boxes": None}


def make_precropped_video(path, n_frames: int = 20, size: int = 224, fps: int = 30, seed: int = 0) -> dict:
    """Face crops as a video, like the seed projects' processed datasets."""
    from PIL import Image

    crops = astronaut_face_crops(n_frames, seed)
    frames = [np.asarray(Image.fromarray(c).resize((size, size), Image.BILINEAR)) for c in crops]
    write_video(path, frames, fps, "h264")
    return {"path": str(path), "frames": n_frames, "fps": fps, "width": size, "height": size,
            "codec": "h264", "face": True, "boxes": None}


def make_corrupt_file(path, seed: int = 0, size: int = 20000) -> dict:
    """Random bytes with a video file name."""
    from pathlib import Path

    Path(path).write_bytes(np.random.default_rng(seed).integers(0, 256, size, dtype=np.uint8).tobytes())
    return {"path": str(path), "corrupt": True}


def make_resolution_switch_video(path, sizes=((640, 360), (1280, 720)), n_each: int = 12, fps: int = 30,
                                 segments_dir=None, keyint: int | None = None, continuous: bool = False) -> dict:
    """An MPEG-TS recording whose frame size changes mid-stream (as broadcast captures do): one H.264
    segment per size, concatenated (TS is concatenable; the decoder picks up the new SPS). With
    `segments_dir`, each segment is also kept there as its own file (`seg<k>.ts`). Each segment's clock
    restarts (as files joined by `cat` do), unless `continuous` (as a recorder writes one stream);
    `keyint`: a key frame every `keyint` frames (keyframe_options)."""
    import tempfile
    from fractions import Fraction
    from pathlib import Path

    parts, truth = [], []
    with tempfile.TemporaryDirectory() as tmp:
        for k, (w, h) in enumerate(sizes):
            seg = Path(segments_dir or tmp) / f"seg{k}.ts"
            kw = {"codec_options": keyframe_options("h264", keyint)} if keyint else {}
            if continuous:
                tick = 90000 // fps
                # from 1 s: no segment's decoding times go below 0 (the muxer would shift that segment alone)
                kw.update(pts=[90000 + (k * n_each + i) * tick for i in range(n_each)], time_base=Fraction(1, 90000))
            t = make_face_video(seg, n_frames=n_each, width=w, height=h, fps=fps, codec="h264", seed=k, **kw)
            parts.append(seg.read_bytes())
            truth.append({"path": str(seg) if segments_dir else None, "width": w, "height": h, "frames": n_each,
                          "boxes": t["boxes"]})
        Path(path).write_bytes(b"".join(parts))
    return {"path": str(path), "frames": n_each * len(sizes), "fps": fps, "segments": truth, "face": True}


# People for multi-face videos: (source image, pasted region x1,y1,x2,y2, face box in the source image).
PEOPLE = {
    "astronaut": ("astronaut", ASTRONAUT_BODY, ASTRONAUT_FACE_BOX),
    "astronaut_mirrored": ("astronaut_mirrored", (152, 0, 412, 320), (239, 57, 334, 177)),
    "cameraman": ("camera", (120, 40, 340, 300), (195, 114, 256, 195)),
}


def _person_source(name: str) -> np.ndarray:
    if name == "astronaut":
        return astronaut_bgr()
    if name == "astronaut_mirrored":
        return np.ascontiguousarray(astronaut_bgr()[:, ::-1])
    return camera_bgr()


def make_multi_face_video(path, people, n_frames: int = 30, width: int = 640, height: int = 360, fps: int = 30,
                          codec: str = "h264", seed: int = 0) -> dict:
    """A video of several real faces moving along straight lines (they may cross, or leave the frame).

    `people`: list of dicts {"who": a key of PEOPLE, "scale": s, "start": (x, y), "end": (x, y)} giving the
    pasted region's top-left corner at the first and last frame. Returns the ground truth: per person,
    per frame, the face box in frame pixels, or None where less than 60 % of the face is in the frame.
    """
    from PIL import Image

    bg = _background(height, width, seed)
    parts = []
    for p in people:
        src_name, (x1, y1, x2, y2), (fx1, fy1, fx2, fy2) = PEOPLE[p["who"]]
        src = _person_source(src_name)[y1:y2, x1:x2]
        s = p["scale"]
        img = np.asarray(Image.fromarray(src).resize((max(1, int(src.shape[1] * s)), max(1, int(src.shape[0] * s))),
                                                     Image.BILINEAR))
        parts.append((img, ((fx1 - x1) * s, (fy1 - y1) * s, (fx2 - x1) * s, (fy2 - y1) * s)))
    truth = [[] for _ in people]

    def frames():
        for t in range(n_frames):
            a = t / max(n_frames - 1, 1)
            f = bg.copy()
            for k, (p, (img, face)) in enumerate(zip(people, parts)):
                x = int(round(p["start"][0] + a * (p["end"][0] - p["start"][0])))
                y = int(round(p["start"][1] + a * (p["end"][1] - p["start"][1])))
                ox, oy = max(0, -x), max(0, -y)
                w, h = min(img.shape[1], width - x) - ox, min(img.shape[0], height - y) - oy
                if w > 0 and h > 0:
                    f[y + oy:y + oy + h, x + ox:x + ox + w] = img[oy:oy + h, ox:ox + w]
                box = [x + face[0], y + face[1], x + face[2], y + face[3]]
                cx1, cy1 = max(box[0], 0), max(box[1], 0)
                cx2, cy2 = min(box[2], width), min(box[3], height)
                inside = max(cx2 - cx1, 0) * max(cy2 - cy1, 0) / ((box[2] - box[0]) * (box[3] - box[1]))
                truth[k].append([round(v, 1) for v in box] if inside >= 0.6 else None)
            yield f

    write_video(path, frames(), fps, codec)
    return {"path": str(path), "frames": n_frames, "fps": fps, "width": width, "height": height,
            "people": [dict(p, boxes=b) for p, b in zip(people, truth)]}


def make_crowd_video(path, rows: int = 4, cols: int = 5, n_frames: int = 8, width: int = 960, height: int = 540) -> dict:
    """rows x cols real faces (the astronaut and her mirror image) in a grid, drifting slowly."""
    cw, ch = width // cols, height // rows
    who = ["astronaut", "astronaut_mirrored"]
    people = []
    for r in range(rows):
        for c in range(cols):
            name = who[(r * cols + c) % 2]
            _, (x1, y1, x2, y2), _ = PEOPLE[name]
            s = min((cw - 8) / (x2 - x1), (ch - 4) / (y2 - y1))
            people.append({"who": name, "scale": s, "start": (c * cw + 2, r * ch + 2), "end": (c * cw + 6, r * ch + 2)})
    return make_multi_face_video(path, people, n_frames=n_frames, width=width, height=height)


# ------------------------------------------------------------------------------------------------
# Colour-tagged clips (tests/test_colours.py): what phones, cameras and the web record.
# ------------------------------------------------------------------------------------------------
# kind -> (codec, pix_fmt, (colorspace, color_range, color_trc, color_primaries) as FFmpeg's AVCOL_* numbers,
# or None for untagged). Ranges: 1 limited (tv), 2 full (pc); H.264 full range decodes as yuvj420p.
COLOUR_CLIPS = {
    "bt709": ("h264", "yuv420p", (1, 1, 1, 1)),
    "bt709 full range": ("h264", "yuv420p", (1, 2, 1, 1)),
    "bt601": ("h264", "yuv420p", (6, 1, 6, 6)),
    "untagged": ("h264", "yuv420p", None),
    "bt2020 hlg 10-bit": ("hevc", "yuv420p10le", (9, 1, 18, 9)),
    "untagged 10-bit": ("hevc", "yuv420p10le", None),
    "untagged 12-bit": ("hevc", "yuv420p12le", None),
}


def write_raw_planes(path, frames, pix_fmt: str = "yuv420p10le", fps: int = 30) -> dict:
    """A rawvideo clip (NUT) of the given planar YUV frames [(y, u, v)] exactly as given: the decoder hands the
    same samples to every reader (OpenCV, PyAV), so their colour conversions can be compared sample for sample."""
    import av

    h, w = frames[0][0].shape
    with av.open(str(path), "w", format="nut") as out:
        st = out.add_stream("rawvideo", rate=fps)
        st.width, st.height, st.pix_fmt = w, h, pix_fmt
        for planes in frames:
            f = av.VideoFrame(w, h, pix_fmt)
            for k, arr in enumerate(planes):
                p = f.planes[k]
                dt = np.dtype(arr.dtype)
                view = np.frombuffer(memoryview(p), dtype=dt).reshape(-1, p.line_size // dt.itemsize)
                view[:arr.shape[0], :arr.shape[1]] = arr
            for pkt in st.encode(f):
                out.mux(pkt)
        for pkt in st.encode():
            out.mux(pkt)
    return {"path": str(path), "frames": len(frames), "width": w, "height": h, "pix_fmt": pix_fmt}


def make_colour_clip(path, kind: str, n_frames: int = 3, width: int = 160, height: int = 128, frames=None) -> dict:
    """A short clip of the moving face (or the given BGR `frames`) encoded as COLOUR_CLIPS[kind] says: codec,
    pixel format and colour tags (matrix, range, transfer, primaries) written into the stream."""
    import av

    codec, pix_fmt, tags = COLOUR_CLIPS[kind]
    name = encoder_for(codec)
    if name is None:
        raise RuntimeError(f"this FFmpeg build has no encoder for {codec}")
    frames = list(frames) if frames is not None else face_frames(n_frames, width, height, seed=5)
    h, w = frames[0].shape[:2]
    with av.open(str(path), mode="w") as out:
        st = out.add_stream(name, rate=30)
        st.width, st.height, st.pix_fmt = w, h, pix_fmt
        opts = {"preset": "ultrafast", "crf": "23"}
        if name == "libx265":
            opts["x265-params"] = "log-level=error"
        st.options = opts
        cc = st.codec_context
        if tags is not None:
            cc.colorspace, cc.color_range, cc.color_trc, cc.color_primaries = tags
        for f in frames:
            vf = av.VideoFrame.from_ndarray(np.ascontiguousarray(f), format="bgr24").reformat(format=pix_fmt)
            for pkt in st.encode(vf):
                out.mux(pkt)
        for pkt in st.encode():
            out.mux(pkt)
    return {"path": str(path), "kind": kind, "frames": len(frames), "width": w, "height": h, "codec": codec,
            "pix_fmt": pix_fmt, "tags": tags}
