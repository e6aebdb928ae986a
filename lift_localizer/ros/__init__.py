"""ROS 2 side: message conversion (usable without ROS), and later the node and bag tools."""
