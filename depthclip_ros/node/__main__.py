"""`python -m depthclip_ros.node`: the node, as `ros2 run depthclip_ros depthclip_node` runs it."""

import sys

from .entry_point import main

sys.exit(main())
