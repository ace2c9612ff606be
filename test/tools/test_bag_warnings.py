"""depthclip-bag's warnings: one line per kind of warning, however many frames say it."""

from depthclip_ros.bag.warnings import BagWarnings, warning_line


def test_warnings_alike_but_for_their_numbers_are_one_kind_with_count_and_times():
    warnings = BagWarnings()
    for i in range(1000):
        warnings.add(f"/cam: metric_scale: /tf laser -> base not at {12 + i * 0.033:.3f} s", i)
        warnings.add(f"/cam: metric_scale: scale {7.1 + i:.3g} outside [0.2, 5]", i)
    warnings.add("/cam: rejected: encoding 'yuv422' is not supported", 5)
    summary = warnings.summary()
    assert [entry["count"] for entry in summary] == [1000, 1000, 1]
    assert summary[0] == dict(
        warning="/cam: metric_scale: /tf laser -> base not at 12.000 s", count=1000, first=0,
        last=999,
    )  # fmt: skip
    assert warning_line(summary[1]) == (
        "warning: /cam: metric_scale: scale 7.1 outside [0.2, 5] (1000 times, log times 0 to "
        "999 ns)"
    )
    assert warning_line(summary[2]) == (
        "warning: /cam: rejected: encoding 'yuv422' is not supported (at log time 5 ns)"
    )
