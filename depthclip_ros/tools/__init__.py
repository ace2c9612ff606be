"""Programs around the package: `demo` (make demo), `camera_driver` (a camera driver stand-in
process with real camera_info timing), `node_process` (the node as a child process on
loopback), `synthetic_scenes` (scenes with exact depth), `random_clip` (CLIP ResNets with
random weights, saved like real ones). The demo, the benchmark and the tests share them.
"""
