"""Follower arms over lerobot's robots and motor buses (SO-100/101, Koch v1.1)."""
