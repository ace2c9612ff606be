"""Messages and geometry, one kind of conversion a module: `decoding` (Image / CompressedImage
-> RGB, 32FC1 -> array), `camera_model` (a CameraInfo as image_geometry reads it),
`point_cloud` (back-projection, the PointCloud2 layout), `colormaps` (depth/colored),
`outputs` (a prediction -> depth, camera_info and cloud messages of rclpy's or rosbags' types),
`topics` (every topic name, once). NumPy only: messages are read by duck typing, no rclpy.
"""
