"""The package's shape, read from its imports: roles kept apart, no import circle."""

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "depthclip_ros"


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports_of(path: Path) -> set:
    """Absolute names of every module `path` imports (relative imports resolved)."""
    name = module_name(path)
    package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(base + ([node.module] if node.module else []))
            else:
                base = node.module
            submodules = {f"{base}.{alias.name}" for alias in node.names}
            found.update(submodules)
            # Names from a module, not submodules of a package; or a package's own submodule
            # (`from . import x` runs the package's __init__ first).
            if not submodules <= NAMES or node.level:
                found.add(base)
    return found


NAMES = {module_name(p) for p in PACKAGE.rglob("*.py")}
MODULES = {module_name(p): imports_of(p) for p in PACKAGE.rglob("*.py")}


def package_edges(name: str) -> set:
    """The package's own modules `name` imports."""
    return {m for m in MODULES[name] if m in MODULES and m != name}


# Programs that talk to the node over the ROS graph, as its users' processes do, and the
# executor thread they spin.
ROS_CLIENT_TOOLS = {
    "depthclip_ros.tools.demo",
    "depthclip_ros.tools.camera_driver",
    "depthclip_ros.tools.spin_thread",
}


def test_only_the_node_package_and_the_client_tools_import_rclpy():
    users = {
        name
        for name, imported in MODULES.items()
        if any(m == "rclpy" or m.startswith("rclpy.") for m in imported)
    }
    node = {name for name in users if name.startswith("depthclip_ros.node.")}
    assert node and users - node <= ROS_CLIENT_TOOLS, users


def test_the_package_never_imports_the_eval():
    assert not [n for n, imported in MODULES.items() if any("offline_eval" in m for m in imported)]


def test_no_import_circle():
    state = {}  # name -> "open" while on the current path, "done" after

    def visit(name, path):
        state[name] = "open"
        for nxt in sorted(package_edges(name)):
            assert state.get(nxt) != "open", " -> ".join([*path, nxt])
            if nxt not in state:
                visit(nxt, [*path, nxt])
        state[name] = "done"

    for name in sorted(MODULES):
        if name not in state:
            visit(name, [name])


# The package's roles, lowest first: a module imports only from its own role's and lower ones'
# (model_loading chooses between estimator/ and graph_runtimes/, so it sits above both).
LAYERS = (
    ("errors", "files", "metrics", "synthetic_scenes", "transforms"),
    ("config",),
    ("estimator",),
    ("graph_runtimes",),
    ("model_loading",),
    ("messages",),
    ("runtime",),
    ("metric_scale",),
    ("bag",),
    ("export",),
    ("node",),
    ("fleet",),
    ("tools",),
)
LAYER_OF = {role: rank for rank, roles in enumerate(LAYERS) for role in roles}


def role_of(name: str) -> str:
    return name.split(".")[1]


def test_every_role_has_its_layer():
    assert {role_of(name) for name in MODULES if name != "depthclip_ros"} == set(LAYER_OF)


def test_no_import_runs_back_up_the_layers():
    upward = [
        f"{name} -> {imported}"
        for name in MODULES
        if name != "depthclip_ros"
        for imported in package_edges(name)
        if imported != "depthclip_ros" and LAYER_OF[role_of(imported)] > LAYER_OF[role_of(name)]
    ]
    assert not upward, upward


def test_no_package_init_imports_its_modules_lazily():
    """A package's __init__ names its modules and re-exports a public face; one that imports
    them inside a function (the node's main once did) puts the package on every import path
    through them."""
    for path in PACKAGE.rglob("__init__.py"):
        tree = ast.parse(path.read_text())
        lazy = [
            node
            for function in ast.walk(tree)
            if isinstance(function, ast.FunctionDef)
            for node in ast.walk(function)
            if isinstance(node, (ast.Import, ast.ImportFrom))
        ]
        assert not lazy, path


def test_every_error_derives_from_the_one_root():
    from depthclip_ros import errors

    classes = [
        obj
        for obj in vars(errors).values()
        if isinstance(obj, type)
        and issubclass(obj, Exception)
        and obj.__module__ == errors.__name__
    ]
    assert len(classes) >= 7 and all(issubclass(c, errors.DepthClipError) for c in classes)
    import builtins

    # An exception class elsewhere: named ...Error, or derived from a built-in exception.
    raised = {
        name
        for name, obj in vars(builtins).items()
        if isinstance(obj, type) and issubclass(obj, BaseException)
    }
    elsewhere = [
        f"{path.relative_to(ROOT)}: {node.name}"
        for path in [*PACKAGE.rglob("*.py"), *(ROOT / "offline_eval").glob("*.py")]
        if path.name != "errors.py"
        for node in ast.walk(ast.parse(path.read_text()))
        if isinstance(node, ast.ClassDef)
        and (
            node.name.endswith("Error")
            or any(getattr(b, "id", getattr(b, "attr", "")) in raised for b in node.bases)
        )
        and not any(
            getattr(b, "id", getattr(b, "attr", "")) == "DepthClipError" for b in node.bases
        )
    ]
    assert elsewhere == []  # any other error class derives from the root (the eval's DataError)


def test_the_estimator_never_reads_parameter_files():
    """Parameters flow one way: config/ reads files (scene presets included) into the config."""
    readers = {
        name
        for name, imported in MODULES.items()
        if name.startswith(("depthclip_ros.estimator", "depthclip_ros.graph_runtimes"))
        and any(m.startswith("depthclip_ros.config.params_files") for m in imported)
    }
    assert readers == set()


def test_node_parameters_use_only_the_estimators_public_face():
    imported = MODULES["depthclip_ros.node.parameters"]
    estimator = {m for m in imported if m.startswith("depthclip_ros.estimator")}
    from depthclip_ros import estimator as face

    assert estimator <= {"depthclip_ros.estimator"} | {
        f"depthclip_ros.estimator.{name}" for name in face.__all__
    }, estimator


def test_the_graph_runtimes_need_no_torch():
    """What a torch-free robot runs imports neither torch nor clip, nor the torch core."""
    heavy = ("torch", "clip", "depthclip_ros.estimator.core", "depthclip_ros.export")
    for name, imported in MODULES.items():
        if name.startswith("depthclip_ros.graph_runtimes"):
            assert not [m for m in imported if m.startswith(heavy)], name
