"""Camera sources and the freshest-frame reader, on real clips and images written by OpenCV.

Every frame carries its number drawn as ten black/white blocks, so a test can tell which frame
it got after JPEG compression. The only fake here is ``jetson_utils``: it needs a Jetson's GPU
and a CSI camera, which cannot exist on this machine, so a stand-in module is put into
``sys.modules`` to check the import and the option mapping.
"""

from __future__ import annotations

import functools
import http.server
import itertools
import logging
import socket
import sys
import threading
import time
import types
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import ClassVar

import cv2
import numpy as np
import pytest

from edge.camera import (
    CameraError,
    CameraUnavailable,
    Frame,
    FrameSource,
    ImageDirSource,
    JetsonSource,
    LatestFrameReader,
    NullSource,
    OpenCVCaptureSource,
    VideoFileSource,
    backoff_delay,
    gstreamer_available,
    jetson_argv,
    make_source,
    open_source,
    parse_jetson_options,
    parse_source,
    redact_url,
)
from edge.camera import jetson as jetson_mod
from edge.config import CameraConfig

BITS = 10
BLOCK = 16
W, H = BITS * BLOCK, 96


def draw(n: int) -> np.ndarray:
    """A BGR frame whose top row of blocks spells ``n`` in binary (most significant first)."""
    img = np.full((H, W, 3), 60, np.uint8)
    for bit in range(BITS):
        if n >> (BITS - 1 - bit) & 1:
            img[:BLOCK, bit * BLOCK:(bit + 1) * BLOCK] = 255
        else:
            img[:BLOCK, bit * BLOCK:(bit + 1) * BLOCK] = 0
    return img


def counter(pixels: np.ndarray) -> int:
    centre = BLOCK // 2
    bits = [int(pixels[centre, b * BLOCK + centre].mean() > 127) for b in range(BITS)]
    return int("".join(map(str, bits)), 2)


def write_clip(path: Path, frames: int, fps: float = 25.0) -> Path:
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), fps, (W, H))
    assert writer.isOpened(), "this OpenCV cannot write MJPG/AVI"
    for n in range(frames):
        writer.write(draw(n))
    writer.release()
    return path


def read_all(source: FrameSource, limit: int = 1000) -> list[Frame]:
    source.open()
    out: list[Frame] = []
    try:
        while len(out) < limit:
            frame = source.read()
            if frame is None:
                break
            out.append(frame)
    finally:
        source.close()
    return out


def wait_until(cond: Callable[[], bool], what: str, limit_s: float = 15.0) -> None:
    """Poll for a condition; the limit only stops a broken test from hanging."""
    deadline = time.monotonic() + limit_s
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError(f"gave up waiting for {what}")
        time.sleep(0.005)


def assert_paced(frames: list[Frame], period: float) -> None:
    """Frame k is never released before its slot k periods after the first.

    Pacing only ever delays a frame, so this holds however loaded the machine is; half a period
    of slack absorbs a scheduler hiccup between the first frame's release and its timestamp.
    """
    t0 = frames[0].t_capture
    late = [k for k, f in enumerate(frames) if f.t_capture - t0 < (k - 0.5) * period]
    assert not late, f"frames {late} came early for {1 / period:g} fps"


@pytest.fixture
def clip(tmp_path: Path) -> Path:
    return write_clip(tmp_path / "clip.avi", 12, fps=25.0)


# -- video file ----------------------------------------------------------------------------------


def test_counter_survives_mjpeg(clip: Path) -> None:
    cap = cv2.VideoCapture(str(clip))
    ok, pixels = cap.read()
    cap.release()
    assert ok and counter(pixels) == 0 and counter(draw(777)) == 777


def test_video_file_reads_every_frame_in_order(clip: Path) -> None:
    source = VideoFileSource(clip, realtime=False)
    frames = read_all(source)
    assert [counter(f.pixels) for f in frames] == list(range(12))
    assert [f.index for f in frames] == list(range(12))
    f0 = frames[0]
    assert f0.pixels.shape == (H, W, 3) and f0.pixels.dtype == np.uint8
    assert source.fps == pytest.approx(25.0) and source.size == (W, H)
    assert all(b.t_capture >= a.t_capture for a, b in itertools.pairwise(frames))
    assert isinstance(source, FrameSource)


def test_video_file_realtime_is_paced_to_the_clip_fps(tmp_path: Path) -> None:
    fps = 20.0
    path = write_clip(tmp_path / "paced.avi", 8, fps=fps)
    paced = read_all(VideoFileSource(path, realtime=True))
    period = 1.0 / fps
    assert len(paced) == 8
    assert_paced(paced, period)

    fast = read_all(VideoFileSource(path, realtime=False))
    assert fast[-1].t_capture - fast[0].t_capture < 7 * period * 0.5


def test_video_file_fps_override_paces_at_configured_rate(tmp_path: Path) -> None:
    path = write_clip(tmp_path / "slow.avi", 4, fps=100.0)
    source = VideoFileSource(path, realtime=True, fps=10.0)
    frames = read_all(source)
    assert source.fps == 10.0
    assert_paced(frames, 0.1)


def test_video_file_loops_and_keeps_counting(tmp_path: Path) -> None:
    path = write_clip(tmp_path / "short.avi", 5)
    frames = read_all(VideoFileSource(path, realtime=False, loop=True), limit=12)
    assert [counter(f.pixels) for f in frames] == [0, 1, 2, 3, 4, 0, 1, 2, 3, 4, 0, 1]
    assert [f.index for f in frames] == list(range(12))


def test_video_file_missing_or_not_a_video(tmp_path: Path) -> None:
    with pytest.raises(CameraError, match="no such video file"):
        VideoFileSource(tmp_path / "nope.avi").open()
    junk = tmp_path / "junk.avi"
    junk.write_text("this is not a video\n" * 50)
    with pytest.raises(CameraError, match="not a video"):
        VideoFileSource(junk).open()
    with pytest.raises(CameraError, match="before open"):
        VideoFileSource(junk).read()


# -- image directory -----------------------------------------------------------------------------


def write_images(folder: Path, numbers: list[int]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for n in numbers:
        assert cv2.imwrite(str(folder / f"frame{n}.png"), draw(n))
    return folder


def test_image_directory_natural_order_skips_junk(tmp_path: Path) -> None:
    folder = write_images(tmp_path / "imgs", [1, 2, 3, 9, 10, 11])
    (folder / "frame5.png").write_bytes(b"not a png")  # sorts between 3 and 9, cannot decode
    (folder / "notes.txt").write_text("ignored: not an image suffix")
    source = ImageDirSource(folder, realtime=False)
    frames = read_all(source)
    assert [counter(f.pixels) for f in frames] == [1, 2, 3, 9, 10, 11]
    assert source.skipped == 1 and source.size == (W, H)
    assert source.fps == 10.0  # default when [camera] fps = 0


def test_image_directory_paced_and_looped(tmp_path: Path) -> None:
    folder = write_images(tmp_path / "imgs", [0, 1, 2])
    source = ImageDirSource(folder, realtime=True, loop=True, fps=40.0)
    frames = read_all(source, limit=7)
    assert [counter(f.pixels) for f in frames] == [0, 1, 2, 0, 1, 2, 0]
    assert_paced(frames, 1 / 40.0)


def test_image_directory_bad_inputs(tmp_path: Path) -> None:
    with pytest.raises(CameraError, match="no such directory"):
        ImageDirSource(tmp_path / "missing").open()
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(CameraError, match="no images"):
        ImageDirSource(empty).open()
    junk = tmp_path / "junk"
    junk.mkdir()
    (junk / "a.jpg").write_bytes(b"\xff\xd8 broken")
    source = ImageDirSource(junk, loop=True, realtime=False)
    source.open()
    with pytest.raises(CameraError, match="none of its 1 images"):
        source.read()


# -- none ----------------------------------------------------------------------------------------


def test_none_source_has_no_frames() -> None:
    source = make_source(CameraConfig(source="none"), detect_jetson=False)
    assert isinstance(source, NullSource) and source.kind == "none"
    assert read_all(source) == [] and source.size == (0, 0) and source.fps == 0.0
    with LatestFrameReader(source) as reader:
        assert reader.get(timeout=5.0) is None
        wait_until(lambda: reader.finished, "the none source to end")
        assert reader.error is None and reader.wait_open(5.0)


# -- LatestFrameReader ---------------------------------------------------------------------------


def test_slow_consumer_gets_newest_frames_and_drops_are_counted(tmp_path: Path) -> None:
    path = write_clip(tmp_path / "fast.avi", 40, fps=200.0)
    reader = LatestFrameReader(VideoFileSource(path, realtime=True), name="test")
    got: list[Frame] = []
    with reader:
        while True:
            # Be "slow" without timing: wait until capture is at least two frames ahead.
            last = got[-1].index if got else -1
            wait_until(lambda last=last: reader.stats.captured >= min(last + 3, 40)
                       or reader.finished, "capture to get ahead")
            frame = reader.get(timeout=5.0)
            if frame is None:
                break
            got.append(frame)
        stats = reader.stats
    indices = [f.index for f in got]
    assert indices == sorted(set(indices)), "each frame newer than the one before"
    assert all(counter(f.pixels) == f.index for f in got)
    assert stats.dropped > 0 and stats.captured == 40
    assert stats.delivered == len(got) and stats.delivered + stats.dropped == 40
    assert indices[-1] == 39  # the end is not dropped: the last frame waits for the consumer
    assert reader.finished and reader.error is None and stats.state == "ended"


def test_replay_without_realtime_delivers_every_frame(tmp_path: Path) -> None:
    path = write_clip(tmp_path / "all.avi", 30)
    with LatestFrameReader(VideoFileSource(path, realtime=False)) as reader:
        got = []
        while (frame := reader.get(timeout=5.0)) is not None:
            got.append(counter(frame.pixels))
            if len(got) % 10 == 0:
                time.sleep(0.02)  # a slow stage: capture must wait, not overwrite
        assert got == list(range(30))
        assert reader.stats.dropped == 0


def test_lost_device_is_retried_with_backoff_and_thread_survives() -> None:
    states: list[tuple[str, int]] = []

    def on_state(state: str, attempts: int) -> None:
        states.append((state, attempts))
        raise RuntimeError("a faulty callback must not stop the capture thread")

    source = make_source(CameraConfig(source="/dev/video97"), detect_jetson=False)
    assert isinstance(source, OpenCVCaptureSource) and source.kind == "device"
    reader = LatestFrameReader(source, on_state=on_state, backoff_initial_s=0.005,
                               backoff_max_s=0.02, join_timeout_s=5.0)
    reader.start()
    try:
        wait_until(lambda: reader.stats.failed_attempts >= 6, "six failed attempts")
        assert reader.running
        stats = reader.stats
        assert stats.state == "lost" and stats.outages == 1
        assert stats.last_backoff_s == pytest.approx(0.02)  # capped
        assert states == [("lost", 1)]  # reported once per outage, not per attempt
        assert reader.get(timeout=0.05) is None and not reader.finished
        assert not reader.wait_open(0.01)
    finally:
        reader.close()
    assert not reader.running


def test_backoff_doubles_up_to_the_cap() -> None:
    assert [backoff_delay(a, 0.5, 30.0) for a in range(1, 9)] == [
        0.5, 1.0, 2.0, 4.0, 8.0, 16.0, 30.0, 30.0]
    assert backoff_delay(10_000, 0.5, 30.0) == 30.0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def http_server(tmp_path: Path) -> Iterator[Callable[[int], None]]:
    """Starts a real HTTP server serving tmp_path on a given port when asked."""
    servers: list[http.server.ThreadingHTTPServer] = []

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args: object) -> None:
            return None

    def start(port: int) -> None:
        handler = functools.partial(Quiet, directory=str(tmp_path))
        server = http.server.ThreadingHTTPServer(("127.0.0.1", port), handler)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        servers.append(server)

    yield start
    for server in servers:
        server.shutdown()
        server.server_close()


def test_stream_that_comes_up_later_is_opened_then_reopened(
        tmp_path: Path, http_server: Callable[[int], None]) -> None:
    write_clip(tmp_path / "cam.avi", 6)
    port = free_port()
    source = make_source(CameraConfig(source=f"http://127.0.0.1:{port}/cam.avi"),
                         detect_jetson=False)
    assert source.kind == "stream"
    states: list[tuple[str, int]] = []
    reader = LatestFrameReader(source, on_state=lambda s, a: states.append((s, a)),
                               backoff_initial_s=0.01, backoff_max_s=0.05)
    with reader:
        wait_until(lambda: reader.stats.failed_attempts >= 2, "failures before the server")
        assert states == [("lost", 1)]
        http_server(port)
        assert reader.wait_open(15.0)
        frame = reader.get(timeout=10.0)
        assert frame is not None and 0 <= counter(frame.pixels) < 6
        # The "stream" ends with the file: a live source treats that as lost and reconnects.
        wait_until(lambda: ("reopened",) in [s[:1] for s in states], "a reconnect")
        assert reader.running
    assert states[0] == ("lost", 1) and states[1][0] == "open" and states[1][1] >= 2


def test_close_is_quick_even_in_a_long_pacing_wait(tmp_path: Path) -> None:
    folder = write_images(tmp_path / "imgs", [0, 1])
    source = ImageDirSource(folder, realtime=True, fps=0.2, loop=True)  # 5 s between frames
    reader = LatestFrameReader(source, join_timeout_s=2.0).start()
    assert reader.get(timeout=10.0) is not None
    reader.close()  # the second frame is 5 s away: interrupt() must cut that wait
    assert not reader.running


def test_clip_deleted_before_start_fails_for_good(clip: Path) -> None:
    source = make_source(CameraConfig(source=str(clip)), detect_jetson=False)
    clip.unlink()
    with LatestFrameReader(source) as reader:
        with pytest.raises(CameraError, match="no such video file"):
            reader.get(timeout=10.0)
        assert reader.finished and reader.stats.state == "failed"


# -- factory -------------------------------------------------------------------------------------


def test_parse_source_kinds(clip: Path, tmp_path: Path) -> None:
    folder = write_images(tmp_path / "imgs", [0])
    cases: dict[str, tuple[str, object]] = {
        "none": ("none", "none"),
        " NONE ": ("none", "none"),
        "/dev/video0": ("device", "/dev/video0"),
        "2": ("device", 2),
        "v4l2:///dev/video1": ("device", "/dev/video1"),
        "opencv:/dev/video3": ("device", "/dev/video3"),
        "rtsp://cam.local:554/stream1": ("stream", "rtsp://cam.local:554/stream1"),
        "http://10.0.0.5/mjpg/video.mjpg": ("stream", "http://10.0.0.5/mjpg/video.mjpg"),
        "videotestsrc ! videoconvert ! appsink": ("gstreamer",
                                                   "videotestsrc ! videoconvert ! appsink"),
        str(clip): ("file", str(clip)),
        f"file://{clip}": ("file", str(clip)),
        str(folder): ("images", str(folder)),
    }
    for text, (kind, target) in cases.items():
        spec = parse_source(text)
        assert (spec.kind, spec.target) == (kind, target), text


def test_url_passwords_never_reach_messages(caplog: pytest.LogCaptureFixture) -> None:
    port = free_port()
    url = f"rtsp://admin:s3cret@127.0.0.1:{port}/live"
    spec = parse_source(url)
    assert spec.display == f"rtsp://admin:***@127.0.0.1:{port}/live"
    assert redact_url("http://host/x") == "http://host/x"
    source = make_source(CameraConfig(source=url), detect_jetson=False)
    caplog.set_level(logging.DEBUG)
    with pytest.raises(CameraUnavailable) as err:
        source.open()
    assert "s3cret" not in str(err.value) and "***" in str(err.value)
    assert "s3cret" not in caplog.text


@pytest.mark.parametrize(("text", "message"), [
    ("", "empty"),
    ("foo://bar", "unknown scheme foo://"),
    ("/no/such/clip.mp4", "no such file or directory"),
    ("csi://0", "jetson_utils"),
    ("jetson:csi://0", "jetson_utils"),
    ("rtp://@:1234", "rtp:// needs jetson_utils"),
    ("v4l2://camera", "not /dev/videoN"),
])
def test_bad_source_strings_are_clear_errors(text: str, message: str) -> None:
    with pytest.raises(CameraError, match=message):
        make_source(CameraConfig(source=text), detect_jetson=False)


def test_special_path_is_neither_file_nor_directory() -> None:
    with pytest.raises(CameraError, match="neither a file nor a directory"):
        parse_source("/dev/null")


def test_gstreamer_pipeline_needs_gstreamer_in_opencv() -> None:
    config = CameraConfig(source="videotestsrc num-buffers=3 ! videoconvert ! appsink")
    if gstreamer_available():
        source = make_source(config, detect_jetson=False)
        assert source.kind == "gstreamer"
    else:
        with pytest.raises(CameraError, match="no GStreamer support"):
            make_source(config, detect_jetson=False)


def test_open_source_opens_at_once(clip: Path) -> None:
    source = open_source(CameraConfig(source=str(clip), realtime=False), detect_jetson=False)
    try:
        frame = source.read()
        assert frame is not None and counter(frame.pixels) == 0
    finally:
        source.close()
    with pytest.raises(CameraUnavailable):
        open_source(CameraConfig(source="/dev/video98"), detect_jetson=False)


def test_jetson_options_set_for_an_opencv_source_is_refused(clip: Path) -> None:
    with pytest.raises(CameraError, match="not read through jetson_utils"):
        make_source(CameraConfig(source=str(clip), jetson_options="codec=h264"),
                    detect_jetson=False)


@pytest.mark.parametrize(("text", "message"), [
    ("codec", "not key=value"),
    ("codec=", "not key=value"),
    ("bitrate=5", "unknown option 'bitrate'"),
    ("codec=divx", "codec 'divx'"),
    ("flip=upside", "flip 'upside'"),
    ("latency=-3", "positive integer"),
])
def test_bad_jetson_options_are_clear_errors(text: str, message: str) -> None:
    with pytest.raises(CameraError, match=message):
        parse_jetson_options(text)


# -- jetson_utils (fake module: a Jetson GPU / CSI camera cannot exist here) ---------------------


class FakeVideoSource:
    """Stands in for jetson_utils.videoSource: records how it was built, returns RGB frames."""

    created: ClassVar[list[FakeVideoSource]] = []

    def __init__(self, uri: str, argv: list[str] | None = None) -> None:
        self.uri, self.argv = uri, list(argv or [])
        self.opened = self.closed = False
        self.frames = 2
        self.streaming = True
        FakeVideoSource.created.append(self)

    # Method names are jetson_utils' own.
    def Open(self) -> None:
        self.opened = True

    def Close(self) -> None:
        self.closed = True

    formats: ClassVar[tuple[str, ...]] = ("rgb8", "bgr8")

    def Capture(self, format: str = "rgb8",
                timeout: int = 1000) -> np.ndarray | None:
        self.asked = [*getattr(self, "asked", []), format]
        if format not in self.formats:
            raise Exception(f"videoSource.Capture() -- unsupported image format '{format}'")
        if self.frames == 0:
            self.streaming = False
            raise Exception("videoSource failed to capture image")  # what jetson_utils raises
        self.frames -= 1
        image = np.zeros((4, 6, 3), np.uint8)
        image[..., 0 if format == "rgb8" else 2] = 200  # red, in the order asked for
        return image

    def GetWidth(self) -> int:
        return 6

    def GetHeight(self) -> int:
        return 4

    def GetFrameRate(self) -> float:
        return 30.0

    def IsStreaming(self) -> bool:
        return self.streaming


@pytest.fixture
def fake_jetson(monkeypatch: pytest.MonkeyPatch) -> types.ModuleType:
    module = types.ModuleType("jetson_utils")
    module.videoSource = FakeVideoSource  # type: ignore[attr-defined]
    module.cudaToNumpy = lambda image: image  # type: ignore[attr-defined]
    module.cudaDeviceSynchronize = lambda: None  # type: ignore[attr-defined]
    FakeVideoSource.created = []
    monkeypatch.setitem(sys.modules, "jetson_utils", module)
    return module


def test_jetson_argv_mapping() -> None:
    assert jetson_argv() == ["edge-face"]
    assert jetson_argv(width=1280, height=720, fps=29.97, loop=True,
                       options=parse_jetson_options("codec=H264 flip=rotate-180 latency=200 "
                                                    "buffers=4")) == [
        "edge-face", "--input-width=1280", "--input-height=720", "--input-rate=29.97",
        "--input-loop=-1", "--input-codec=h264", "--input-flip=rotate-180",
        "--input-rtsp-latency=200", "--num-buffers=4"]


def test_csi_camera_through_jetson_utils(fake_jetson: types.ModuleType) -> None:
    config = CameraConfig(source="csi://0", width=1280, height=720, fps=30.0,
                          jetson_options="flip=rotate-180")
    source = make_source(config)  # finds the module by importing it, as on a Jetson
    assert isinstance(source, JetsonSource) and source.live
    source.open()
    made = FakeVideoSource.created[-1]
    assert made.uri == "csi://0" and made.opened
    assert made.argv == ["edge-face", "--input-width=1280", "--input-height=720",
                         "--input-rate=30", "--input-flip=rotate-180"]
    assert source.size == (6, 4) and source.fps == 30.0
    frame = source.read()
    assert frame is not None and frame.pixels.shape == (4, 6, 3)
    assert tuple(frame.pixels[0, 0]) == (0, 0, 200)  # converted to BGR
    source.read()
    with pytest.raises(CameraUnavailable, match="stream stopped"):
        source.read()  # a live camera that stops is lost, not ended
    source.close()
    assert made.closed


def test_jetson_frames_come_as_bgr8_or_fall_back_to_rgb8(fake_jetson: types.ModuleType,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    source = make_source(CameraConfig(source="csi://0"))
    source.open()
    frame = source.read()
    assert frame is not None and tuple(frame.pixels[0, 0]) == (0, 0, 200)
    assert FakeVideoSource.created[-1].asked == ["bgr8"]  # converted on the GPU, one copy
    monkeypatch.setattr(FakeVideoSource, "formats", ("rgb8",))  # an older jetson-utils
    older = make_source(CameraConfig(source="csi://0"))
    older.open()
    frames = [older.read(), older.read()]
    assert all(f is not None and tuple(f.pixels[0, 0]) == (0, 0, 200) for f in frames)
    assert FakeVideoSource.created[-1].asked == ["bgr8", "rgb8", "rgb8"]


def test_jetson_preferred_for_v4l2_and_rtsp_when_importable(fake_jetson: types.ModuleType,
                                                            clip: Path) -> None:
    assert parse_source("/dev/video0", jetson=fake_jetson).kind == "jetson"
    assert parse_source("1", jetson=fake_jetson).target == "/dev/video1"
    assert parse_source("v4l2:///dev/video0", jetson=fake_jetson).kind == "jetson"
    assert parse_source("rtsp://cam/x", jetson=fake_jetson).kind == "jetson"
    assert parse_source("opencv:rtsp://cam/x", jetson=fake_jetson).kind == "stream"
    assert parse_source("http://cam/x", jetson=fake_jetson).kind == "stream"
    assert parse_source(str(clip), jetson=fake_jetson).kind == "file"  # paced by us
    assert parse_source("jetson:" + str(clip), jetson=fake_jetson).kind == "jetson"


def test_jetson_file_ends_instead_of_being_lost(fake_jetson: types.ModuleType,
                                                clip: Path) -> None:
    source = make_source(CameraConfig(source=f"file://{clip}", loop=True))
    assert isinstance(source, JetsonSource) and not source.live
    frames = read_all(source)
    assert len(frames) == 2 and [f.index for f in frames] == [0, 1]
    assert "--input-loop=-1" in FakeVideoSource.created[-1].argv


def test_jetson_open_failure_is_retryable(fake_jetson: types.ModuleType,
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(self: FakeVideoSource) -> None:
        raise Exception("failed to open videoSource device for streaming")

    monkeypatch.setattr(FakeVideoSource, "Open", refuse)
    source = make_source(CameraConfig(source="csi://1"))
    with pytest.raises(CameraUnavailable, match="cannot open"):
        source.open()


def test_jetson_capture_timeouts_become_lost(fake_jetson: types.ModuleType,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(jetson_mod, "READ_TIMEOUT_S", 0.0)
    monkeypatch.setattr(FakeVideoSource, "Capture", lambda self, **kw: None)  # newer: None
    source = make_source(CameraConfig(source="csi://0"))
    source.open()
    with pytest.raises(CameraUnavailable, match="no frame"):
        source.read()


@pytest.mark.skipif(jetson_mod.import_jetson_utils() is not None,
                    reason="jetson_utils is really installed here")
def test_jetson_source_without_jetson_utils_is_a_clear_error() -> None:
    with pytest.raises(CameraError, match="not importable"):
        JetsonSource("csi://0")
