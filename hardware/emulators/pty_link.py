"""A pseudo-terminal standing in for a USB serial adapter.

``PtyLink()`` opens a pty pair; a driver opens :attr:`PtyLink.port` (the slave's path, e.g.
``/dev/pts/3``) with pyserial exactly as it would open ``/dev/ttyACM0``, and the emulator
reads and writes the master side. The emulator keeps its own handle on the slave so the master
never reads EIO between two clients (a driver that closes and reopens the port), and reads the
line speed the driver set (pyserial's ``baudrate``) from it: servos at another baud rate must
not understand the driver, as on a real bus.
"""

from __future__ import annotations

import fcntl
import os
import select
import struct
import termios
import tty

# struct termios2 (asm-generic): 4 flags, c_line, 19 c_cc, c_ispeed, c_ospeed = 44 bytes; its
# c_ospeed holds the speed in bit/s for standard and custom (BOTHER) rates alike
_TCGETS2 = 0x802C542A
_TERMIOS2 = struct.Struct("4I B 19s 2I")

# the standard termios speed constants, for systems without TCGETS2
_SPEEDS = {getattr(termios, f"B{b}"): b for b in (
    4800, 9600, 19200, 38400, 57600, 115200, 230400, 460800, 500000, 576000, 921600, 1000000,
    1152000, 1500000, 2000000) if hasattr(termios, f"B{b}")}


class PtyLink:
    """The emulator's end of a serial link: bytes in from the driver, bytes out to it."""

    def __init__(self) -> None:
        self._master, self._slave = os.openpty()
        tty.setraw(self._slave)  # no echo, no line editing: a byte stream, as a UART gives
        self.port = os.ttyname(self._slave)
        self._wake_r, self._wake_w = os.pipe()
        self.closed = False

    def baud(self) -> int | None:
        """The line speed the driver set on the port, bit/s (None where it cannot be told)."""
        try:
            raw = fcntl.ioctl(self._slave, _TCGETS2, bytes(_TERMIOS2.size))
            return int(_TERMIOS2.unpack(raw)[-1])
        except OSError:
            try:
                return _SPEEDS.get(termios.tcgetattr(self._slave)[5])
            except termios.error:
                return None

    def read(self, timeout: float | None) -> bytes:
        """The bytes the driver sent, waiting at most ``timeout`` seconds (None: until some
        come or :meth:`wake` is called); ``b""`` when none came."""
        ready, _, _ = select.select([self._master, self._wake_r], [], [], timeout)
        if self._wake_r in ready:
            os.read(self._wake_r, 64)
        if self._master not in ready:
            return b""
        try:
            return os.read(self._master, 4096)
        except OSError:  # EIO: no slave open (only after close)
            return b""

    def write(self, data: bytes) -> None:
        """Send ``data`` to the driver (it reads them from the port)."""
        view = memoryview(data)
        while view:
            view = view[os.write(self._master, view):]

    def wake(self) -> None:
        """Make a :meth:`read` in another thread return now."""
        os.write(self._wake_w, b"x")

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        for fd in (self._master, self._slave, self._wake_r, self._wake_w):
            os.close(fd)

    def __enter__(self) -> PtyLink:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
