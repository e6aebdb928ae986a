"""ROS 2 message types by name (``pkg/msg/Name``): the rclpy class, the installed interface files
and a ``rosbags`` typestore that knows the type, for the bag player and recorder.

Interface files are looked up through the ament index when ``AMENT_PREFIX_PATH`` is set (a sourced
ROS 2 install), then in this Python prefix's ``share/`` (where the PyPI ROS wheels put them), then,
for this project's own messages, in the repository's ``msg/`` folder (a source checkout whose
interface package has not been built).
"""
from __future__ import annotations

import importlib
import json
import sys
from pathlib import Path

REPO_MSG_DIR = Path(__file__).resolve().parents[2] / "msg"


def normalize(msgtype: str) -> str:
    """``pkg/Name`` (ROS 1 style and old bags) → ``pkg/msg/Name``."""
    parts = msgtype.split("/")
    return f"{parts[0]}/msg/{parts[1]}" if len(parts) == 2 else msgtype


def message_class(msgtype: str) -> type:
    """The rclpy message class of ``pkg/msg/Name``; ImportError naming the type if not installed."""
    pkg, kind, name = normalize(msgtype).split("/")
    try:
        return getattr(importlib.import_module(f"{pkg}.{kind}"), name)
    except (ImportError, AttributeError) as e:
        raise ImportError(f"message type {msgtype} is not installed for rclpy ({e})") from None


def _share_dirs(pkg: str) -> list[Path]:
    dirs = []
    try:
        from ament_index_python.packages import get_package_share_directory

        dirs.append(Path(get_package_share_directory(pkg)))
    except (ImportError, LookupError, OSError):  # not indexed, or no AMENT_PREFIX_PATH at all
        pass
    dirs.append(Path(sys.prefix) / "share" / pkg)
    return dirs


def interface_file(msgtype: str, suffix: str) -> Path | None:
    """``share/<pkg>/msg/<Name><suffix>`` of an installed interface package, or None."""
    pkg, kind, name = normalize(msgtype).split("/")
    for d in _share_dirs(pkg):
        if (d / kind / f"{name}{suffix}").is_file():
            return d / kind / f"{name}{suffix}"
    return None


def installed_type_hash(msgtype: str) -> str | None:
    """The RIHS01 type hash of the installed definition (from the generated ``.json``), or None."""
    path = interface_file(msgtype, ".json")
    if path is None:
        return None
    try:
        hashes = json.loads(path.read_text())["type_hashes"]
    except (OSError, ValueError, KeyError):
        return None
    return next((h["hash_string"] for h in hashes if h.get("type_name") == normalize(msgtype)), None)


def msg_definition(msgtype: str) -> str:
    """The ``.msg`` text of a type; LookupError naming where it was looked for."""
    path = interface_file(msgtype, ".msg")
    pkg, _, name = normalize(msgtype).split("/")
    if path is None and pkg.startswith("lift_localizer") and (REPO_MSG_DIR / f"{name}.msg").is_file():
        path = REPO_MSG_DIR / f"{name}.msg"
    if path is None:
        raise LookupError(f"no message definition for {msgtype} (looked for share/{pkg}/msg/{name}.msg "
                          f"in the ament index and {sys.prefix})")
    return path.read_text()


def default_typestore():
    """rosbags' typestore of the ROS 2 distribution the rclpy wheels come from (Kilted)."""
    from rosbags.typesys import Stores, get_typestore

    return get_typestore(getattr(Stores, "ROS2_KILTED", Stores.LATEST))


def _referenced(types: dict) -> set[str]:
    """Message types named by the fields of rosbags type definitions."""
    from rosbags.typesys.base import Nodetype

    names = set()
    for _, fields in types.values():
        for _, (node, detail) in fields:
            if node in (Nodetype.ARRAY, Nodetype.SEQUENCE):
                node, detail = detail[0]
            if node == Nodetype.NAME:
                names.add(detail)
    return names


def ensure_type(typestore, msgtype: str) -> None:
    """Register ``msgtype`` (and the types it uses) in ``typestore`` from its ``.msg`` file unless
    the store knows it already — how custom types such as lift_localizer_msgs/msg/Keypoints get
    into a bag. LookupError if a definition cannot be found."""
    from rosbags.typesys import get_types_from_msg

    msgtype = normalize(msgtype)
    if msgtype in typestore.fielddefs:
        return
    types = get_types_from_msg(msg_definition(msgtype), msgtype)
    typestore.register(types)
    for dep in _referenced(types) - set(types):
        ensure_type(typestore, dep)
