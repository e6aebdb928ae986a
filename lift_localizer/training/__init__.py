"""Training: NetVLAD from posed maps (and, later, LIFT's DET, ORI and DESC)."""
