"""The LIFT local-feature pipeline: DET over the scale space, then ORI and DESC at keypoints."""
