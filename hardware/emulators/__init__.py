"""Device emulators: real serial byte streams on pseudo-terminals, answered by modelled servos,
so real driver code runs where there is no hardware (``feetech``: the STS3215 servos of the
SO-100/SO-101 arms; ``dynamixel``: the XL430/XL330 servos of the Koch v1.1, Protocol 2.0;
``fuzz``: random and corrupted frames into both)."""

import sim  # noqa: F401, E402  (the emulators render with MuJoCo: headless GL chosen before it loads)
