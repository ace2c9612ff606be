"""Programs around the package: `demo` (make demo), `camera_driver` (a camera driver stand-in
process with real camera_info timing), `node_process` (the node as a child process on
loopback), `random_clip` (CLIP ResNets with random weights, saved like real ones). The scenes
with exact depth they feed are data below them all (depthclip_ros.synthetic_scenes).
"""
