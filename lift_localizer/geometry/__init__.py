"""Cameras, poses and their conventions (T_map_camera, optical frame x right / y down / z forward)."""
