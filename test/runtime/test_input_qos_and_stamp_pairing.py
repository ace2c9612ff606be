"""The input QoS choice and the stamp pairing, without DDS."""

import types

from depthclip_ros.runtime.input_qos import choose_reliability, override_parameter
from depthclip_ros.runtime.stamp_pairing import (
    INFOS_KEPT,
    CameraInfoIndex,
    CameraInfoPairing,
    serialized_stamp_ns,
)


def test_reliability_adapts_to_the_publishers_like_rosbag2():
    assert choose_reliability("auto", [])[0] == "reliable"
    assert choose_reliability("auto", ["reliable", "reliable"]) == (
        "reliable",
        "all 2 publishers offer reliable",
    )
    policy, reason = choose_reliability("auto", ["reliable", "best_effort"])
    assert policy == "best_effort" and reason == "1 of 2 publishers offer best effort"
    assert choose_reliability("best_effort", ["reliable"])[0] == "best_effort"
    assert choose_reliability("reliable", ["best_effort"])[0] == "reliable"
    assert override_parameter("/cam/image") == "qos_overrides./cam/image.subscription.reliability"


def info(sec, nanosec=0, fx=1.0, width=640, height=480):
    """A camera_info stand-in with what the pairing reads: stamp, size, binning, ROI, K, P."""
    return types.SimpleNamespace(
        header=types.SimpleNamespace(stamp=types.SimpleNamespace(sec=sec, nanosec=nanosec)),
        fx=fx,
        width=width,
        height=height,
        binning_x=0,
        binning_y=0,
        roi=types.SimpleNamespace(x_offset=0, y_offset=0, width=0, height=0),
        k=[fx, 0, 0, 0, fx, 0, 0, 0, 1],
        p=[fx, 0, 0, 0, 0, fx, 0, 0, 0, 0, 1, 0],
        d=[],
        r=[1, 0, 0, 0, 1, 0, 0, 0, 1],
        distortion_model="plumb_bob",
    )


def test_nearest_stamp_within_the_slop_pairs():
    index = CameraInfoIndex(keep=3)
    for sec in (1, 2, 3):
        index.add(info(sec, fx=sec))
    assert index.nearest(info(2).header.stamp, 0.0).fx == 2  # exact
    assert index.nearest(info(2, nanosec=1000).header.stamp, 0.005).fx == 2  # 1 us off
    assert index.nearest(info(2, nanosec=1000).header.stamp, 0.0) is None  # exact only
    assert index.nearest(info(2, nanosec=600_000_000).header.stamp, 0.5).fx == 3  # nearest wins
    assert index.nearest(info(9).header.stamp, 0.5) is None
    index.add(info(4, fx=4))  # keeps 3: stamp 1 is forgotten
    assert index.nearest(info(1).header.stamp, 0.0) is None
    assert [index.nearest(info(s).header.stamp, 0.0).fx for s in (2, 3, 4)] == [2, 3, 4]


def test_the_node_keeps_the_camera_infos_of_ten_seconds_of_stamps():
    """A frame's cloud is made after the model's forward, so its camera_info must outlive a
    slow model (the 30 newest, as before, were 1 s of a 30 Hz camera); at most INFOS_KEPT of
    a camera_info far faster than its images."""
    pairing = CameraInfoPairing()
    at = [divmod(i * 10**9 // 30, 10**9) for i in range(302)]  # 30 Hz from 0 s

    def found(i):
        return pairing.find(info(*at[i]).header.stamp)

    for i in range(301):  # 0 to 10 s
        pairing.add(info(*at[i], fx=i))
    assert found(0).fx == 0 and found(150).fx == 150  # 10 s and 5 s before the newest
    pairing.add(info(*at[301], fx=301))
    assert found(0) is None and found(1).fx == 1
    fast = CameraInfoPairing()
    for i in range(INFOS_KEPT + 5):  # 1 kHz
        fast.add(info(0, nanosec=i * 1_000_000, fx=i))
    assert fast.find(info(0, nanosec=4_000_000).header.stamp) is None
    assert fast.find(info(0, nanosec=5_000_000).header.stamp).fx == 5
    looped = CameraInfoPairing()  # a bag played in a loop: stamps begin again
    for sec in (100, 101, 1, 2):
        looped.add(info(sec, fx=sec))
    assert [looped.find(info(s).header.stamp).fx for s in (101, 1, 2)] == [101, 1, 2]


def test_the_fallback_is_the_latest_camera_info_of_the_images_size():
    index = CameraInfoIndex()
    index.add(info(1, fx=1, width=640, height=480))
    index.add(info(2, fx=2, width=320, height=240))
    index.add(info(3, fx=3, width=640, height=480))
    assert index.latest_for((640, 480)).fx == 3
    assert index.latest_for((320, 240)).fx == 2
    assert index.latest_for((800, 600)) is None
    binned = info(4, fx=4, width=1280, height=960)
    binned.binning_x = binned.binning_y = 2  # describes a 640x480 image
    index.add(binned)
    assert index.latest_for((640, 480)).fx == 4
    index.add(info(5, fx=5, width=0, height=0))  # size left unset: fits any image
    assert index.latest_for((800, 600)).fx == 5
    assert index.latest.fx == 5


def test_a_waiting_frame_is_paired_once_by_its_camera_info_or_given_up_with_the_fallback():
    pairing = CameraInfoPairing(slop=0.005)
    pairing.add(info(1, fx=1))
    ticket, ready = pairing.wait(info(2).header.stamp, (640, 480), "frame 2")
    assert ready == [] and pairing.find(info(2).header.stamp) is None
    assert pairing.add(info(7, fx=7)) == []  # another stamp: still waiting
    late = info(2, nanosec=1000, fx=2)  # 1 us off, within the slop
    assert pairing.add(late) == [("frame 2", late)]
    assert pairing.give_up(ticket) is None  # already paired: never published twice
    ticket, _ = pairing.wait(info(3).header.stamp, (640, 480), "frame 3")
    frame, fallback = pairing.give_up(ticket)
    assert frame == "frame 3" and fallback.fx == 2  # the latest of its size
    assert pairing.give_up(ticket) is None


def test_a_camera_info_added_between_the_lookup_and_the_wait_pairs_at_once():
    """The executor adds a camera_info while the worker, having found none, is about to park
    its frame: the frame is not parked to wait `camera_info_wait` for a camera_info already
    here (and then published as a fallback)."""
    pairing = CameraInfoPairing()
    stamp = info(2).header.stamp
    assert pairing.find(stamp) is None
    own = info(2, fx=2)
    assert pairing.add(own) == []  # nothing waits yet
    ticket, ready = pairing.wait(stamp, (640, 480), "frame 2")
    assert ticket is None and ready == [("frame 2", own, True)]
    assert pairing.give_up_all() == []


def test_waiting_frames_are_bounded_and_flushed():
    pairing = CameraInfoPairing(max_waiting=2)
    pairing.add(info(1, fx=1))
    tickets = []
    for sec in (2, 3, 4):
        ticket, ready = pairing.wait(info(sec).header.stamp, (640, 480), f"frame {sec}")
        tickets.append(ticket)
    assert [(f, i.fx, exact) for f, i, exact in ready] == [("frame 2", 1, False)]  # the oldest
    assert pairing.give_up(tickets[0]) is None
    assert [(f, i.fx) for f, i in pairing.give_up_all()] == [("frame 3", 1), ("frame 4", 1)]
    assert pairing.give_up(tickets[2]) is None


def test_an_images_stamp_read_from_its_serialized_bytes():
    """What rclpy serializes (Image, CompressedImage; little endian), big-endian CDR, and
    bytes that are no CDR message."""
    import struct

    from rclpy.serialization import serialize_message
    from sensor_msgs.msg import CompressedImage, Image

    for kind in (Image, CompressedImage):
        msg = kind()
        msg.header.stamp.sec, msg.header.stamp.nanosec = 1_795_820_957, 123_456_789
        msg.header.frame_id = "camera_optical_frame"
        assert serialized_stamp_ns(serialize_message(msg)) == 1_795_820_957_123_456_789
    big_endian = b"\x00\x00\x00\x00" + struct.pack(">iI", 7, 5) + b"\x00" * 8
    assert serialized_stamp_ns(big_endian) == 7_000_000_005
    for garbage in (b"", b"\x00\x01\x00\x00\x07", b"\x89PNG\r\n\x1a\n\x00\x00\x00\x00"):
        assert serialized_stamp_ns(garbage) is None


def test_the_node_keeps_camera_infos_serialized_and_reads_back_each_one_it_uses():
    """The node keeps each camera_info as its serialized bytes (ten seconds of deserialized
    messages held small allocations between the frames' buffers: the node grew by 0.8 GB under
    a 100 Hz camera, bench/results/performance.md); every lookup gives the message back, field for
    field, deserializing only the one it returns."""
    from rclpy.serialization import deserialize_message, serialize_message
    from sensor_msgs.msg import CameraInfo

    def message(sec, fx, width=640):
        msg = CameraInfo(width=width, height=480, distortion_model="plumb_bob")
        msg.header.stamp.sec, msg.header.frame_id = sec, "camera_optical"
        msg.k = [fx, 0.0, width / 2, 0.0, fx, 240.0, 0.0, 0.0, 1.0]
        msg.d = [0.1, -0.2, 0.0, 0.0, 0.05]
        return msg

    decoded = []

    def decode(kept):
        decoded.append(kept)
        return deserialize_message(kept, CameraInfo)

    pairing = CameraInfoPairing(decode=decode)
    ticket, _ = pairing.wait(message(3, 0).header.stamp, (640, 480), "frame 3")
    kept = {}
    for sec, fx, width in ((1, 500.0, 640), (2, 250.0, 320), (3, 510.0, 640)):
        kept[sec] = serialize_message(message(sec, fx, width))
        paired = pairing.add(message(sec, fx, width), kept[sec])
    assert paired == [("frame 3", message(3, 510.0))] and decoded == []  # the message at hand
    assert pairing.give_up(ticket) is None
    assert pairing.find(message(1, 0).header.stamp) == message(1, 500.0)
    assert decoded == [kept[1]]  # bytes kept, the one looked up deserialized
    assert pairing.fallback((320, 480)) == message(2, 250.0, 320)
    assert pairing.latest == message(3, 510.0)
    assert pairing.wait(message(1, 0).header.stamp, (640, 480), "frame 1") == (
        None,
        [("frame 1", message(1, 500.0), True)],
    )
    ticket, _ = pairing.wait(message(4, 0).header.stamp, (640, 480), "frame 4")
    assert pairing.give_up(ticket) == ("frame 4", message(3, 510.0))  # the fallback, decoded
    assert pairing.find(message(5, 0).header.stamp) is None
