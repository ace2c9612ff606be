"""depthclip-fleet: every bag of an archive through the bag tool's processing, on Ray."""
