"""A local single-node OpenSearch for development, tests and the demo.

The node is real: the minimal distribution `org.opensearch.distribution.integ-test-zip:opensearch`
and the plugin zips come from Maven Central through `mvn dependency:copy`, are cached under
`<cache>/opensearch/downloads`, the plugins are installed with `bin/opensearch-plugin install`, and
the node runs on 127.0.0.1 with single-node discovery. Nothing else in the project assumes this node:
everything talks to `OPENSEARCH_URL`.

Plugin sets: `knn` (always) and `ml` (ml-commons, neural-search and job-scheduler, for the search
pipeline rerank processor). Each set gets its own installation folder and data folder.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
import zipfile
from dataclasses import dataclass
from pathlib import Path

from fashion_rerank.settings import NodeSettings, cache_root

#: The one OpenSearch version of the project. 2.19.x runs on Java 17; the k-NN, ml-commons,
#: neural-search and job-scheduler 2.19.1.0 zips are all served by Maven Central.
OPENSEARCH_VERSION = "2.19.1"
PLUGIN_VERSION = f"{OPENSEARCH_VERSION}.0"

DISTRIBUTION = f"org.opensearch.distribution.integ-test-zip:opensearch:{OPENSEARCH_VERSION}:zip"
#: plugin set -> ordered (maven artifact, plugin name as listed by _cat/plugins); install order matters
#: (ml-commons extends job-scheduler, neural-search needs ml-commons and k-NN).
PLUGINS: dict[str, list[tuple[str, str]]] = {
    "knn": [(f"org.opensearch.plugin:opensearch-knn:{PLUGIN_VERSION}:zip", "opensearch-knn")],
    "ml": [
        (f"org.opensearch.plugin:opensearch-job-scheduler:{PLUGIN_VERSION}:zip", "opensearch-job-scheduler"),
        (f"org.opensearch.plugin:opensearch-ml-plugin:{PLUGIN_VERSION}:zip", "opensearch-ml"),
        (f"org.opensearch.plugin:neural-search:{PLUGIN_VERSION}:zip", "opensearch-neural-search"),
    ],
}


#: Modules that the full distribution bundles but the minimal one lacks, rebuilt from their Maven jars.
#: k-NN extends lang-painless (its scoring scripts), so the module must exist before the plugin installs.
#: module -> (plugin descriptor fields, jars as group:artifact:version, security policy)
MODULES: dict[str, tuple[dict[str, str], list[str], str]] = {
    "lang-painless": (
        {
            "description": "An easy, safe and fast scripting language for OpenSearch",
            "name": "lang-painless",
            "classname": "org.opensearch.painless.PainlessPlugin",
        },
        [
            f"org.opensearch.plugin:lang-painless:{OPENSEARCH_VERSION}",
            f"org.opensearch.plugin:opensearch-scripting-painless-spi:{OPENSEARCH_VERSION}",
            "org.antlr:antlr4-runtime:4.13.1",
            "org.ow2.asm:asm:9.7",
            "org.ow2.asm:asm-util:9.7",
            "org.ow2.asm:asm-tree:9.7",
            "org.ow2.asm:asm-commons:9.7",
            "org.ow2.asm:asm-analysis:9.7",
        ],
        'grant {\n  permission java.lang.RuntimePermission "createClassLoader";\n'
        '  permission java.lang.RuntimePermission "getClassLoader";\n};\n',
    ),
}


class NodeError(RuntimeError):
    """The local node could not be fetched, installed, started or stopped; the message says what to do."""


@dataclass
class NodePaths:
    """Where one plugin set's installation, data, logs and pid file live."""

    root: Path
    downloads: Path
    home: Path
    data: Path
    logs: Path
    pidfile: Path
    stdout: Path

    @classmethod
    def for_sets(cls, sets: list[str]) -> "NodePaths":
        root = node_root()
        tag = "+".join(sorted(set(sets)))
        base = root / f"{OPENSEARCH_VERSION}-{tag}"
        return cls(
            root=root,
            downloads=root / "downloads",
            home=base / "home",
            data=base / "data",
            logs=base / "logs",
            pidfile=root / "node.pid",
            stdout=base / "logs" / "stdout.log",
        )


#: OpenSearch refuses to run as root; as root the node runs as this system user, from a folder it owns.
SERVICE_USER = "fashion-rerank-os"


def node_root() -> Path:
    """Folder of the node's downloads, installations, data and pid file.

    `$FR_NODE_DIR`, else `<cache>/opensearch`; as root `/var/cache/fashion-rerank/opensearch`, because
    the node runs as SERVICE_USER and cannot enter root's home.
    """
    if os.environ.get("FR_NODE_DIR"):
        root = Path(os.environ["FR_NODE_DIR"])
    elif os.geteuid() == 0:
        root = Path("/var/cache/fashion-rerank/opensearch")
    else:
        root = cache_root() / "opensearch"
    root.mkdir(parents=True, exist_ok=True)
    return root


def _service_user() -> tuple[int, int] | None:
    """(uid, gid) to run the node as when we are root (the user is created if missing), else None."""
    if os.geteuid() != 0:
        return None
    import pwd

    try:
        pw = pwd.getpwnam(SERVICE_USER)
    except KeyError:
        proc = subprocess.run(
            ["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", SERVICE_USER],
            capture_output=True,
            text=True,
        )
        if proc.returncode != 0:
            raise NodeError(
                f"OpenSearch cannot run as root and creating user {SERVICE_USER} failed: {proc.stderr.strip()}"
            ) from None
        pw = pwd.getpwnam(SERVICE_USER)
    return pw.pw_uid, pw.pw_gid


def _chown_tree(path: Path, ids: tuple[int, int]) -> None:
    for dirpath, _dirnames, filenames in os.walk(path):
        os.chown(dirpath, *ids)
        for name in filenames:
            os.chown(os.path.join(dirpath, name), *ids, follow_symlinks=False)


def plugin_sets(spec: str) -> list[str]:
    """Parse `knn,ml` into a validated list that always contains `knn`.

    Raises:
        NodeError: an unknown plugin set name.
    """
    sets = {s.strip() for s in spec.split(",") if s.strip()} | {"knn"}
    unknown = sets - PLUGINS.keys()
    if unknown:
        raise NodeError(f"unknown plugin set(s) {sorted(unknown)}; choose from {sorted(PLUGINS)}")
    return sorted(sets)


# ---------------------------------------------------------------------------------------------- fetch


def _artifact_file(artifact: str) -> str:
    group, name, version, ext = artifact.split(":")
    return f"{name}-{version}.{ext}"


def fetch(artifact: str, downloads: Path) -> Path:
    """Download a Maven artifact into `downloads` with `mvn dependency:copy` unless already there.

    Returns the path of the zip. Raises NodeError when Maven is missing or the download fails.
    """
    target = downloads / _artifact_file(artifact)
    if target.exists() and target.stat().st_size > 0:
        return target
    if shutil.which("mvn") is None:
        raise NodeError("Maven (`mvn`) is needed to fetch OpenSearch from Maven Central; install it (apt-get install maven)")
    downloads.mkdir(parents=True, exist_ok=True)
    print(f"fetching {artifact} from Maven Central ...", flush=True)
    proc = subprocess.run(
        ["mvn", "-q", "-B", "dependency:copy", f"-Dartifact={artifact}", f"-DoutputDirectory={downloads}"],
        capture_output=True,
        text=True,
    )
    if proc.returncode != 0 or not target.exists():
        tail = "\n".join((proc.stdout + proc.stderr).splitlines()[-15:])
        raise NodeError(f"could not fetch {artifact} (mvn exit {proc.returncode}):\n{tail}")
    return target


def fetch_jars(coords: list[str], target: Path) -> list[Path]:
    """Download plain jars (no transitive dependencies) into `target` with one Maven run; cached."""
    files = [target / f"{c.split(':')[1]}-{c.split(':')[2]}.jar" for c in coords]
    if all(f.exists() for f in files):
        return files
    if shutil.which("mvn") is None:
        raise NodeError("Maven (`mvn`) is needed to fetch OpenSearch from Maven Central; install it (apt-get install maven)")
    target.mkdir(parents=True, exist_ok=True)
    deps = "".join(
        f"<dependency><groupId>{g}</groupId><artifactId>{a}</artifactId><version>{v}</version></dependency>"
        for g, a, v in (c.split(":") for c in coords)
    )
    pom = target / "pom.xml"
    pom.write_text(
        '<project xmlns="http://maven.apache.org/POM/4.0.0"><modelVersion>4.0.0</modelVersion>'
        "<groupId>fashion-rerank</groupId><artifactId>modules</artifactId><version>1</version>"
        f"<dependencies>{deps}</dependencies></project>"
    )
    print(f"fetching {len(coords)} module jars from Maven Central ...", flush=True)
    proc = subprocess.run(
        [
            "mvn",
            "-q",
            "-B",
            "-f",
            str(pom),
            "dependency:copy-dependencies",
            "-DexcludeTransitive=true",
            f"-DoutputDirectory={target}",
        ],
        capture_output=True,
        text=True,
    )
    missing = [f.name for f in files if not f.exists()]
    if proc.returncode != 0 or missing:
        tail = "\n".join((proc.stdout + proc.stderr).splitlines()[-15:])
        raise NodeError(f"could not fetch module jars {missing} (mvn exit {proc.returncode}):\n{tail}")
    return files


def _install_module(name: str, home: Path, downloads: Path) -> None:
    descriptor, coords, policy = MODULES[name]
    jars = fetch_jars(coords, downloads / "modules" / name)
    dest = home / "modules" / name
    dest.mkdir(parents=True, exist_ok=True)
    for jar in jars:
        shutil.copy2(jar, dest / jar.name)
    props = dict(
        descriptor,
        version=OPENSEARCH_VERSION,
        **{
            "opensearch.version": OPENSEARCH_VERSION,
            "java.version": "11",
            "extended.plugins": "",
            "has.native.controller": "false",
        },
    )
    (dest / "plugin-descriptor.properties").write_text("".join(f"{k}={v}\n" for k, v in props.items()))
    (dest / "plugin-security.policy").write_text(policy)


# -------------------------------------------------------------------------------------------- install


def _java_home(settings: NodeSettings) -> str:
    """Find a JDK >= 11 for OpenSearch 2.19 (FR_NODE_JAVA_HOME, OPENSEARCH_JAVA_HOME, JAVA_HOME, PATH)."""
    for cand in (settings.java_home, os.environ.get("OPENSEARCH_JAVA_HOME"), os.environ.get("JAVA_HOME")):
        if cand and (Path(cand) / "bin" / "java").exists():
            return cand
    java = shutil.which("java")
    if java:
        return str(Path(os.path.realpath(java)).parent.parent)
    raise NodeError(
        "no Java found: OpenSearch needs a JDK 11+ (17 recommended). Install one "
        "(apt-get install openjdk-17-jdk-headless) or set JAVA_HOME / FR_NODE_JAVA_HOME"
    )


def install(sets: list[str], settings: NodeSettings) -> NodePaths:
    """Fetch and unpack the distribution and install the plugins of `sets`; idempotent.

    A finished installation is marked by `home/.fashion-rerank-installed`; a half-finished one
    (interrupted run) is removed and redone.
    """
    paths = NodePaths.for_sets(sets)
    marker = paths.home / ".fashion-rerank-installed"
    if marker.exists():
        return paths
    dist = fetch(DISTRIBUTION, paths.downloads)
    zips = [(fetch(a, paths.downloads), name) for s in sets for a, name in PLUGINS[s]]
    if paths.home.exists():
        shutil.rmtree(paths.home)
    staging = paths.home.parent / "staging"
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    print(f"unpacking {dist.name} ...", flush=True)
    with zipfile.ZipFile(dist) as zf:
        zf.extractall(staging)
        for info in zf.infolist():  # zipfile drops the executable bits; restore them from the zip
            mode = (info.external_attr >> 16) & 0o777
            if mode:
                os.chmod(staging / info.filename, mode)
    (top,) = list(staging.iterdir())
    top.rename(paths.home)
    staging.rmdir()
    for module in MODULES:
        _install_module(module, paths.home, paths.downloads)
    env = dict(os.environ, OPENSEARCH_JAVA_HOME=_java_home(settings))
    for zpath, name in zips:
        print(f"installing plugin {name} ...", flush=True)
        proc = subprocess.run(
            [str(paths.home / "bin" / "opensearch-plugin"), "install", "--batch", zpath.resolve().as_uri()],
            capture_output=True,
            text=True,
            env=env,
        )
        if proc.returncode != 0:
            raise NodeError(f"opensearch-plugin install {name} failed:\n{proc.stdout[-2000:]}{proc.stderr[-2000:]}")
    marker.write_text(json.dumps({"version": OPENSEARCH_VERSION, "plugins": sets}))
    return paths


def _write_config(paths: NodePaths, settings: NodeSettings) -> None:
    paths.data.mkdir(parents=True, exist_ok=True)
    paths.logs.mkdir(parents=True, exist_ok=True)
    cfg = {
        "cluster.name": "fashion-rerank-dev",
        "node.name": "fashion-rerank-node",
        "network.host": settings.host,
        "http.port": settings.port,
        "transport.port": settings.port + 100,
        "discovery.type": "single-node",
        "path.data": str(paths.data),
        "path.logs": str(paths.logs),
        # a development node on a shared disk: do not go read-only when the disk is fuller than 85-95 %
        "cluster.routing.allocation.disk.threshold_enabled": False,
        "action.auto_create_index": True,
    }
    lines = [f"{k}: {json.dumps(v)}" for k, v in cfg.items()]
    (paths.home / "config" / "opensearch.yml").write_text("\n".join(lines) + "\n")
    jvm = paths.home / "config" / "jvm.options"
    text = jvm.read_text()

    text = re.sub(r"^-Xms\S+$", f"-Xms{settings.heap}", text, flags=re.M)
    text = re.sub(r"^-Xmx\S+$", f"-Xmx{settings.heap}", text, flags=re.M)
    jvm.write_text(text)


# ------------------------------------------------------------------------------------------- control


def _url(settings: NodeSettings) -> str:
    return f"http://{settings.host}:{settings.port}"


def _get(url: str, timeout: float = 3.0) -> dict | list | None:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:
            return json.loads(resp.read())
    except (urllib.error.URLError, OSError, ValueError):
        return None


def _port_open(host: str, port: int) -> bool:
    with contextlib.closing(socket.socket(socket.AF_INET, socket.SOCK_STREAM)) as s:
        s.settimeout(1.0)
        return s.connect_ex((host, port)) == 0


def _our_pid(paths_root: Path) -> int | None:
    """The pid in the pid file if that process is alive and is an OpenSearch of ours."""
    pidfile = paths_root / "node.pid"
    try:
        pid = int(pidfile.read_text().split()[0])
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace")
    except (OSError, ValueError, IndexError):
        return None
    return pid if str(paths_root) in cmdline else None


def installed_plugins(url: str) -> set[str]:
    """Names of the plugins loaded by the node at `url` (empty when unreachable)."""
    rows = _get(f"{url}/_cat/plugins?format=json") or []
    return {r.get("component", "") for r in rows if isinstance(r, dict)}


def status(settings: NodeSettings | None = None) -> dict:
    """Describe the node at the configured host/port: running, ours, pid, version, health, plugins."""
    settings = settings or NodeSettings()
    url = _url(settings)
    root = node_root()
    info = _get(url) or {}
    health = _get(f"{url}/_cluster/health") or {}
    return {
        "url": url,
        "running": bool(info),
        "ours": _our_pid(root) is not None,
        "pid": _our_pid(root),
        "version": (info.get("version") or {}).get("number"),
        "health": health.get("status"),
        "plugins": sorted(installed_plugins(url)) if info else [],
    }


def _log_tail(paths: NodePaths, n: int = 40) -> str:
    for f in (paths.logs / "fashion-rerank-dev.log", paths.stdout):
        if f.exists():
            return "\n".join(f.read_text(errors="replace").splitlines()[-n:])
    return "(no log written)"


def start(plugins: str | None = None, settings: NodeSettings | None = None) -> dict:
    """Start the node (fetch and install first if needed) and return its status once usable.

    Returns only when the cluster is at least yellow and every requested plugin is loaded. A node
    that already answers with those plugins is left alone (no-op). Raises NodeError when the port
    is taken by something else, Java is missing, the download fails, or the node does not come up
    in `start_timeout_s` (the end of its log is in the message).
    """
    settings = settings or NodeSettings()
    sets = plugin_sets(plugins if plugins is not None else settings.plugins)
    wanted = {name for s in sets for _, name in PLUGINS[s]}
    url = _url(settings)
    root = node_root()
    root.mkdir(parents=True, exist_ok=True)
    with open(root / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # two concurrent `start`s: the second waits, then sees it running
        running = _get(url)
        if running:
            have = installed_plugins(url)
            if wanted <= have:
                _wait_ready(url, wanted, settings.start_timeout_s, None)
                return status(settings)
            if _our_pid(root) is None:
                raise NodeError(
                    f"an OpenSearch at {url} is running without plugins {sorted(wanted - have)} and was not "
                    "started by fashion-rerank; stop it or point FR_NODE_PORT elsewhere"
                )
            stop(settings)  # ours, with fewer plugins: restart with the larger set
        elif _port_open(settings.host, settings.port):
            raise NodeError(
                f"port {settings.port} on {settings.host} is in use by something that is not OpenSearch; "
                "free it or set FR_NODE_PORT"
            )
        paths = install(sets, settings)
        _write_config(paths, settings)
        env = dict(
            os.environ,
            OPENSEARCH_JAVA_HOME=_java_home(settings),
            OPENSEARCH_JAVA_OPTS=f"-Xms{settings.heap} -Xmx{settings.heap}",
        )
        env.pop("JAVA_TOOL_OPTIONS", None)
        ids = _service_user()
        if ids:
            _chown_tree(paths.home.parent, ids)
            env["HOME"] = str(paths.home)
        print(f"starting OpenSearch {OPENSEARCH_VERSION} ({'+'.join(sets)}) on {url} ...", flush=True)
        with open(paths.stdout, "ab") as out:
            proc = subprocess.Popen(
                [str(paths.home / "bin" / "opensearch")],
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=env,
                cwd=paths.home,
                start_new_session=True,
                user=ids[0] if ids else None,
                group=ids[1] if ids else None,
                extra_groups=[] if ids else None,
            )
        paths.pidfile.write_text(f"{proc.pid}\n{paths.home}\n")
        _wait_ready(url, wanted, settings.start_timeout_s, (proc, paths))
        return status(settings)


def _wait_ready(url: str, wanted: set[str], timeout_s: float, started: tuple | None) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if started is not None and started[0].poll() is not None:
            raise NodeError(
                f"OpenSearch exited with code {started[0].returncode} while starting; end of its log:\n{_log_tail(started[1])}"
            )
        health = _get(f"{url}/_cluster/health?wait_for_status=yellow&timeout=2s", timeout=5)
        if health and health.get("status") in ("yellow", "green") and wanted <= installed_plugins(url):
            return
        time.sleep(1.0)
    tail = _log_tail(started[1]) if started else ""
    raise NodeError(f"OpenSearch at {url} was not ready (yellow, plugins {sorted(wanted)}) within {timeout_s:.0f}s\n{tail}")


def stop(settings: NodeSettings | None = None, grace_s: float = 60.0) -> bool:
    """Stop the node this tool started (SIGTERM, then SIGKILL after `grace_s`). Returns False if none."""
    root = node_root()
    pid = _our_pid(root)
    if pid is None:
        return False
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + grace_s
    while time.monotonic() < deadline and Path(f"/proc/{pid}").exists():
        with contextlib.suppress(ChildProcessError):
            os.waitpid(pid, os.WNOHANG)
        if not _our_pid(root):
            break
        time.sleep(0.5)
    if _our_pid(root):
        os.kill(pid, signal.SIGKILL)
    (root / "node.pid").unlink(missing_ok=True)
    return True
