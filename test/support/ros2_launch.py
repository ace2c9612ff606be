"""`ros2 launch PACKAGE FILE name:=value ...` where ros2cli is not installed: what ros2launch's
`LaunchCommand.main` and `launch_a_launch_file` do (ros2/launch_ros, ros2launch/command/launch.py
and api/api.py, the same on humble, jazzy and rolling), written again here: the file found once
in the package's share directory through the ament index, the arguments parsed as `name:=value`
(the last of a name wins), a `launch.LaunchService(argv=..., noninteractive=...)` including the
file through `IncludeLaunchDescription(AnyLaunchDescriptionSource(...))`, and its exit code.
`noninteractive` as ros2launch sets it: `-n`, else whether stdin is no terminal. It decides who
stops the processes on SIGINT: from a terminal launch leaves them the terminal's SIGINT to the
whole group; without one (a script, a service) it sends its own. Uses whichever `launch` is
first on PYTHONPATH. As `ros2 launch`, it also takes a launch file's path instead of a package
and a file name.

    python ros2_launch.py depthclip_ros depth.launch.py image_topic:=/cam/image_raw
    python ros2_launch.py -n /path/to/robot.launch.py
"""

import sys
from pathlib import Path


def main(argv) -> int:
    import launch.actions
    import launch.launch_description_sources
    from ament_index_python.packages import get_package_share_directory

    import launch

    noninteractive = not sys.stdin.isatty()
    if argv[0] in ("-n", "--noninteractive"):
        noninteractive, argv = True, argv[1:]
    if Path(argv[0]).is_file():
        found, arguments = [Path(argv[0])], argv[1:]
    else:
        package, file_name, *arguments = argv
        share = Path(get_package_share_directory(package))
        found = sorted(share.rglob(file_name))
        if len(found) != 1:
            where = "was not found" if not found else "was found more than once"
            print(f"file '{file_name}' {where} in the share directory of package '{package}'")
            return 1
    parsed = {}
    for argument in arguments:
        name, sep, value = argument.partition(":=")
        if not sep or not name or (not value and argument.count(":=") == 1):
            print(f"malformed launch argument '{argument}', expected format '<name>:=<value>'")
            return 1
        parsed[name] = value
    service = launch.LaunchService(argv=arguments, noninteractive=noninteractive)
    source = launch.launch_description_sources.AnyLaunchDescriptionSource(str(found[0]))
    included = launch.actions.IncludeLaunchDescription(
        source, launch_arguments=list(parsed.items())
    )
    service.include_launch_description(launch.LaunchDescription([included]))
    return service.run()


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
