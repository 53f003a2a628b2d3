"""The Koch v1.1 follower arm: lerobot's ``KochFollower`` on a Dynamixel X-series bus."""
