"""Recorded rosbag2 bags, no ROS install needed (the `rosbags` library): `reading` (open, list,
choose topics; damage -> one BagError), `plan` (a bag checked before a model is loaded),
`processing` (a copy of a bag with depth outputs added, through the estimator and the message
builder the node uses), `cli` (depthclip-bag).
"""
