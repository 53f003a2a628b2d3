"""Device emulators: real serial byte streams on pseudo-terminals, answered by modelled servos,
so real driver code runs where there is no hardware (``feetech``: the STS3215 servos of the
SO-100/SO-101 arms)."""
