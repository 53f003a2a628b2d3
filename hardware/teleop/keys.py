"""Key tables generated from the devices' own maps: what each key or button does while driving,
before and after an episode. ``robolearn collect`` prints :func:`key_table` for the device in
use; README "Teleop keys" holds :func:`keys_markdown` (a test keeps the two equal).
"""

from __future__ import annotations

from collections.abc import Sequence

from hardware.teleop.base import EVENT_TEXT, TeleopDevice


def key_rows(device: TeleopDevice, kind: str, joints: Sequence[str]
             ) -> list[tuple[str, dict[str, str]]]:
    """``(inputs, {mode: what they do})`` for ``device`` driving a ``kind`` robot with these
    joints: inputs that do the same in every mode share a row (``"w, up"``)."""
    cells: dict[str, dict[str, str]] = {}
    for key, text in device.motion(kind, joints).items():
        cells.setdefault(key, {})["drive"] = text
    for mode in ("drive", "ready", "review", "query"):
        for key, event in device.event_map(mode).items():
            cells.setdefault(key, {})[mode] = EVENT_TEXT[event]
    return _merge(cells)


def _merge(cells: dict[str, dict[str, str]]) -> list[tuple[str, dict[str, str]]]:
    groups: dict[tuple[tuple[str, str], ...], list[str]] = {}
    for key, row in cells.items():
        groups.setdefault(tuple(sorted(row.items())), []).append(key)
    return [(", ".join(keys), dict(row)) for row, keys in groups.items()]


def key_table(device: TeleopDevice, kind: str, joints: Sequence[str]) -> list[list[str]]:
    """Rows ``[inputs, driving, before an episode, after an episode]`` for one device and
    robot kind (the table ``robolearn collect`` prints)."""
    return [[keys, row.get("drive", ""), row.get("ready", ""), row.get("review", "")]
            for keys, row in key_rows(device, kind, joints)]


def _code(keys: str) -> str:
    return ", ".join(f"`{key}`" for key in keys.split(", "))


def keys_markdown(arm_joints: Sequence[str]) -> str:
    """Markdown tables of every registered device's default keys, driving a car and an arm
    with ``arm_joints``: README "Teleop keys"."""
    from hardware.teleop import TELEOPS, device_for
    from robolearn_core.registry import resolve

    out = []
    for name in TELEOPS:
        kinds = resolve(TELEOPS, name, "teleop").kinds  # a leader arm drives no car
        cells: dict[str, dict[str, str]] = {}
        for kind in kinds:  # the table's column: "car" or "arm"
            joints = arm_joints if kind == "arm" else ()
            for keys, row in key_rows(device_for(name, kind), kind, joints):
                for key in keys.split(", "):
                    cell = cells.setdefault(key, {})
                    if "drive" in row:
                        cell[kind] = row["drive"]
                    for mode in ("ready", "review", "query"):
                        if mode in row and cell.get(mode, row[mode]) != row[mode]:
                            raise ValueError(f"{name}: {key} does different things {mode} "
                                             "for a car and an arm; the table has one column")
                        if mode in row:
                            cell[mode] = row[mode]
        out += [f"`teleop={name}`", "",
                "| input | driving a car | driving an arm | before an episode | after an episode "
                "| when the robot asks |", "|---|---|---|---|---|---|"]
        out += [f"| {_code(keys)} | " + " | ".join(row.get(c, "") for c in
                                             ("car", "arm", "ready", "review", "query")) + " |"
                for keys, row in _merge(cells)]
        out.append("")
    return "\n".join(out)


if __name__ == "__main__":  # python -m hardware.teleop.keys: the README section's tables
    from sim.arm.model import JOINTS

    print(keys_markdown(JOINTS))
