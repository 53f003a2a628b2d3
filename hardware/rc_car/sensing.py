"""What the RC car knows of its own motion: the encoder's speed and a dead-reckoned pose
(:class:`Odometry`), or the pose from an external localisation stream (:class:`PoseStream`)."""

from __future__ import annotations

import json
import math
import time
from typing import Any

from hardware.rc_car import protocol as P
from robolearn.robot import RobotError


class Odometry:
    """Speed from encoder edge timestamps (whole ticks over their exact span); dead-reckoned
    pose through the bicycle model, from where :meth:`place` put it."""

    def __init__(self, ticks_per_metre: float, wheelbase: float, max_steer: float) -> None:
        self.ticks_per_metre, self.wheelbase, self.max_steer = ticks_per_metre, wheelbase, max_steer
        self.speed = 0.0
        self.x = self.y = self.yaw = 0.0
        self._ticks: int | None = None
        self._edge_us = 0

    def place(self, x: float, y: float, yaw: float) -> None:
        self.x, self.y, self.yaw = x, y, yaw

    def update(self, t: P.Telemetry, steer: float, direction: float) -> None:
        if self._ticks is None:
            self._ticks, self._edge_us = t.ticks, t.last_edge_us
            return
        dticks = (t.ticks - self._ticks) & 0xFFFFFFFF
        if dticks:
            dt = ((t.last_edge_us - self._edge_us) & 0xFFFFFFFF) / 1e6
            if dt > 0:
                self.speed = dticks / self.ticks_per_metre / dt
            self._ticks, self._edge_us = t.ticks, t.last_edge_us
            ds = direction * dticks / self.ticks_per_metre
            self.yaw += ds * math.tan(steer * self.max_steer) / self.wheelbase
            self.x += ds * math.cos(self.yaw)
            self.y += ds * math.sin(self.yaw)
        elif ((t.time_us - t.last_edge_us) & 0xFFFFFFFF) > 150_000:
            self.speed = 0.0  # no edge for 150 ms: standing (below ~0.05 m/s)


class PoseStream:
    """The newest pose of a ZeroMQ stream of JSON ``{"t", "x", "y", "yaw"}`` (motion capture,
    RTK GPS, or the emulator's); older than ``timeout_s`` is a lost localisation."""

    def __init__(self, url: str, timeout_s: float) -> None:
        import zmq

        self.url, self.timeout_s = url, timeout_s
        self._zmq = zmq
        self._pose: tuple[float, float, float, float] | None = None  # x, y, yaw, received at
        sock: Any = zmq.Context.instance().socket(zmq.SUB)
        sock.setsockopt(zmq.CONFLATE, 1)  # only the newest pose matters
        sock.setsockopt_string(zmq.SUBSCRIBE, "")
        sock.connect("tcp://" + url[len("zmq://"):])
        self._sock = sock
        if not sock.poll(2000):
            self.close()
            raise RobotError(f"rc_car: no pose from robot.localisation = {url} within 2 s")
        self.read()

    def read(self) -> tuple[float, float, float]:
        while True:
            try:
                msg = self._sock.recv_string(self._zmq.NOBLOCK)
            except self._zmq.Again:
                break
            try:
                d = json.loads(msg)
                self._pose = (float(d["x"]), float(d["y"]), float(d["yaw"]), time.monotonic())
            except (ValueError, KeyError, TypeError) as exc:
                raise RobotError(f"rc_car: bad message from robot.localisation = {self.url} "
                                 f"({exc}): {msg[:80]!r}") from None
        age = None if self._pose is None else time.monotonic() - self._pose[3]
        if self._pose is None or age is None or age > self.timeout_s:
            when = "never" if age is None else f"{age:.2f} s ago"
            raise RobotError(f"rc_car: localisation lost: last pose from {self.url} {when}")
        return self._pose[:3]

    def close(self) -> None:
        self._sock.close(linger=0)
