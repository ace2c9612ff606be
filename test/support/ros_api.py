"""The rclpy, launch and launch_ros API the package uses, read from its code, and what each ROS 2
distribution's sources offer for it (test/packaging/ros_api_table.json, checked by
test/packaging/test_distributions.py).

A use is an import (`name:rclpy.qos.QoSProfile`), a call of an imported class or function with
its keywords (`call:launch_ros.actions.LifecycleNode`), an attribute of an imported module or
class (`name:rclpy.qos.ReliabilityPolicy.RELIABLE`), or a method called on a node, publisher,
logger or clock (`method:rclpy.lifecycle.LifecycleNode.create_timer`). A method whose name the
same file also tests with hasattr/getattr is feature-detected: optional, not required everywhere.

Regenerate the table from git checkouts of ros2/rclpy, ros2/launch and ros2/launch_ros (their
humble, jazzy and rolling branches) and Kilted's rclpy as installed from its wheel:

    .venv/bin/python test/support/ros_api.py --rclpy GIT_DIR --launch GIT_DIR \\
        --launch-ros GIT_DIR --kilted-rclpy .venv/lib/python3.11/site-packages/rclpy
"""

from __future__ import annotations

import argparse
import ast
import json
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
TABLE = ROOT / "test" / "packaging" / "ros_api_table.json"
# What the package runs under ROS: the node, its two ROS client tools, the launch file.
PACKAGE_FILES = (
    *sorted((ROOT / "depthclip_ros" / "node").glob("*.py")),
    ROOT / "depthclip_ros" / "tools" / "demo.py",
    ROOT / "depthclip_ros" / "tools" / "camera_driver.py",
    ROOT / "launch" / "depth.launch.py",
)
ROOTS = ("rclpy", "launch", "launch_ros")
# The objects whose methods the package calls: its nodes (a LifecycleNode is also a Node), their
# publishers, loggers and clocks, and the executor of the client tools.
RECEIVERS = (
    "rclpy.lifecycle.LifecycleNode",
    "rclpy.lifecycle.LifecyclePublisher",
    "rclpy.impl.rcutils_logger.RcutilsLogger",
    "rclpy.clock.Clock",
    "rclpy.executors.SingleThreadedExecutor",
)
# Where each distribution's sources come from (the git branch; Kilted: its wheel, rclpy only).
BRANCHES = {"humble": "humble", "jazzy": "jazzy", "rolling": "rolling"}
SOURCE_DIRS = {
    "rclpy": "rclpy/rclpy",
    "launch": "launch/launch",
    "launch_ros": "launch_ros/launch_ros",
}


# ----------------------------------------------------------------- what a distribution offers
class Api:
    """Modules of one distribution: module name -> parsed source."""

    def __init__(self, modules: dict):
        self.trees = {name: ast.parse(text) for name, text in modules.items()}

    def resolve(self, dotted: str):
        """('module', name) | ('class', module, node) | ('function', module, node) |
        ('value', None) | None for an absent name; re-exports followed."""
        if dotted in self.trees:
            return ("module", dotted)
        module, _, name = dotted.rpartition(".")
        found = self.resolve(module) if module else None
        if found is None:
            return None
        if found[0] == "module":
            return self._in_module(found[1], name)
        if found[0] == "class":
            return self._class_member(found[1], found[2], name)
        return ("value", None) if found[0] == "value" else None  # e.g. an enum of the C library

    def _in_module(self, module, name, depth=0):
        if depth > 10:
            return None
        if f"{module}.{name}" in self.trees:
            return ("module", f"{module}.{name}")
        for stmt in self.trees[module].body:
            found = _defined_by(stmt, name, module)
            if found is not None:
                return found
            if isinstance(stmt, ast.ImportFrom):
                for alias in stmt.names:
                    if (alias.asname or alias.name) == name:
                        source = _absolute(module, stmt, self.trees)
                        if source in self.trees:
                            return self._in_module(source, alias.name, depth + 1)
                        return ("value", None)  # from a module outside the three
        return None

    def _bases(self, module, cls):
        for base in cls.bases:
            dotted = _dotted(base.value if isinstance(base, ast.Subscript) else base)
            if dotted is None:
                continue
            head, _, rest = dotted.partition(".")
            found = self._in_module(module, head)
            if found and found[0] == "class" and not rest:
                yield found[1], found[2]
            elif found and found[0] == "module" and rest:
                target = self.resolve(f"{found[1]}.{rest}")
                if target and target[0] == "class":
                    yield target[1], target[2]

    def _class_member(self, module, cls, name, depth=0):
        if depth > 10:
            return None
        for stmt in cls.body:
            found = _defined_by(stmt, name, module)
            if found is not None:
                return found
        for base_module, base in self._bases(module, cls):
            found = self._class_member(base_module, base, name, depth + 1)
            if found is not None:
                return found
        return None

    def signature(self, found) -> dict | None:
        """{'keywords': [...] or 'any', 'required': [...]} of a function or of a class's
        constructor, following **kwargs into the base class's and leaving out what the
        constructor passes to it itself."""
        if found[0] == "function":
            sig = _signature(found[2], skip_self=_is_method(found))
            keywords = "any" if sig["var_kw"] else sig["keywords"]
            return {"keywords": keywords, "required": sig["required"]}
        if found[0] != "class":
            return None
        keywords, required, supplied = set(), set(), set()
        classes = [(found[1], found[2])]
        while classes:
            module, cls = classes.pop(0)
            init = next(
                (s for s in cls.body if isinstance(s, ast.FunctionDef) and s.name == "__init__"),
                None,
            )
            if init is None:
                classes[:0] = list(self._bases(module, cls))
                continue
            sig = _signature(init, skip_self=True)
            required |= set(sig["required"]) - supplied - keywords
            keywords |= set(sig["keywords"]) - supplied
            supplied |= _passed_to_base(init)
            if not sig["var_kw"]:
                return {"keywords": sorted(keywords), "required": sorted(required)}
            classes = list(self._bases(module, cls))  # **kwargs go to the base class
        return {"keywords": "any", "required": sorted(required)}


def _defined_by(stmt, name, module):
    """What a module's or class's statement defines under `name`, as resolve() reports it."""
    if isinstance(stmt, ast.ClassDef) and stmt.name == name:
        return ("class", module, stmt)
    if isinstance(stmt, (ast.FunctionDef, ast.AsyncFunctionDef)) and stmt.name == name:
        return ("function", module, stmt)
    if isinstance(stmt, (ast.Assign, ast.AnnAssign)):
        targets = stmt.targets if isinstance(stmt, ast.Assign) else [stmt.target]
        if any(isinstance(t, ast.Name) and t.id == name for t in targets):
            return ("value", None)
    return None


def _passed_to_base(init) -> set:
    """Keywords an __init__ passes to its base class's (super().__init__ or Base.__init__)."""
    passed = set()
    for node in ast.walk(init):
        if (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute)
            and node.func.attr == "__init__"
        ):
            passed |= {k.arg for k in node.keywords if k.arg is not None}
    return passed


def _is_method(found) -> bool:
    args = found[2].args.args
    return bool(args) and args[0].arg in ("self", "cls")


def _signature(fn, skip_self) -> dict:
    args = fn.args
    named = [a.arg for a in args.args][1 if skip_self else 0 :]
    required = [a.arg for a, d in zip(args.kwonlyargs, args.kw_defaults) if d is None]
    return {
        "keywords": sorted(set(named) | {a.arg for a in args.kwonlyargs}),
        "var_kw": args.kwarg is not None,
        "required": sorted(required),
    }


def _absolute(module, stmt, trees) -> str:
    """The module an `from X import ...` in `module` reads, relative imports resolved."""
    if not stmt.level:
        return stmt.module or ""
    parts = module.split(".")
    package = parts if _is_package(module, trees) else parts[:-1]
    package = package[: len(package) - (stmt.level - 1)]
    return ".".join(package + ([stmt.module] if stmt.module else []))


def _is_package(module, trees) -> bool:
    return any(other.startswith(module + ".") for other in trees)


def _dotted(node) -> str | None:
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        head = _dotted(node.value)
        return f"{head}.{node.attr}" if head else None
    return None


def modules_from_git(git_dir, branch, root) -> dict:
    """{module: source} of one package (rclpy, launch, launch_ros) on a branch."""
    prefix = SOURCE_DIRS[root]
    names = subprocess.run(
        ["git", "-C", str(git_dir), "ls-tree", "-r", "--name-only", branch, prefix],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    modules = {}
    for path in names:
        if path.endswith(".py") and "/test" not in path[len(prefix) :]:
            text = subprocess.run(
                ["git", "-C", str(git_dir), "show", f"{branch}:{path}"],
                capture_output=True,
                text=True,
                check=True,
            ).stdout
            modules[_module_name(root, path[len(prefix) + 1 :])] = text
    return modules


def modules_from_folder(folder, root) -> dict:
    return {
        _module_name(root, str(p.relative_to(folder))): p.read_text()
        for p in Path(folder).rglob("*.py")
    }


def _module_name(root, relative) -> str:
    parts = [root, *relative[: -len(".py")].split("/")]
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


# ----------------------------------------------------------------- what the package uses
def package_uses(paths=PACKAGE_FILES) -> dict:
    """{use: {'keywords': [...], 'optional': bool, 'where': [file:line, ...]}}."""
    own_methods = {  # the package's own classes' methods are not ROS calls
        node.name
        for path in (ROOT / "depthclip_ros").rglob("*.py")
        for node in ast.walk(ast.parse(path.read_text()))
        if isinstance(node, ast.ClassDef)
        for node in node.body
        if isinstance(node, ast.FunctionDef) and not node.name.startswith("__")
    }
    uses = {}
    for path in paths:
        tree = ast.parse(Path(path).read_text())
        _FileUses(tree, _relative(path), uses, own_methods).run()
    return uses


def _relative(path) -> str:
    path = Path(path).resolve()
    return str(path.relative_to(ROOT)) if ROOT in path.parents else path.name


class _FileUses(ast.NodeVisitor):
    def __init__(self, tree, where, uses, own_methods):
        self.tree, self.where, self.uses = tree, where, uses
        self.names = {}  # local name -> dotted API name
        self.own_methods = set(own_methods)
        self.guards = []  # names tested by the enclosing `if hasattr(x, "name")` blocks
        self.optional_names = set()  # imported in a `try:` whose ImportError is handled

    def run(self):
        tried = _imports_tried(self.tree)
        for node in ast.walk(self.tree):
            if isinstance(node, ast.Import):
                for alias in node.names:
                    if alias.name.split(".")[0] in ROOTS:
                        local = alias.asname or alias.name.split(".")[0]
                        self.names[local] = alias.name if alias.asname else local
                        self._add(f"name:{alias.name}", node, optional=node in tried)
            elif isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] in ROOTS:
                for alias in node.names:
                    name = f"{node.module}.{alias.name}"
                    self.names[alias.asname or alias.name] = name
                    if node in tried:
                        self.optional_names.add(name)
                    self._add(f"name:{name}", node, optional=node in tried)
        if self.names:
            self.visit(self.tree)

    def visit_If(self, node):
        tested = [
            n.args[1].value
            for n in ast.walk(node.test)
            if isinstance(n, ast.Call)
            and _dotted(n.func) == "hasattr"
            and len(n.args) == 2
            and isinstance(n.args[1], ast.Constant)
        ]
        self.visit(node.test)
        self.guards.append(set(tested))
        for stmt in node.body:
            self.visit(stmt)
        self.guards.pop()
        for stmt in node.orelse:
            self.visit(stmt)

    def visit_Attribute(self, node):
        dotted = self._api_name(node)
        if dotted and "." in dotted and not isinstance(node.ctx, ast.Store):
            self._add(f"name:{dotted}", node)
        self.generic_visit(node)

    def visit_Call(self, node):
        keywords = [k.arg for k in node.keywords if k.arg is not None]
        api = self._api_name(node.func)
        if api is not None:
            self._add(f"call:{api}", node, keywords)
        elif isinstance(node.func, ast.Attribute):
            method, receiver = node.func.attr, node.func.value
            if isinstance(receiver, ast.Call) and self._api_name(receiver.func):
                self._add(f"method:{self._api_name(receiver.func)}.{method}", node, keywords)
            elif method not in self.own_methods and not method.startswith("__"):
                guarded = any(method in names for names in self.guards)
                self._add(f"method:*.{method}", node, keywords, guarded)
        self.generic_visit(node)

    def _api_name(self, node) -> str | None:
        dotted = _dotted(node)
        if dotted is None:
            return None
        head, _, rest = dotted.partition(".")
        if head not in self.names:
            return None
        return f"{self.names[head]}.{rest}" if rest else self.names[head]

    def _add(self, key, node, keywords=(), optional=False):
        dotted = key.partition(":")[2]
        optional |= any(dotted == n or dotted.startswith(n + ".") for n in self.optional_names)
        entry = self.uses.setdefault(key, {"keywords": set(), "optional": True, "where": []})
        entry["keywords"] |= set(keywords)
        entry["optional"] &= optional
        entry["where"].append(f"{self.where}:{node.lineno}")


def _imports_tried(tree) -> set:
    """The imports in the body of a `try:` that handles ImportError (or ModuleNotFoundError):
    feature-detected, optional as a hasattr-guarded method is."""
    tried = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Try) and any(
            {"ImportError", "ModuleNotFoundError"} & _handled(handler) for handler in node.handlers
        ):
            for stmt in node.body:
                tried |= {n for n in ast.walk(stmt) if isinstance(n, (ast.Import, ast.ImportFrom))}
    return tried


def _handled(handler) -> set:
    types = handler.type.elts if isinstance(handler.type, ast.Tuple) else [handler.type]
    return {_dotted(t) for t in types if t is not None}


# ----------------------------------------------------------------- the table
def offered(api: Api, key: str, receiver_names=()):
    """What `api` offers for a use key: None (absent), True (a name), or a signature;
    ('method:*.m': the first of RECEIVERS that has m, as `{'on': receiver, ...}`)."""
    kind, _, dotted = key.partition(":")
    if not dotted.startswith("*.") and dotted.split(".")[0] not in api.trees:
        return "not read"
    if kind == "method" and dotted.startswith("*."):
        method = dotted[2:]
        for receiver in receiver_names:
            found = api.resolve(f"{receiver}.{method}")
            if found is not None and found[0] == "function":
                return {"on": receiver, **api.signature(found)}
        return None
    found = api.resolve(dotted)
    if found is None:
        return None
    if kind == "name" or found[0] in ("module", "value"):
        return True
    return api.signature(found) or True


def is_api_method(apis: dict, key: str) -> bool:
    """Whether any distribution has a receiver with this method (else: not an API call)."""
    return any(offered(api, key, RECEIVERS) is not None for api in apis.values() if api)


def receiver_methods(api: Api) -> dict:
    """{receiver: 'name name ...'}: every public method of each receiver, bases included."""
    methods = {}
    for receiver in RECEIVERS:
        found, names, queue = api.resolve(receiver), set(), []
        if found and found[0] == "class":
            queue.append((found[1], found[2]))
        while queue:
            module, cls = queue.pop()
            names |= {
                s.name
                for s in cls.body
                if isinstance(s, (ast.FunctionDef, ast.AsyncFunctionDef))
                and not s.name.startswith("_")
            }
            queue += list(api._bases(module, cls))
        methods[receiver] = " ".join(sorted(names))
    return methods


def build_table(apis: dict, sources: dict) -> dict:
    uses = package_uses()
    rows = {}
    for key in sorted(uses):
        if key.startswith("method:*.") and not is_api_method(apis, key):
            continue  # a method of something else (a dict, a future, the package's own)
        rows[key] = {dist: offered(api, key, RECEIVERS) for dist, api in apis.items()}
    return {
        "sources": sources,
        "receiver_methods": {dist: receiver_methods(api) for dist, api in apis.items()},
        "uses": rows,
    }


def problems(paths=PACKAGE_FILES, table=None) -> list:
    """Every use in `paths` that a distribution lacks, or that the table does not hold yet."""
    table = table or json.loads(TABLE.read_text())
    found = []
    for key, use in sorted(package_uses(paths).items()):
        where = use["where"][0]
        if key.startswith("method:*."):
            method = key[len("method:*.") :]
            lacking = [
                dist
                for dist, receivers in table["receiver_methods"].items()
                if not any(method in names.split() for names in receivers.values())
            ]
            if len(lacking) == len(table["receiver_methods"]):
                continue  # not a method of any ROS object: a dict's, a future's, ...
            if lacking and not use["optional"]:
                found.append(f"{where}: {method}() is not in {', '.join(lacking)}'s rclpy")
                continue
        row = table["uses"].get(key)
        if row is None:
            found.append(f"{where}: {key} is not in the table; regenerate it (ros_api.py)")
            continue
        for dist, offer in row.items():
            if offer == "not read":
                continue
            if offer is None:
                if not use["optional"]:
                    found.append(f"{where}: {key} does not exist in {dist}")
                continue
            if offer is True:
                continue
            if offer["keywords"] != "any":
                for keyword in sorted(use["keywords"] - set(offer["keywords"])):
                    found.append(f"{where}: {key} takes no {keyword}= in {dist}")
            for keyword in offer["required"]:
                if keyword not in use["keywords"]:
                    found.append(f"{where}: {key} needs {keyword}= in {dist}")
    return found


def read_apis(args) -> tuple:
    apis, sources = {}, {}
    for dist, branch in BRANCHES.items():
        modules = {}
        for root, git_dir in (
            ("rclpy", args.rclpy),
            ("launch", args.launch),
            ("launch_ros", args.launch_ros),
        ):
            modules.update(modules_from_git(git_dir, branch, root))
        apis[dist] = Api(modules)
        sources[dist] = {
            root: f"ros2/{root} {branch} @ " + _commit(git_dir, branch)
            for root, git_dir in (
                ("rclpy", args.rclpy),
                ("launch", args.launch),
                ("launch_ros", args.launch_ros),
            )
        }
    kilted = Path(args.kilted_rclpy)
    apis["kilted"] = Api(modules_from_folder(kilted, "rclpy"))
    sources["kilted"] = {
        "rclpy": f"the ros-rclpy wheel, version {_wheel_version(kilted)}",
        "launch": "not read: no Kilted source here",
        "launch_ros": "not read: no Kilted source here",
    }
    return apis, sources


def _commit(git_dir, branch) -> str:
    return subprocess.run(
        ["git", "-C", str(git_dir), "log", "-1", "--format=%h %cs", branch],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()


def _wheel_version(folder) -> str:
    info = sorted(Path(folder).parent.glob("rclpy-*.egg-info")) + sorted(
        Path(folder).parent.glob("rclpy-*.dist-info")
    )
    return info[0].name.split("-")[1] if info else "unknown"


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rclpy", required=True, help="git dir of ros2/rclpy")
    parser.add_argument("--launch", required=True, help="git dir of ros2/launch")
    parser.add_argument("--launch-ros", required=True, help="git dir of ros2/launch_ros")
    parser.add_argument("--kilted-rclpy", required=True, help="Kilted's installed rclpy folder")
    parser.add_argument("--out", default=str(TABLE))
    args = parser.parse_args(argv)
    apis, sources = read_apis(args)
    table = build_table(apis, sources)
    Path(args.out).write_text(json.dumps(table, indent=1, sort_keys=True) + "\n")
    print(f"{len(table['uses'])} uses -> {args.out}")


if __name__ == "__main__":
    main()
