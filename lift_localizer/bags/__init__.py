"""rosbag2 without ROS: reading posed frames from bags, writing them, and converting image messages
to arrays (rclpy-free; ``rosbags`` reads and writes the files)."""
