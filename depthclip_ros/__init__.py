"""depthclip_ros: DepthCLIP zero-shot metric depth from one RGB camera, for ROS 2.

Subpackages by role (docs/architecture.md): `estimator` (the models), `config` (parameters),
`messages` (images, camera model, clouds, output messages), `runtime` (the node's machinery
without rclpy), `node` (the only rclpy user), `bag` (recorded bags), `tools` (demo and the
stand-ins tests and benchmark use). Beside them: `errors` (one root, DepthClipError), `files`
(atomic writes), `metrics` (the paper's evaluation protocol).
"""
