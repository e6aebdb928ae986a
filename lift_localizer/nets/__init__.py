"""The networks as pure torch modules: DET, ORI, DESC (LIFT), their layers, and NetVLAD. Nothing
here knows of images, keypoints or files; shapes are in each module's docstrings."""
