"""Maps: posed images in (bags, COLMAP, TUM, KITTI, NeRF), triangulated LIFT maps out."""
