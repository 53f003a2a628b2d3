"""A simulated low-cost 5-DoF arm with a gripper (SO-101-like) on a table: reach, lift, bin."""
