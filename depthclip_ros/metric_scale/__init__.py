"""metric_scale: the depth's scale (and shift) fitted online to metric range data the robot
already has (a 2D lidar, a point cloud, a sparse depth image, the floor under a camera of known
height), the rule the node, depthclip-bag and depthclip-fleet apply alike. NumPy only.

DepthCLIP's depth is sum_k p_k b_k with sum_k p_k = 1, so the fitted s d + t is the depth of
the same distribution over the bins s b_k + t: depth, std, quantiles and the temporal filter's
fused distribution stay one distribution (docs/metric_scale.md).

- transforms: frames as ROS users give them without tf2 (static_transform_publisher's
  arguments), chained.
- anchors: each source's metric points in its own frame.
- fit: anchors projected onto the feature grid, gated, and one robust fit per frame.
- tracking: one camera's fit over time and its application to a DepthResult.
"""
