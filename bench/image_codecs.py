"""Image-codec benchmark: which codec should the Zarr v3 episode store use for camera frames?

Renders a robot-camera "episode" offscreen with MuJoCo (checker floor, wood-textured table,
coloured objects, a capsule arm, two shadow-casting lights; camera, objects and arm move a little
every frame) at 224x224 and 96x96 RGB uint8, and runs each candidate over it, single-threaded:
JPEG (libjpeg-turbo) q75/90/95, WebP q90 (default and fastest method) and lossless, PNG (zlib,
spng; level 1), QOI, JPEG-XL q90 and lossless at effort 1, AVIF q90 at speed 10, raw zstd-3 (all
via imagecodecs; unavailable ones are skipped). Reports bytes/frame, ratio vs raw, encode and
decode ms/frame (median CPU time of --repeats passes), PSNR (lossless ones are checked
bit-exact), max recording steps/s for one camera if encoding were the only cost (1000/enc ms)
and decode frames/s. Picks the smallest codec meeting --min-steps (224), --min-decode-fps (96)
and --min-psnr (224), then checks imagecodecs.zarr.Jpeg inside a sharded zarr 3 array. Without
a working offscreen GL (EGL, then OSMesa) the frames are synthetic, and every table says so.

    .venv/bin/python bench/image_codecs.py [--frames 200] [--quick] [--no-zarr]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import imagecodecs as ic
import numpy as np
from rich.console import Console
from rich.table import Table

SIZES = (224, 96)
console = Console(width=120)

SCENE_XML = """
<mujoco model="codec_bench">
  <visual><quality shadowsize="2048"/><headlight ambient=".25 .25 .25" diffuse=".3 .3 .3"/></visual>
  <asset>
    <texture name="sky" type="skybox" builtin="gradient" rgb1=".6 .7 .9" rgb2=".1 .1 .2"
             width="256" height="256"/>
    <texture name="checker" type="2d" builtin="checker" rgb1=".75 .75 .7" rgb2=".35 .35 .4"
             mark="edge" markrgb=".1 .1 .1" width="512" height="512"/>
    <texture name="wood" type="2d" builtin="flat" rgb1=".55 .4 .25" mark="random" random=".3"
             markrgb=".35 .25 .15" width="256" height="256"/>
    <material name="floor" texture="checker" texrepeat="6 6" reflectance=".1"/>
    <material name="wood" texture="wood" texrepeat="2 2"/>
    <material name="metal" rgba=".75 .75 .8 1" specular=".8" shininess=".6"/>
  </asset>
  <default><default class="leg"><geom type="box" size=".03 .03 .2" material="wood"/></default>
    <default class="finger"><geom type="box" size=".02 .005 .03" rgba=".2 .2 .2 1"/></default>
  </default>
  <worldbody>
    <light pos="1 -1 3" dir="-.3 .3 -1" castshadow="true" diffuse=".7 .7 .7"/>
    <light pos="-1.5 1 2.5" dir=".5 -.3 -1" castshadow="true" diffuse=".3 .3 .3"/>
    <geom type="plane" size="3 3 .1" material="floor"/>
    <body pos="0 0 .4"><geom type="box" size=".6 .4 .02" material="wood"/>
      <geom class="leg" pos=".55 .35 -.2"/><geom class="leg" pos="-.55 .35 -.2"/>
      <geom class="leg" pos=".55 -.35 -.2"/><geom class="leg" pos="-.55 -.35 -.2"/></body>
    <body mocap="true" pos=".15 .1 .46"><geom type="box" size=".04 .04 .04" rgba=".85 .15 .1 1"/>
    </body>
    <body mocap="true" pos="-.1 -.12 .47"><geom type="cylinder" size=".03 .05" rgba=".1 .4 .85 1"/>
    </body>
    <body mocap="true" pos=".3 -.15 .45"><geom type="sphere" size=".03" rgba=".95 .8 .1 1"/></body>
    <body pos="-.35 .2 .42"><geom type="cylinder" size=".06 .02" rgba=".15 .15 .15 1"/>
      <body pos="0 0 .02"><joint axis="0 0 1"/>
        <geom type="capsule" fromto="0 0 0 0 0 .25" size=".03" material="metal"/>
        <body pos="0 0 .25"><joint axis="0 1 0"/>
          <geom type="capsule" fromto="0 0 0 .22 0 0" size=".025" rgba=".9 .5 .1 1"/>
          <body pos=".22 0 0"><joint axis="0 1 0"/>
            <geom type="capsule" fromto="0 0 0 .16 0 0" size=".02" material="metal"/>
            <geom class="finger" pos=".18 .02 0"/><geom class="finger" pos=".18 -.02 0"/>
          </body>
        </body>
      </body>
    </body>
  </worldbody>
</mujoco>
"""

GL_BACKENDS: tuple[dict[str, str], ...] = (
    {"MUJOCO_GL": "egl", "PYOPENGL_PLATFORM": "egl"},
    {"MUJOCO_GL": "osmesa", "PYOPENGL_PLATFORM": "osmesa"},
)
_PROBE = (
    "import mujoco; m = mujoco.MjModel.from_xml_string('<mujoco><worldbody><light/>"
    "<geom type=\"box\" size=\".1 .1 .1\"/></worldbody></mujoco>'); r = mujoco.Renderer(m, 8, 8);"
    "r.update_scene(mujoco.MjData(m)); r.render(); r.close()"
)


def pick_gl_backend() -> str | None:
    """Probe each offscreen backend in a subprocess; export the first that renders."""
    for env in GL_BACKENDS:
        probe = subprocess.run([sys.executable, "-c", _PROBE], env={**os.environ, **env},
                               capture_output=True, timeout=60)
        if probe.returncode == 0:
            os.environ.update(env)
            return env["MUJOCO_GL"]
    return None


def render_frames(n: int, size: int) -> np.ndarray:
    """Render an n-frame episode at size x size with a slowly orbiting camera."""
    import mujoco  # imported late: MUJOCO_GL must be set first

    model = mujoco.MjModel.from_xml_string(SCENE_XML)
    data = mujoco.MjData(model)
    start = data.mocap_pos.copy()
    cam = mujoco.MjvCamera()
    renderer = mujoco.Renderer(model, size, size)
    frames = np.empty((n, size, size, 3), np.uint8)
    try:
        for i in range(n):
            t = i / 30.0  # a 30 Hz camera
            data.qpos[:] = (0.8 * math.sin(0.7 * t), 0.5 + 0.3 * math.sin(t), 0.4 * math.cos(t))
            wobble = [[math.sin(t + k), math.cos(t + k), 0.0] for k in range(3)]
            data.mocap_pos[:] = start + 0.03 * np.array(wobble)
            mujoco.mj_forward(model, data)
            cam.lookat[:] = (0.0, 0.0, 0.45)
            cam.distance = 1.3 + 0.05 * math.sin(0.5 * t)
            cam.azimuth = 120.0 + 15.0 * math.sin(0.3 * t)
            cam.elevation = -30.0 + 5.0 * math.sin(0.4 * t)
            renderer.update_scene(data, camera=cam)
            frames[i] = renderer.render()
    finally:
        renderer.close()
    return frames


def synthetic_frames(n: int, size: int) -> np.ndarray:
    """Fallback when no GL works (NOT realistic): a drifting checkerboard on gradients + noise."""
    yy, xx = np.mgrid[0:size, 0:size] / size
    t = np.arange(n)[:, None, None] / 50
    checker = (np.floor(xx * 8 + t) + np.floor(yy * 8)) % 2
    rgb = np.stack(np.broadcast_arrays(xx + 0.1 * checker, yy, 0.5 + 0.3 * checker), -1) * 200
    noise = np.random.default_rng(0).normal(0, 3, rgb.shape)
    return np.clip(rgb + noise, 0, 255).astype(np.uint8)


@dataclass(frozen=True)
class Codec:
    name: str
    feature: str  # imagecodecs.<feature>.available gates it
    enc: Callable[..., Any]  # imagecodecs.<name>_encode
    enc_kw: dict[str, Any]
    dec: Callable[..., Any]  # imagecodecs.<name>_decode
    lossless: bool

    def encode(self, frame: np.ndarray) -> bytes:
        return self.enc(frame, **self.enc_kw)

    def decode(self, buf: bytes, shape: tuple[int, ...]) -> np.ndarray:
        out = self.dec(buf, numthreads=1) if self.feature in _THREADED else self.dec(buf)
        if isinstance(out, np.ndarray):
            return out
        return np.frombuffer(out, np.uint8).reshape(shape)  # zstd: bytes


_THREADED = {"JPEGXL", "AVIF"}  # their decoders take numthreads; pin them to one thread
_ONE = {"numthreads": 1}


def candidates() -> list[Codec]:
    """All candidates, single-threaded; the fast settings where there is a speed knob.
    NB: webp_encode is LOSSLESS unless lossless=False is passed, whatever the level."""
    jpeg = [Codec(f"jpeg-q{q}", "JPEG8", ic.jpeg8_encode, {"level": q}, ic.jpeg8_decode, False)
            for q in (75, 90, 95)]
    webp_lossy = {"level": 90, "lossless": False}
    return jpeg + [
        Codec("webp-q90", "WEBP", ic.webp_encode, webp_lossy, ic.webp_decode, False),
        Codec("webp-q90-m0", "WEBP", ic.webp_encode, {**webp_lossy, "method": 0}, ic.webp_decode,
              False),
        Codec("webp-lossless-fast", "WEBP", ic.webp_encode,
              {"level": 0, "lossless": True, "method": 0}, ic.webp_decode, True),
        Codec("png-zlib-1", "PNG", ic.png_encode, {"level": 1}, ic.png_decode, True),
        Codec("spng-1", "SPNG", ic.spng_encode, {"level": 1}, ic.spng_decode, True),
        Codec("qoi", "QOI", ic.qoi_encode, {}, ic.qoi_decode, True),
        Codec("jpegxl-q90-e1", "JPEGXL", ic.jpegxl_encode, {"level": 90, "effort": 1, **_ONE},
              ic.jpegxl_decode, False),
        Codec("jpegxl-lossless-e1", "JPEGXL", ic.jpegxl_encode,
              {"lossless": True, "effort": 1, **_ONE}, ic.jpegxl_decode, True),
        Codec("avif-q90-s10", "AVIF", ic.avif_encode, {"level": 90, "speed": 10, **_ONE},
              ic.avif_decode, False),
        Codec("zstd-3 (raw)", "ZSTD", ic.zstd_encode, {"level": 3}, ic.zstd_decode, True),
    ]


@dataclass(frozen=True)
class Result:
    codec: Codec
    size: int
    bytes_per_frame: float
    enc_ms: float
    dec_ms: float
    psnr: float | None  # None: lossless, verified bit-exact

    @property
    def ratio(self) -> float:
        return self.size * self.size * 3 / self.bytes_per_frame


def _median_ms_per_frame(fn: Callable[[], object], n: int, repeats: int, name: str) -> float:
    """Median CPU ms/frame over repeats. CPU time of this process, not wall time, so that other
    jobs on a shared machine don't inflate it; valid because every codec runs on one thread,
    which is checked (CPU time > wall time means a codec used more than one core)."""
    walls, cpus = [], []
    for _ in range(repeats):
        t0, c0 = time.perf_counter(), time.process_time()
        fn()
        walls.append(time.perf_counter() - t0)
        cpus.append(time.process_time() - c0)
    if sum(cpus) > 1.3 * sum(walls):
        console.print(f"[yellow]{name}: cpu/wall {sum(cpus) / sum(walls):.1f}, not single-core[/]")
    return 1000.0 * float(np.median(cpus)) / n


def psnr(ref: np.ndarray, test: np.ndarray) -> float:
    mse = float(np.mean((ref.astype(np.float32) - test.astype(np.float32)) ** 2))
    return math.inf if mse == 0 else 10.0 * math.log10(255.0**2 / mse)


def measure(codec: Codec, frames: np.ndarray, repeats: int) -> Result:
    n, shape = len(frames), frames.shape[1:]
    encoded = [codec.encode(f) for f in frames]  # warm-up pass, kept for sizes and decode
    decoded = np.stack([codec.decode(b, shape) for b in encoded])
    if codec.lossless and not np.array_equal(decoded, frames):
        raise AssertionError(f"{codec.name} is not lossless")
    enc = _median_ms_per_frame(lambda: [codec.encode(f) for f in frames], n, repeats, codec.name)
    dec = _median_ms_per_frame(lambda: [codec.decode(b, shape) for b in encoded], n, repeats,
                               codec.name)
    return Result(codec, frames.shape[1], float(np.mean([len(b) for b in encoded])), enc, dec,
                  None if codec.lossless else psnr(frames, decoded))


def print_size_table(results: list[Result], size: int, label: str) -> None:
    table = Table(title=f"{size}x{size} RGB ({label}), sorted by bytes/frame")
    for col in ("codec", "bytes/frame", "ratio", "enc ms", "dec ms", "PSNR dB",
                "steps/s=1000/enc", "dec fps"):
        table.add_column(col, justify="left" if col == "codec" else "right")
    for r in sorted((r for r in results if r.size == size), key=lambda r: r.bytes_per_frame):
        table.add_row(r.codec.name, f"{r.bytes_per_frame:,.0f}", f"{r.ratio:.1f}x",
                      f"{r.enc_ms:.3f}", f"{r.dec_ms:.3f}",
                      "lossless" if r.psnr is None else f"{r.psnr:.1f}",
                      f"{1000 / r.enc_ms:,.0f}", f"{1000 / r.dec_ms:,.0f}")
    console.print(table)


def recommend(results: list[Result], args: argparse.Namespace) -> None:
    """Smallest codec that records a 224x224 camera fast enough, decodes 96x96 fast enough for
    training and keeps PSNR >= --min-psnr at 224x224 (lossless codecs always qualify)."""
    res = {(r.codec.name, r.size): r for r in results}
    ok = [r for r in results if r.size == 224 and 1000 / r.enc_ms >= args.min_steps
          and (r.psnr is None or r.psnr >= args.min_psnr) and (r.codec.name, 96) in res
          and 1000 / res[r.codec.name, 96].dec_ms >= args.min_decode_fps]
    rule = (f">= {args.min_steps:.0f} steps/s at 224, >= {args.min_decode_fps:.0f} decode fps "
            f"at 96, PSNR >= {args.min_psnr} dB")
    if not ok:
        console.print(f"[red]no codec meets {rule}[/]")
        return
    ok.sort(key=lambda r: r.bytes_per_frame)
    best, small = ok[0], res[ok[0].codec.name, 96]
    console.print(f"[bold green]pick: {best.codec.name}[/] ({rule}): "
                  f"{best.bytes_per_frame:,.0f} B/frame at 224 ({best.ratio:.1f}x), "
                  f"{1000 / best.enc_ms:,.0f} steps/s, {1000 / small.dec_ms:,.0f} decode fps at "
                  f"96. Eligible, smallest first: {', '.join(r.codec.name for r in ok)}")


_REOPEN = (  # argv: store path, then "none" | "import" | "register"
    "import sys, zarr\nif sys.argv[2] != 'none': import imagecodecs.zarr\n"
    "if sys.argv[2] == 'register': imagecodecs.zarr.register_codecs(['jpeg'])\n"
    "try: a = zarr.open_array(sys.argv[1], mode='r'); a[:]; a[5]; print('ok')\n"
    "except Exception as e: print(type(e).__name__)"
)


def check_zarr(frames: np.ndarray) -> None:
    """imagecodecs.zarr.Jpeg as the inner codec of a sharded zarr 3 array, reopened from disk:
    with zarr's default compressors, with none, and with crc32c."""
    import imagecodecs.zarr as icz
    import zarr
    from zarr.codecs import Crc32cCodec

    n, h, w, c = frames.shape
    variants: dict[str, Any] = {"auto (default)": "auto", "None": None, "crc32c": [Crc32cCodec()]}
    with tempfile.TemporaryDirectory() as tmp:
        for label, compressors in variants.items():
            path = Path(tmp) / f"v{len(label)}.zarr"
            arr = zarr.create_array(store=str(path), shape=frames.shape, chunks=(1, h, w, c),
                                    shards=(64, h, w, c), dtype="uint8",
                                    serializer=icz.Jpeg(level=90), compressors=compressors)
            arr[:] = frames
            reopen = {mode: subprocess.run([sys.executable, "-c", _REOPEN, str(path), mode],
                                           capture_output=True, text=True).stdout.strip()
                      for mode in ("none", "import", "register")}  # bare / import / register
            icz.register_codecs(["jpeg"])  # needed before open_array in this process too
            back = np.asarray(zarr.open_array(str(path), mode="r")[:])
            inner = json.loads((path / "zarr.json").read_text())["codecs"][0]["configuration"]
            disk = sum(f.stat().st_size for f in path.rglob("c/**/*") if f.is_file())
            names = [cd["name"] for cd in inner["codecs"]]
            console.print(f"zarr sharded Jpeg(level=90), compressors={label}: {n} x {h}x{w}, "
                          f"{disk / n:,.0f} B/frame on disk, PSNR {psnr(frames, back):.1f} dB, "
                          f"inner codecs {names}; reopen in a fresh process: {reopen}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=200)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="60 frames, 1 timing pass")
    parser.add_argument("--no-zarr", action="store_true", help="skip the zarr integration check")
    parser.add_argument("--min-steps", type=float, default=300.0)
    parser.add_argument("--min-psnr", type=float, default=36.0)
    parser.add_argument("--min-decode-fps", type=float, default=10000.0,
                        help="per core at 96x96 (256 batch x 2 cams x 2 obs steps x ~10 it/s)")
    args = parser.parse_args()
    n, repeats = (min(args.frames, 60), 1) if args.quick else (args.frames, args.repeats)

    backend = pick_gl_backend()
    label = f"MuJoCo {backend} render" if backend else "SYNTHETIC frames, no GL backend worked"
    render = render_frames if backend else synthetic_frames
    t0 = time.perf_counter()
    episodes = {size: render(n, size) for size in SIZES}
    console.print(f"{n} frames per size, {label}, {time.perf_counter() - t0:.1f}s; "
                  f"imagecodecs {ic.__version__}, single thread, median of {repeats}")

    codecs = [c for c in candidates() if getattr(ic, c.feature).available]
    skipped = sorted({c.feature for c in candidates()} - {c.feature for c in codecs})
    if skipped:
        console.print(f"[yellow]unavailable, skipped: {', '.join(skipped)}[/]")
    results = [measure(c, episodes[s], repeats) for s in SIZES for c in codecs]
    for size in SIZES:
        print_size_table(results, size, label)
    recommend(results, args)
    if not args.no_zarr:
        check_zarr(episodes[96][:130])


if __name__ == "__main__":
    main()
