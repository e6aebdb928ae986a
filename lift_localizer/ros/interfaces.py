"""ROS 2 message types by name (``pkg/msg/Name``): the rclpy class, the installed interface files
and a ``rosbags`` typestore that knows the type, for the bag player and recorder.

Interface files are looked up through the ament index when ``AMENT_PREFIX_PATH`` is set (a sourced
ROS 2 install), then in this Python prefix's ``share/`` (where the PyPI ROS wheels put them), then,
for this project's own messages, in the repository's ``msg/`` folder (a source checkout whose
interface package has not been built).

Type names come from files (a bag's connections) and from the graph, so a name is never imported as
given: it must have the shape ``pkg/msg/Name``, ``pkg`` must be an installed ROS interface package
(an ament index ``rosidl_interfaces`` entry, or one of the well-known ones), and its Python module
must lie in a site-packages folder of this Python or of an install prefix. ``python -m`` puts the
working folder first on ``sys.path``: a bag played from a folder holding ``pkg/__init__.py`` would
otherwise run that file.
"""
from __future__ import annotations

import importlib
import importlib.util
import json
import os
import re
import sys
import sysconfig
from pathlib import Path

REPO_MSG_DIR = Path(__file__).resolve().parents[2] / "msg"


def normalize(msgtype: str) -> str:
    """``pkg/Name`` (ROS 1 style and old bags) → ``pkg/msg/Name``."""
    parts = msgtype.split("/")
    return f"{parts[0]}/msg/{parts[1]}" if len(parts) == 2 else msgtype


_TYPE_NAME = re.compile(r"([a-z][a-z0-9_]*)/msg/([A-Z][A-Za-z0-9]*)")

# Interface packages trusted by name where the ament index has no rosidl_interfaces entry for them
# (a partial install); their module must still come from an install prefix.
KNOWN_INTERFACE_PACKAGES = frozenset({
    "action_msgs", "builtin_interfaces", "diagnostic_msgs", "geometry_msgs", "lifecycle_msgs",
    "lift_localizer_msgs", "nav_msgs", "rcl_interfaces", "rosgraph_msgs", "sensor_msgs", "service_msgs",
    "shape_msgs", "statistics_msgs", "std_msgs", "stereo_msgs", "tf2_msgs", "trajectory_msgs",
    "type_description_interfaces", "unique_identifier_msgs", "visualization_msgs",
})


def split_type(msgtype: str) -> tuple[str, str]:
    """``pkg/msg/Name`` (or ``pkg/Name``) → (pkg, Name); ValueError for any other shape."""
    m = _TYPE_NAME.fullmatch(normalize(msgtype)) if isinstance(msgtype, str) else None
    if m is None:
        raise ValueError(f"{msgtype!r} is not a ROS message type name (pkg/msg/Name)")
    return m.group(1), m.group(2)


def _prefixes() -> list[Path]:
    """Install prefixes: the sourced ROS 2 workspaces (AMENT_PREFIX_PATH), then this Python's."""
    entries = [p for p in os.environ.get("AMENT_PREFIX_PATH", "").split(os.pathsep) if os.path.isabs(p)]
    return [Path(p) for p in dict.fromkeys([*entries, sys.prefix])]


def _is_interface_package(pkg: str) -> bool:
    if pkg in KNOWN_INTERFACE_PACKAGES:
        return True
    return any((p / "share" / "ament_index" / "resource_index" / "rosidl_interfaces" / pkg).is_file()
               for p in _prefixes())


def _installed_file(path: str) -> bool:
    """Whether ``path`` lies in this Python's site-packages or in a site-packages/dist-packages
    folder of an install prefix (where colcon, Debian packages and the ROS wheels put modules)."""
    p = Path(path).resolve()
    paths = sysconfig.get_paths()
    if any(p.is_relative_to(Path(paths[k]).resolve()) for k in ("purelib", "platlib")):
        return True
    for prefix in _prefixes():
        prefix = prefix.resolve()
        if p.is_relative_to(prefix) and {"site-packages", "dist-packages"} & set(p.relative_to(prefix).parts):
            return True
    return False


def _installed_location(spec) -> bool:
    """Whether every file a module spec would load is an installed one (so not in the working
    folder, which ``python -m`` and an empty sys.path entry search first)."""
    if spec is None or spec.origin is None or not os.path.isabs(spec.origin):
        return False  # a namespace package gathers folders from anywhere on sys.path; builtins are no messages
    return all(_installed_file(p) for p in [spec.origin, *(spec.submodule_search_locations or [])])


def message_class(msgtype: str) -> type:
    """The rclpy message class of ``pkg/msg/Name``; ImportError naming the type if the name is not
    a message type of an installed interface package. Nothing is imported before that is known."""
    try:
        pkg, name = split_type(msgtype)
    except ValueError as e:
        raise ImportError(f"message type {msgtype!r} not imported: {e}") from None
    if not _is_interface_package(pkg):
        raise ImportError(f"message type {msgtype} is not installed for rclpy "
                          f"(no installed ROS interface package {pkg}); not imported")
    # find_spec of a top-level name only searches; of pkg.msg it imports pkg, checked just before.
    for module in (pkg, f"{pkg}.msg"):
        try:
            spec = importlib.util.find_spec(module)
        except (ImportError, ValueError) as e:
            raise ImportError(f"message type {msgtype} is not installed for rclpy ({e})") from None
        if spec is None:
            raise ImportError(f"message type {msgtype} is not installed for rclpy (no module {module})")
        if not _installed_location(spec):
            raise ImportError(f"message type {msgtype} not imported: module {module} would load from "
                              f"{spec.origin or spec.submodule_search_locations}, outside the installed packages")
    try:
        cls = getattr(importlib.import_module(f"{pkg}.msg"), name)
    except (ImportError, AttributeError) as e:
        raise ImportError(f"message type {msgtype} is not installed for rclpy ({e})") from None
    if not (isinstance(cls, type) and callable(getattr(cls, "get_fields_and_field_types", None))):
        raise ImportError(f"message type {msgtype} is not installed for rclpy ({pkg}.msg.{name} is no message class)")
    return cls


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
    """``share/<pkg>/msg/<Name><suffix>`` of an installed interface package, or None (also for a
    name that is no type name, which could otherwise point the path anywhere)."""
    try:
        pkg, name = split_type(msgtype)
    except ValueError:
        return None
    for d in _share_dirs(pkg):
        if (d / "msg" / f"{name}{suffix}").is_file():
            return d / "msg" / f"{name}{suffix}"
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
    try:
        pkg, name = split_type(msgtype)
    except ValueError as e:
        raise LookupError(str(e)) from None
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
