"""The SO-101 (and SO-100) follower arm: lerobot's ``SOFollower`` on a Feetech STS3215 bus."""
