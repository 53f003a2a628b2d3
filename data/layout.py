"""How features become Zarr v3 arrays: chunking, codecs, and a fast reader for camera frames.

Layout (see README "Episode store" for the whole picture)::

    <store>/zarr.json            root group; attributes["robolearn"] = format, fps, features, ...
    <store>/data/<key>/          one array per feature, all episodes concatenated along time
    <store>/data/timestamp/      float64 seconds since the episode started
    <store>/data/source/         uint8 action source (data.schema.Source)
    <store>/episodes.jsonl       the commit log: one fsync'd JSON line per committed change
    <store>/inflight.json        journal of the episode being recorded (flushed steps)
    <store>/writer.lock          flock'd by the one writer

Codecs (chosen by ``bench/image_codecs.py``, figures in the README):

- Low-dim arrays: Blosc(zstd, level 3, byte shuffle), lossless, chunks of ~1 MiB along time.
- Camera frames: JPEG (libjpeg-turbo via imagecodecs) at quality 90, one frame per inner chunk,
  ``shard_len`` frames per shard file (16 to 256, ~4 MB of raw pixels). Episodes start on a
  shard boundary, so the shards of a committed episode are never rewritten: a reader can cache
  their index and read frames with one ``pread`` each (:class:`FrameReader`), ~7x faster than
  going through zarr's generic path.
- Every chunk carries a crc32c, so a corrupt or truncated file is detected on read.
"""

from __future__ import annotations

import os
import threading
from typing import Any

import crc32c
import imagecodecs
import imagecodecs.zarr
import numpy as np
import zarr
from zarr.codecs import BloscCodec, Crc32cCodec

from data.schema import Feature

imagecodecs.zarr.register_codecs()  # the names written in zarr.json ("imagecodecs_jpeg")

JPEG_QUALITY = 90
LOWDIM_CHUNK_BYTES = 1 << 20
_EMPTY = np.uint64(2**64 - 1)
# Every chunk is written, even one equal to the fill value (zarr skips those by default): a
# missing chunk file then always means lost data, which verify() can report, and an all-black
# camera frame is a real frame, not a hole. This is a runtime setting, so every writer passes it.
WRITE_CONFIG = {"write_empty_chunks": True}


def open_for_write(path: str) -> zarr.Array:
    return zarr.open_array(path, mode="r+", config=WRITE_CONFIG)  # type: ignore[arg-type]


def shard_len_for(features: dict[str, Feature]) -> int:
    """Frames per image shard (one value for all cameras): ~4 MB of raw pixels, 16 to 256.

    Bigger shards mean fewer files; smaller ones mean less rewriting while a recorder flushes
    into a partly filled shard (each flush rewrites the shard so far).

    A store without cameras returns 1: no alignment is needed between episodes.
    """
    image_bytes = [int(np.prod(f.shape)) for f in features.values() if f.image]
    if not image_bytes:
        return 1
    frames = (4 << 20) // max(image_bytes)
    return int(min(256, max(16, 1 << max(0, int(frames).bit_length() - 1))))


def create_feature_array(group: zarr.Group, key: str, feat: Feature, shard_len: int) -> None:
    shape = (0, *feat.shape)
    if feat.image:
        group.create_array(
            key, shape=shape, dtype="uint8", chunks=(1, *feat.shape),
            shards=(shard_len, *feat.shape), serializer=imagecodecs.zarr.Jpeg(level=JPEG_QUALITY),
            compressors=[Crc32cCodec()], fill_value=0)
        return
    step_bytes = int(np.prod(feat.shape, dtype=np.int64)) * np.dtype(feat.dtype).itemsize
    chunk_t = int(max(256, min(1 << 16, LOWDIM_CHUNK_BYTES // max(1, step_bytes))))
    group.create_array(
        key, shape=shape, dtype=feat.dtype, chunks=(chunk_t, *feat.shape),
        compressors=[BloscCodec(cname="zstd", clevel=3, shuffle="shuffle"), Crc32cCodec()],
        fill_value=0)


def array_mismatches(arr: zarr.Array, feat: Feature, shard_len: int) -> list[str]:
    """How an array's own metadata (``data/<key>/zarr.json``) disagrees with the store's schema
    (root ``zarr.json``): dtype, per-step shape, and for cameras the chunking that
    :class:`FrameReader` relies on."""
    out = []
    said = "the store's schema (root zarr.json) says"
    if arr.dtype != np.dtype(feat.dtype):
        out.append(f"dtype {arr.dtype}, but {said} {feat.dtype}")
    if tuple(arr.shape[1:]) != feat.shape:
        out.append(f"steps of shape {tuple(arr.shape[1:])}, but {said} {feat.shape}")
    if feat.image:
        shards = arr.shards[0] if arr.shards is not None else None
        if shards != shard_len:
            out.append(f"camera shards of {shards} frames, but {said} shard_len {shard_len}")
        if tuple(arr.chunks) != (1, *feat.shape):
            out.append(f"chunks {tuple(arr.chunks)}, but a camera needs one frame per chunk "
                       f"{(1, *feat.shape)}")
    return out


def chunk_keys(arr: zarr.Array, start: int, stop: int) -> list[str]:
    """Store keys of the chunk (or shard) files holding time steps [start, stop) of ``arr``."""
    step = arr.shards[0] if arr.shards is not None else arr.chunks[0]
    zeros = "/".join("0" for _ in arr.shape[1:])
    return [f"c/{i}/{zeros}" if zeros else f"c/{i}"
            for i in range(start // step, (stop - 1) // step + 1)] if stop > start else []


class FrameReader:
    """Reads single camera frames from committed, immutable shards with one pread each.

    The shard layout is zarr v3's sharding codec with ``index_location="end"``: the file ends with
    ``shard_len`` (offset, nbytes) uint64 pairs plus a crc32c of them; every inner chunk is JPEG
    bytes followed by their crc32c. Shard indexes are cached: episodes start on shard boundaries,
    so a committed frame's shard never changes (only the shard being recorded into does, and
    readers never read uncommitted frames).
    """

    def __init__(self, array_dir: str, shard_len: int, frame_shape: tuple[int, ...]) -> None:
        self.array_dir = array_dir
        self.shard_len = shard_len
        self.frame_shape = frame_shape
        self._index: dict[int, np.ndarray] = {}
        self._fds: dict[int, int] = {}
        self._lock = threading.Lock()
        self._tail = len(frame_shape)

    def _shard_path(self, shard: int) -> str:
        return os.path.join(self.array_dir, "c", str(shard), *(["0"] * self._tail))

    def _open(self, shard: int) -> tuple[int, np.ndarray]:
        with self._lock:
            if shard in self._index:
                return self._fds[shard], self._index[shard]
            path = self._shard_path(shard)
            fd = os.open(path, os.O_RDONLY)
            size = os.fstat(fd).st_size
            n = 16 * self.shard_len + 4
            if size < n:
                os.close(fd)
                raise ValueError(f"{path}: shard is {size} bytes, shorter than its index ({n})")
            raw = os.pread(fd, n, size - n)
            if crc32c.crc32c(raw[:-4]) != int.from_bytes(raw[-4:], "little"):
                os.close(fd)
                raise ValueError(f"{path}: shard index checksum mismatch (file truncated or "
                                 "corrupt)")
            index = np.frombuffer(raw[:-4], dtype="<u8").reshape(self.shard_len, 2)
            self._fds[shard], self._index[shard] = fd, index
            return fd, index

    def read(self, frame: int) -> np.ndarray:
        shard, j = divmod(int(frame), self.shard_len)
        fd, index = self._open(shard)
        offset, nbytes = index[j]
        if offset == _EMPTY:
            raise ValueError(f"{self._shard_path(shard)}: frame {frame} was never written")
        blob = os.pread(fd, int(nbytes), int(offset))
        if len(blob) != nbytes or crc32c.crc32c(blob[:-4]) != int.from_bytes(blob[-4:], "little"):
            raise ValueError(f"{self._shard_path(shard)}: frame {frame} checksum mismatch at "
                             f"byte offset {int(offset)}")
        img = imagecodecs.jpeg8_decode(blob[:-4])
        return img.reshape(self.frame_shape)

    def close(self) -> None:
        with self._lock:
            for fd in self._fds.values():
                os.close(fd)
            self._fds.clear()
            self._index.clear()

    def __getstate__(self) -> dict[str, Any]:  # file descriptors do not cross processes
        return {"array_dir": self.array_dir, "shard_len": self.shard_len,
                "frame_shape": self.frame_shape}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(**state)  # type: ignore[misc]

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:
            pass
