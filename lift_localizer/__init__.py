"""lift_localizer: LIFT local features, NetVLAD retrieval and 6-DoF localization for ROS 2."""

__version__ = "0.1.0"
