"""Image retrieval: NetVLAD global descriptors and the faiss index over a map's images."""
