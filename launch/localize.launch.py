"""Start the lift_localizer node.

    ros2 launch lift_localizer localize.launch.py map:=/path/to/map
    ros2 launch lift_localizer localize.launch.py map:=/path/to/map image:=/cam/image_raw \
        camera_info:=/cam/camera_info backend:=torch params_file:=/path/to/my.yaml

Only the public launch / launch_ros API, so it runs unchanged on any ROS 2 install.
"""
from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, SetEnvironmentVariable
from launch.substitutions import EnvironmentVariable, LaunchConfiguration, PathJoinSubstitution
from launch_ros.actions import Node
from launch_ros.parameter_descriptions import ParameterValue
from launch_ros.substitutions import FindPackageShare


def generate_launch_description() -> LaunchDescription:
    return LaunchDescription([
        DeclareLaunchArgument("map", default_value="", description="map directory (lift-localizer build-map)"),
        DeclareLaunchArgument(
            "params_file", description="node parameters (YAML); launch arguments override its values",
            default_value=PathJoinSubstitution([FindPackageShare("lift_localizer"), "config", "localizer.yaml"])),
        DeclareLaunchArgument("image", default_value="/camera/image_raw",
                              description="image topic (its /compressed sibling with image_transport:=compressed)"),
        DeclareLaunchArgument("camera_info", default_value="/camera/camera_info", description="CameraInfo topic"),
        DeclareLaunchArgument("backend", default_value="auto", description="auto, torch, onnx or tensorrt"),
        DeclareLaunchArgument("image_transport", default_value="raw", description="raw or compressed"),
        # Fast DDS's default transports lose ~1 MB images (measured: 26 of 30 delivered, once none);
        # LARGE_DATA (TCP + shared memory for data) delivered all. An explicit setting wins.
        DeclareLaunchArgument(
            "fastdds_transports", description="FASTDDS_BUILTIN_TRANSPORTS for the node (DEFAULT: Fast DDS's own)",
            default_value=EnvironmentVariable("FASTDDS_BUILTIN_TRANSPORTS", default_value="LARGE_DATA")),
        SetEnvironmentVariable("FASTDDS_BUILTIN_TRANSPORTS", LaunchConfiguration("fastdds_transports")),
        Node(
            package="lift_localizer",
            executable="lift_localizer_node",
            name="lift_localizer",
            output="screen",
            emulate_tty=True,
            parameters=[
                LaunchConfiguration("params_file"),
                {
                    "map_path": ParameterValue(LaunchConfiguration("map"), value_type=str),
                    "backend": ParameterValue(LaunchConfiguration("backend"), value_type=str),
                    "image_transport": ParameterValue(LaunchConfiguration("image_transport"), value_type=str),
                },
            ],
            remappings=[
                ("image", LaunchConfiguration("image")),
                ("camera_info", LaunchConfiguration("camera_info")),
            ],
            # Python's output unbuffered, so the node's log lines reach `ros2 launch` as they happen.
            additional_env={"PYTHONUNBUFFERED": "1"},
        ),
    ])
