"""The emulated arm's cameras, served the way lerobot's network camera reads them.

:class:`CameraServer` renders the plant's scene (``sim/arm``'s ``front`` and ``wrist`` cameras)
in one thread at ``fps`` and publishes each frame on a ZeroMQ PUB socket on loopback, in the
message format of lerobot's ``ZMQCamera`` (``lerobot.cameras.zmq``, what LeKiwi's host
serves): a JSON string ``{"timestamps": {name: t}, "images": {name: <base64 JPEG>}}``. The
arm's driver reads it through lerobot's own ``ZMQCamera`` with ``robot.cameras={front:
zmq://127.0.0.1:PORT/front}``: the real camera code path, over a real socket.

Why not MJPEG over HTTP through lerobot's ``OpenCVCamera``: its ``connect()`` sets and checks
fps, width and height with ``VideoCapture.set``, which a network stream refuses, and a camera
inside a lerobot robot must name all three; so lerobot cannot open an HTTP stream as a robot's
camera (checked with lerobot 0.6.1).
"""

from __future__ import annotations

import base64
import json
import threading
import time
from typing import Any

import numpy as np

CAMERAS = ("front", "wrist")


class CameraServer:
    """Publishes the plant's cameras at ``fps`` on ``tcp://127.0.0.1:<port>`` (0: any free)."""

    def __init__(self, plant: Any, cameras: list[str], width: int = 64, height: int = 64,
                 fps: float = 30.0, port: int = 0, quality: int = 90) -> None:
        import zmq

        unknown = [c for c in cameras if c not in CAMERAS]
        if unknown or not cameras:
            raise ValueError(f"cameras {cameras}: choose from {CAMERAS}")
        if fps <= 0 or width < 1 or height < 1:
            raise ValueError(f"need fps > 0 and a size >= 1, got {fps} Hz {width}x{height}")
        self.plant, self.cameras = plant, list(cameras)
        self.width, self.height, self.fps, self.quality = width, height, fps, quality
        self._context = zmq.Context()
        self._socket = self._context.socket(zmq.PUB)
        self._socket.setsockopt(zmq.SNDHWM, 2)
        if port:
            self._socket.bind(f"tcp://127.0.0.1:{port}")
            self.port = port
        else:
            self.port = self._socket.bind_to_random_port("tcp://127.0.0.1")
        self.frames = 0
        self.error: BaseException | None = None
        self._stop = threading.Event()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, name="emulated-camera", daemon=True)
        self._thread.start()
        self._ready.wait(timeout=30)
        if self.error is not None:
            raise self.error

    @property
    def urls(self) -> dict[str, str]:
        """The ``robot.cameras`` sources: ``zmq://127.0.0.1:PORT/<camera>``."""
        return {c: f"zmq://127.0.0.1:{self.port}/{c}" for c in self.cameras}

    def _run(self) -> None:
        import cv2
        import mujoco

        try:
            from sim import require_rendering

            require_rendering("emulated camera")
            renderer = mujoco.Renderer(self.plant.model, self.height, self.width)
        except BaseException as exc:
            self.error = exc
            self._ready.set()
            return
        self._ready.set()
        period = 1.0 / self.fps
        next_t = time.perf_counter()
        try:
            while not self._stop.is_set():
                images, stamps = {}, {}
                for cam in self.cameras:
                    rgb = self.plant.render(renderer, cam)
                    # RGB handed to imencode as is, as lerobot's image server does with its
                    # cameras' RGB frames: its ZMQCamera decodes them back to RGB
                    ok, jpeg = cv2.imencode(".jpg", np.ascontiguousarray(rgb),
                                            [cv2.IMWRITE_JPEG_QUALITY, self.quality])
                    if ok:
                        images[cam] = base64.b64encode(jpeg.tobytes()).decode("ascii")
                        stamps[cam] = time.time()
                self._socket.send_string(json.dumps({"timestamps": stamps, "images": images}))
                self.frames += 1
                next_t += period
                delay = next_t - time.perf_counter()
                if delay > 0:
                    self._stop.wait(delay)
                else:
                    next_t = time.perf_counter()
        finally:
            renderer.close()

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        self._socket.close(linger=0)
        self._context.term()

    def __enter__(self) -> CameraServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def add_arguments(ap: Any) -> None:
    """The camera flags of an emulator's command line (``robolearn emulate ... cameras=``)."""
    ap.add_argument("--camera", default="", help=f"cameras to serve, comma-separated, from "
                                                 f"{','.join(CAMERAS)} (needs the arm plant)")
    ap.add_argument("--camera-width", type=int, default=64, help="frame width, px")
    ap.add_argument("--camera-height", type=int, default=64, help="frame height, px")
    ap.add_argument("--camera-fps", type=float, default=30.0, help="frames a second")


def serve_from(args: Any, plant: Any, say: Any) -> CameraServer | None:
    """Start the cameras the flags ask for (None: none); ``say`` each ``camera NAME URL``."""
    names = [c for c in args.camera.split(",") if c]
    if not names:
        return None
    if not hasattr(plant, "render"):
        raise SystemExit("--camera needs the simulated arm (--plant so101 or koch)")
    server = CameraServer(plant, names, args.camera_width, args.camera_height, args.camera_fps)
    for name, url in server.urls.items():
        say(f"camera {name} {url}")
    return server
