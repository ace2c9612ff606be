"""The ROS 2 adapter, the package's only rclpy user: the `depthclip` lifecycle node
(`lifecycle_node.DepthClipNode`), the process that runs it (`process`: signals, spin,
autostart) and its entry point (`entry_point.main`, what `ros2 run depthclip_ros
depthclip_node` starts), the bond a lifecycle manager keeps with it (`lifecycle_bond`), one
camera's inputs and outputs (`camera_pipeline`), inputs whose QoS follows their publishers
(`adaptive_input`), the parameter schema as ROS parameters (`parameters`), /diagnostics
(`diagnostics`), and the launch file's logic (`launch_arguments`, rclpy-free, so the launch
file and its tests import it without a ROS graph).
"""
