"""The node's machinery without rclpy, each unit-tested without DDS: `worker` (the one thread
that owns the model: newest frame per camera, fair service, jobs and timed jobs), `batching`
(frames of one size share a forward: the node's and the bag tool's rule), `stamp_pairing`
(which camera_info goes with an image: the node's and the bag tool's rule), `statistics`
(counts and timings over 10 s), `health` (/diagnostics levels), `input_qos` (an input's
reliability), `scene_hysteresis` (scene-adaptive bins' switching).
"""
