"""`play` on a bag made to attack the player: its topic types name Python packages that sit in the
folder `play` runs from. `python -m` puts that folder first on the import path, so importing a type's
package by the name the bag gives would run the bag author's code."""
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("rclpy", reason="rclpy (ros-rclpy wheels) is not installed")

from nav_msgs.msg import Odometry
from rclpy.serialization import serialize_message
from rosbags.rosbag2 import Writer
from rosbags.typesys import Stores, get_typestore

from std_msgs.msg import String

from lift_localizer.ros.interfaces import message_class

DOMAIN = 1 + (os.getpid() + 150) % 200
ENV = {k: v for k, v in os.environ.items() if k not in ("FASTDDS_BUILTIN_TRANSPORTS", "ROS_LOCALHOST_ONLY")}
ENV.update(ROS_DOMAIN_ID=str(DOMAIN), ROS_AUTOMATIC_DISCOVERY_RANGE="LOCALHOST", PYTHONUNBUFFERED="1")


def _plant(folder: Path, package: str, marker: Path) -> None:
    """A Python package ``package`` (with a ``msg`` module) in ``folder`` that leaves ``marker`` when imported."""
    code = f"open({str(marker)!r}, 'w').write('imported')\nclass Boom: pass\nclass Odometry: pass\n"
    (folder / package / "msg").mkdir(parents=True)
    (folder / package / "__init__.py").write_text(code)
    (folder / package / "msg" / "__init__.py").write_text(code)


def _hostile_bag(path: Path, with_good_topic: bool = True) -> None:
    """A bag whose /boom claims a type of a package that exists only in the player's folder, and whose
    /odom claims a real type while a folder of the same name shadows the installed package."""
    store = get_typestore(Stores.ROS2_KILTED)
    with Writer(path, version=8) as w:
        boom = w.add_connection("/boom", "evilpkg/msg/Boom", msgdef="int32 x\n", rihs01="RIHS01_" + "0" * 64)
        w.write(boom, 10**18, b"\x00\x01\x00\x00\x07\x00\x00\x00")
        odom = w.add_connection("/odom", "nav_msgs/msg/Odometry", typestore=store)
        w.write(odom, 10**18 + 1, serialize_message(Odometry()))
        if with_good_topic:
            conn = w.add_connection("/chatter", "std_msgs/msg/String", typestore=store)
            for i in range(3):
                w.write(conn, 10**18 + 2 + i, serialize_message(String(data=f"m{i}")))


@pytest.fixture
def hostile_folder(tmp_path):
    folder = tmp_path / "cwd"
    folder.mkdir()
    _plant(folder, "evilpkg", tmp_path / "evilpkg-ran")
    _plant(folder, "nav_msgs", tmp_path / "nav_msgs-ran")
    return folder


def _play(bag: Path, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "lift_localizer", "play", str(bag), "--rate", "1000", "--start-delay",
                           "0"], env=ENV, cwd=cwd, capture_output=True, text=True, timeout=120, check=False)


def test_types_named_by_the_bag_never_import_code_from_the_working_folder(tmp_path, hostile_folder):
    _hostile_bag(tmp_path / "bag")
    proc = _play(tmp_path / "bag", hostile_folder)
    assert not (tmp_path / "evilpkg-ran").exists(), "play imported a package named by the bag from its folder"
    assert not (tmp_path / "nav_msgs-ran").exists(), "play imported a shadowing package from its folder"
    assert proc.returncode == 0, proc.stderr
    warnings = [line for line in proc.stderr.splitlines() if line.startswith("warning: not playing")]
    assert len([w for w in warnings if "/boom" in w and "evilpkg/msg/Boom" in w]) == 1, proc.stderr
    assert len([w for w in warnings if "/odom" in w and "nav_msgs/msg/Odometry" in w]) == 1, proc.stderr
    assert "played 3 messages" in proc.stdout and "/chatter" in proc.stdout and "Traceback" not in proc.stderr, \
        proc.stdout + proc.stderr


def test_a_bag_of_only_unsafe_types_exits_2_without_importing(tmp_path, hostile_folder):
    _hostile_bag(tmp_path / "bag", with_good_topic=False)
    proc = _play(tmp_path / "bag", hostile_folder)
    assert not (tmp_path / "evilpkg-ran").exists() and not (tmp_path / "nav_msgs-ran").exists()
    assert proc.returncode == 2 and "nothing to play" in proc.stderr, proc.stderr


@pytest.mark.parametrize("msgtype", ["os/msg/Path", "evil pkg/msg/X", "std_msgs/msg/__class__", "std_msgs/srv/String",
                                     "../std_msgs/msg/String", "std_msgs/msg/String/x", "Std_msgs/msg/String",
                                     "std_msgs/msg/string", "lift_localizer/msg/Frame"])
def test_names_that_are_no_installed_interface_type_are_refused(msgtype):
    with pytest.raises(ImportError, match="not"):
        message_class(msgtype)


@pytest.mark.parametrize("msgtype", ["std_msgs/msg/String", "std_msgs/String", "sensor_msgs/msg/Image",
                                     "builtin_interfaces/msg/Time", "nav_msgs/msg/Odometry"])
def test_installed_types_resolve(msgtype):
    cls = message_class(msgtype)
    assert cls.__name__ == msgtype.rsplit("/", 1)[1] and callable(cls.get_fields_and_field_types)
