"""A local single-node OpenSearch for development, tests and the demo.

The node is real: the minimal distribution `org.opensearch.distribution.integ-test-zip:opensearch`
and the plugin zips come from Maven Central through `mvn dependency:copy`, are cached under
`<cache>/opensearch/downloads`, the plugins are installed with `bin/opensearch-plugin install`, and
the node runs on 127.0.0.1 with single-node discovery. Nothing else in the project assumes this node:
everything talks to `OPENSEARCH_URL`.

Plugin sets: `knn` (always) and `ml` (ml-commons, neural-search and job-scheduler, for the search
pipeline rerank processor). Each (version, plugin set) gets its own installation folder and data folder.

Versions: 2.19.1 by default; `FR_NODE_VERSION` (or `fashion-rerank opensearch start --version`) picks
another, e.g. 3.5.0. The 2.x line runs on Java 11-23 (it needs the Security Manager, which Java 24
removed), the 3.x line needs Java 21 or newer: `_java_home` finds one (see there). Tested versions are
TESTED_VERSIONS (README, "Use an existing OpenSearch cluster").
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

#: The default OpenSearch version of the project (FR_NODE_VERSION / `--version` choose another). 2.19.x
#: runs on Java 17; the k-NN, ml-commons, neural-search and job-scheduler 2.19.1.0 zips are all served
#: by Maven Central.
OPENSEARCH_VERSION = "2.19.1"
PLUGIN_VERSION = f"{OPENSEARCH_VERSION}.0"

#: Versions whose OpenSearch-facing tests CI runs (.ci/run). For 3.5.0 the distribution and k-NN 3.5.0.0
#: are served by the Maven registry this project reaches; ml-commons, neural-search and job-scheduler
#: 3.5.0.0 were not (checked Dec 2026), so the `ml` set (install-pipeline) is tested on 2.19.1 only.
TESTED_VERSIONS = (OPENSEARCH_VERSION, "3.5.0")


def _plugins(plugin_version: str) -> dict[str, list[tuple[str, str]]]:
    return {
        "knn": [(f"org.opensearch.plugin:opensearch-knn:{plugin_version}:zip", "opensearch-knn")],
        "ml": [
            (f"org.opensearch.plugin:opensearch-job-scheduler:{plugin_version}:zip", "opensearch-job-scheduler"),
            (f"org.opensearch.plugin:opensearch-ml-plugin:{plugin_version}:zip", "opensearch-ml"),
            (f"org.opensearch.plugin:neural-search:{plugin_version}:zip", "opensearch-neural-search"),
        ],
    }


DISTRIBUTION = f"org.opensearch.distribution.integ-test-zip:opensearch:{OPENSEARCH_VERSION}:zip"
#: plugin set -> ordered (maven artifact, plugin name as listed by _cat/plugins); install order matters
#: (ml-commons extends job-scheduler, neural-search needs ml-commons and k-NN). For the default version;
#: `Release.plugins` has them for any version (same artifacts and names, plugin version `<version>.0`).
PLUGINS: dict[str, list[tuple[str, str]]] = _plugins(PLUGIN_VERSION)


@dataclass(frozen=True)
class Release:
    """One OpenSearch version: its Maven coordinates and the Java versions it runs on."""

    version: str
    min_java: int
    max_java: int | None  # None: no known upper bound

    @property
    def major(self) -> int:
        return int(self.version.split(".")[0])

    @property
    def plugin_version(self) -> str:
        return f"{self.version}.0"

    @property
    def distribution(self) -> str:
        return f"org.opensearch.distribution.integ-test-zip:opensearch:{self.version}:zip"

    @property
    def plugins(self) -> dict[str, list[tuple[str, str]]]:
        return _plugins(self.plugin_version)


def release(version: str | None = None) -> Release:
    """The Release of `version` (default OPENSEARCH_VERSION); 2.x and 3.x `major.minor.patch` only.

    2.x needs the Java Security Manager (gone in Java 24), so Java 11-23; 3.x needs Java 21 or newer.

    Raises:
        NodeError: not a 2.x or 3.x version number.
    """
    version = (version or OPENSEARCH_VERSION).strip()
    m = re.fullmatch(r"(\d+)\.(\d+)\.(\d+)", version)
    if not m or int(m.group(1)) not in (2, 3):
        raise NodeError(
            f"unsupported OpenSearch version {version!r}: give a 2.x or 3.x release such as "
            f"{' or '.join(TESTED_VERSIONS)} (the versions tested)"
        )
    if int(m.group(1)) == 2:
        return Release(version, min_java=11, max_java=23)
    return Release(version, min_java=21, max_java=None)


#: Modules that the full distribution bundles but the minimal one lacks, rebuilt from their Maven jars.
#: k-NN extends lang-painless (its scoring scripts), so the module must exist before the plugin installs.
#: The 2.19 integ-test zip lacks it; the 3.x one ships it (and transport-grpc, which k-NN 3.x also
#: extends), so a module already in the distribution is left as it is.
#: module -> (plugin descriptor fields, jars as group:artifact:version, security policy); the jars are
#: those of 2.19.1 (another version's OpenSearch jars take that version, see `_install_module`).
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


class FetchError(NodeError):
    """An artifact could not be fetched from the Maven registry (not served there, or no network)."""


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
    def for_sets(cls, sets: list[str], version: str = OPENSEARCH_VERSION) -> "NodePaths":
        root = node_root()
        tag = "+".join(sorted(set(sets)))
        base = root / f"{version}-{tag}"
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
        lines = (proc.stdout + proc.stderr).splitlines()
        why = [ln for ln in lines if "Failed to execute goal" in ln or "Could not" in ln][:3]  # "... was not found in ..."
        tail = "\n".join(why or lines[-15:])
        raise FetchError(f"could not fetch {artifact} (mvn exit {proc.returncode}):\n{tail}")
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


def _install_module(name: str, home: Path, downloads: Path, version: str = OPENSEARCH_VERSION) -> None:
    descriptor, coords, policy = MODULES[name]
    if version != OPENSEARCH_VERSION:  # the OpenSearch jars of that version; the third-party jars stay
        coords = [c.replace(f":{OPENSEARCH_VERSION}", f":{version}") if c.startswith("org.opensearch") else c for c in coords]
    folder = name if version == OPENSEARCH_VERSION else f"{name}-{version}"
    jars = fetch_jars(coords, downloads / "modules" / folder)
    dest = home / "modules" / name
    dest.mkdir(parents=True, exist_ok=True)
    for jar in jars:
        shutil.copy2(jar, dest / jar.name)
    props = dict(
        descriptor,
        version=version,
        **{
            "opensearch.version": version,
            "java.version": "11" if release(version).major == 2 else "21",
            "extended.plugins": "",
            "has.native.controller": "false",
        },
    )
    (dest / "plugin-descriptor.properties").write_text("".join(f"{k}={v}\n" for k, v in props.items()))
    (dest / "plugin-security.policy").write_text(policy)


# -------------------------------------------------------------------------------------------- install


#: Where JDKs are installed (Debian/Ubuntu packages and the Temurin packages put them here).
JVM_DIRS = (Path("/usr/lib/jvm"),)

_java_majors: dict[str, int | None] = {}


def java_major(java_home: str | Path) -> int | None:
    """The feature version of `<java_home>/bin/java` from `java -version` (17, 21, 25; 8 for 1.8), or None."""
    java = Path(java_home) / "bin" / "java"
    key = os.path.realpath(java)
    if key not in _java_majors:
        major = None
        if java.exists():
            try:
                proc = subprocess.run([str(java), "-version"], capture_output=True, text=True, timeout=30)
                m = re.search(r'version "(\d+)(?:\.(\d+))?', proc.stderr + proc.stdout)
                if m:
                    major = int(m.group(2)) if m.group(1) == "1" and m.group(2) else int(m.group(1))
            except (OSError, subprocess.SubprocessError):
                major = None
        _java_majors[key] = major
    return _java_majors[key]


def _java_hint(rel: Release) -> str:
    if rel.major == 2:
        return "Install one (apt-get install openjdk-17-jdk-headless) or set JAVA_HOME / FR_NODE_JAVA_HOME"
    return (
        "Install a JDK 21 or newer, e.g. Eclipse Temurin 21 or 25 (package temurin-21-jdk or temurin-25-jdk from "
        "the Adoptium apt repository; Debian 13 and Ubuntu 24.04 also have openjdk-21-jdk-headless), then set "
        "FR_NODE_JAVA_HOME to it if it is not under /usr/lib/jvm"
    )


def _java_home(settings: NodeSettings, version: str | None = None) -> str:
    """Find a JDK for OpenSearch `version` (default: settings.version); returns its home folder.

    Candidates, in order: FR_NODE_JAVA_HOME, OPENSEARCH_JAVA_HOME, JAVA_HOME, the `java` on PATH.
    2.x (Java 11-23, 17 recommended): the first candidate whose `java -version` is in that range (24 and
    newer have no Security Manager, which 2.x needs). 3.x (Java 21 or newer): the first candidate that
    is new enough, else the newest JDK >= 21 under /usr/lib/jvm (such as /usr/lib/jvm/temurin-25-jdk-amd64
    beside the system's Java 17). Raises NodeError naming what to install when none fits.
    """
    rel = release(version or settings.version)
    cands: list[tuple[str, str]] = [
        (name, val)
        for name, val in (
            ("FR_NODE_JAVA_HOME", settings.java_home),
            ("OPENSEARCH_JAVA_HOME", os.environ.get("OPENSEARCH_JAVA_HOME")),
            ("JAVA_HOME", os.environ.get("JAVA_HOME")),
        )
        if val and (Path(val) / "bin" / "java").exists()
    ]
    java = shutil.which("java")
    if java:
        cands.append(("java on PATH", str(Path(os.path.realpath(java)).parent.parent)))

    def fits(major: int | None) -> bool:
        return major is not None and major >= rel.min_java and (rel.max_java is None or major <= rel.max_java)

    for _name, home in cands:
        major = java_major(home)
        if fits(major) or (rel.major == 2 and major is None):  # 2.x: an unreadable version is taken, as before
            return home
    scanned: dict[str, int] = {}
    for jvm_dir in JVM_DIRS if rel.major >= 3 else ():
        if jvm_dir.is_dir():
            for home in sorted(jvm_dir.iterdir()):
                real = os.path.realpath(home)
                major = java_major(home) if (home / "bin" / "java").exists() else None
                if real not in scanned and fits(major):
                    scanned[real] = major or 0
    if scanned:
        return max(scanned, key=lambda h: (scanned[h], h))
    if not cands and rel.major == 2:
        raise NodeError(
            "no Java found: OpenSearch needs a JDK 11+ (17 recommended). Install one "
            "(apt-get install openjdk-17-jdk-headless) or set JAVA_HOME / FR_NODE_JAVA_HOME"
        )
    need = f"Java {rel.min_java}-{rel.max_java}" if rel.max_java else f"Java {rel.min_java} or newer"
    seen = "; ".join(f"{name} {home} is Java {java_major(home) or '?'}" for name, home in cands) or "no java on PATH"
    where = f"; none fits under {', '.join(map(str, JVM_DIRS))}" if rel.major >= 3 else ""
    raise NodeError(f"no suitable Java found: OpenSearch {rel.version} needs {need} ({seen}{where}). {_java_hint(rel)}")


def install(sets: list[str], settings: NodeSettings) -> NodePaths:
    """Fetch and unpack the distribution and install the plugins of `sets`; idempotent.

    A finished installation is marked by `home/.fashion-rerank-installed`; a half-finished one
    (interrupted run) is removed and redone.
    """
    rel = release(settings.version)
    paths = NodePaths.for_sets(sets, rel.version)
    marker = paths.home / ".fashion-rerank-installed"
    if marker.exists():
        return paths
    java_home = _java_home(settings, rel.version)  # fail before any download when no JDK fits
    dist = fetch(rel.distribution, paths.downloads)
    zips = []
    for s in sets:
        for artifact, name in rel.plugins[s]:
            try:
                zips.append((fetch(artifact, paths.downloads), name))
            except FetchError as exc:
                raise FetchError(
                    f"{exc}\nThe plugin set {s!r} of OpenSearch {rel.version} needs {artifact}, which the Maven registry did "
                    f"not serve; choose another set or version (tested: {', '.join(TESTED_VERSIONS)})"
                ) from None
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
        if not (paths.home / "modules" / module).exists():  # the 3.x distribution ships lang-painless
            _install_module(module, paths.home, paths.downloads, rel.version)
    env = dict(os.environ, OPENSEARCH_JAVA_HOME=java_home)
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
    marker.write_text(json.dumps({"version": rel.version, "plugins": sets}))
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


def _serves(url: str, pid: int) -> bool:
    """Whether the node answering at `url` is process `pid` (another node may hold the port)."""
    info = _get(f"{url}/_nodes/_local/process?filter_path=nodes.*.process.id") or {}
    nodes = info.get("nodes") if isinstance(info, dict) else None
    return any(str((n.get("process") or {}).get("id")) == str(pid) for n in (nodes or {}).values())


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
    pid = _our_pid(root)
    return {
        "url": url,
        "running": bool(info),
        "ours": pid is not None and (not info or _serves(url, pid)),
        "pid": pid,
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
    rel = release(settings.version)
    sets = plugin_sets(plugins if plugins is not None else settings.plugins)
    wanted = {name for s in sets for _, name in rel.plugins[s]}
    url = _url(settings)
    root = node_root()
    root.mkdir(parents=True, exist_ok=True)
    with open(root / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # two concurrent `start`s: the second waits, then sees it running
        running = _get(url)
        restart = False
        if running:
            have = installed_plugins(url)
            running_version = (running.get("version") or {}).get("number") if isinstance(running, dict) else None
            if wanted <= have and running_version == rel.version:
                _wait_ready(url, wanted, settings.start_timeout_s, None)
                return status(settings)
            ours = _our_pid(root)
            if ours is None or not _serves(url, ours):  # (our pid file may name a node on another port)
                if running_version != rel.version:
                    raise NodeError(
                        f"an OpenSearch {running_version} at {url} is running and was not started by fashion-rerank, "
                        f"but OpenSearch {rel.version} was asked for (FR_NODE_VERSION / --version); stop it or point "
                        "FR_NODE_PORT elsewhere"
                    )
                raise NodeError(
                    f"an OpenSearch at {url} is running without plugins {sorted(wanted - have)} and was not "
                    "started by fashion-rerank; stop it or point FR_NODE_PORT elsewhere"
                )
            restart = True  # ours, with fewer plugins or another version: restart as asked, once installed
        elif _port_open(settings.host, settings.port):
            raise NodeError(
                f"port {settings.port} on {settings.host} is in use by something that is not OpenSearch; "
                "free it or set FR_NODE_PORT"
            )
        elif _our_pid(root) is not None:
            raise NodeError(
                f"a node started by fashion-rerank from {root} (pid {_our_pid(root)}) is running but does not answer at "
                f"{url}: it serves another port or hangs. Stop it (`fashion-rerank opensearch stop`), or give this node its "
                "own FR_NODE_DIR"
            )
        paths = install(sets, settings)  # a failed download leaves a running node running
        if restart:
            stop(settings)
        _write_config(paths, settings)
        java_home = _java_home(settings, rel.version)
        env = dict(
            os.environ,
            OPENSEARCH_JAVA_HOME=java_home,
            OPENSEARCH_JAVA_OPTS=f"-Xms{settings.heap} -Xmx{settings.heap}",
        )
        env.pop("JAVA_TOOL_OPTIONS", None)
        ids = _service_user()
        if ids:
            _chown_tree(paths.home.parent, ids)
            env["HOME"] = str(paths.home)
        java_note = "" if rel.major == 2 else f" with Java {java_major(java_home)} ({java_home})"
        print(f"starting OpenSearch {rel.version} ({'+'.join(sets)}) on {url}{java_note} ...", flush=True)
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
        if (
            health
            and health.get("status") in ("yellow", "green")
            and wanted <= installed_plugins(url)
            and (started is None or _serves(url, started[0].pid))
        ):
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


# ------------------------------------------------------------------------------------ local cluster
# A multi-node cluster on one machine, for fault tests (tests/integration/test_cluster.py): each node its
# own config folder (OPENSEARCH_PATH_CONF), data, logs and pid file under `<node root>/cluster-<http port>/`,
# all run from the one `knn` installation. Nothing here touches the single development node above (its
# config, pid file or port).


@dataclass
class ClusterNode:
    """One node of a `LocalCluster`: its name, ports, folder and process id (None once stopped)."""

    name: str
    http_port: int
    transport_port: int
    dir: Path
    pid: int | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"


@dataclass
class LocalCluster:
    """A local multi-node cluster started by `start_cluster`.

    `url` lists every node comma-separated (what `OPENSEARCH_URL` takes: the client fails over between
    them); `urls` are the nodes' own URLs."""

    name: str
    root: Path
    nodes: list[ClusterNode]

    @property
    def urls(self) -> list[str]:
        return [n.url for n in self.nodes]

    @property
    def url(self) -> str:
        return ",".join(self.urls)

    def running(self) -> list[ClusterNode]:
        """The nodes whose process is alive."""
        return [n for n in self.nodes if n.pid is not None and _alive(n.pid)]


def _alive(pid: int) -> bool:
    """Whether process `pid` exists and is not a zombie (an exited child not yet reaped)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return False


def _cluster_config(node: ClusterNode, cluster: str, seeds: list[str], managers: list[str]) -> dict:
    return {
        "cluster.name": cluster,
        "node.name": node.name,
        "network.host": "127.0.0.1",
        "http.port": node.http_port,
        "transport.port": node.transport_port,
        "discovery.seed_hosts": seeds,
        "cluster.initial_cluster_manager_nodes": managers,
        "path.data": str(node.dir / "data"),
        "path.logs": str(node.dir / "logs"),
        "cluster.routing.allocation.disk.threshold_enabled": False,
        "action.auto_create_index": True,
    }


def start_cluster(
    nodes: int = 3,
    base_http_port: int = 9210,
    base_transport_port: int = 9310,
    heap: str = "512m",
    plugins: str = "knn",
    settings: NodeSettings | None = None,
    timeout_s: float | None = None,
) -> LocalCluster:
    """Start a fresh `nodes`-node cluster on 127.0.0.1 and return it once green with every node joined.

    Node i listens on HTTP `base_http_port + i` and transport `base_transport_port + i`, with a `heap`
    JVM heap (512 MB each by default: three nodes and their JVM overhead take about 2.5 GB); every node
    is cluster-manager-eligible and a data node. Each start wipes the cluster's previous data (a test
    cluster). The installation is `install(plugin sets, settings)` (k-NN always), shared with the dev node.

    Raises:
        NodeError: a port is already in use (the shared dev node's port included: never touched), Java
            is missing, or the cluster is not green with all nodes within `timeout_s` (default
            `settings.start_timeout_s`; the nodes started are stopped again).
    """
    settings = settings or NodeSettings()
    rel = release(settings.version)
    sets = plugin_sets(plugins)
    wanted = {name for s in sets for _, name in rel.plugins[s]}
    http_ports = [base_http_port + i for i in range(nodes)]
    transport_ports = [base_transport_port + i for i in range(nodes)]
    root = node_root() / f"cluster-{base_http_port}"
    stop_leftover_cluster(root)
    busy = [p for p in http_ports + transport_ports if _port_open("127.0.0.1", p)]
    if busy:
        raise NodeError(f"cannot start a {nodes}-node cluster: ports {busy} on 127.0.0.1 are in use")
    paths = install(sets, settings)
    java_home = _java_home(settings, rel.version)
    name = f"fr-cluster-{base_http_port}"
    shutil.rmtree(root, ignore_errors=True)
    members = [ClusterNode(f"{name}-{i}", http_ports[i], transport_ports[i], root / f"node-{i}") for i in range(nodes)]
    cluster = LocalCluster(name, root, members)
    seeds = [f"127.0.0.1:{p}" for p in transport_ports]
    managers = [n.name for n in members]
    ids = _service_user()
    for node in members:
        conf = node.dir / "config"
        shutil.copytree(paths.home / "config", conf)
        (conf / "opensearch.yml").write_text(
            "".join(f"{k}: {json.dumps(v)}\n" for k, v in _cluster_config(node, name, seeds, managers).items())
        )
        jvm = conf / "jvm.options"
        text = re.sub(r"^-Xms\S+$", f"-Xms{heap}", jvm.read_text(), flags=re.M)
        jvm.write_text(re.sub(r"^-Xmx\S+$", f"-Xmx{heap}", text, flags=re.M))
        (node.dir / "data").mkdir()
        (node.dir / "logs").mkdir()
    if ids:
        _chown_tree(root, ids)
    print(f"starting a {nodes}-node OpenSearch {rel.version} cluster {name} on ports {http_ports} ...", flush=True)
    try:
        for node in members:
            env = dict(
                os.environ,
                OPENSEARCH_JAVA_HOME=java_home,
                OPENSEARCH_PATH_CONF=str(node.dir / "config"),
                OPENSEARCH_JAVA_OPTS=f"-Xms{heap} -Xmx{heap}",
            )
            env.pop("JAVA_TOOL_OPTIONS", None)
            if ids:
                env["HOME"] = str(node.dir)
            with open(node.dir / "logs" / "stdout.log", "ab") as out:
                proc = subprocess.Popen(
                    [str(paths.home / "bin" / "opensearch")],
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    stdin=subprocess.DEVNULL,
                    env=env,
                    cwd=node.dir,
                    start_new_session=True,
                    user=ids[0] if ids else None,
                    group=ids[1] if ids else None,
                    extra_groups=[] if ids else None,
                )
            node.pid = proc.pid
            (node.dir / "node.pid").write_text(f"{proc.pid}\n")
        wait_cluster(cluster, nodes, "green", timeout_s or settings.start_timeout_s, wanted)
    except BaseException:
        stop_cluster(cluster)
        raise
    return cluster


def cluster_health(url: str) -> dict:
    """`_cluster/health` of the node at `url` (one node's URL), {} when it does not answer."""
    got = _get(f"{url}/_cluster/health", timeout=5)
    return got if isinstance(got, dict) else {}


def wait_cluster(cluster: LocalCluster, nodes: int, status: str, timeout_s: float, plugins: set[str] | None = None) -> dict:
    """Wait until a running node reports `nodes` nodes and at least `status` (green > yellow); its health.

    Raises:
        NodeError: not so within `timeout_s`, or a node process exited (the end of its log is in the message).
    """
    deadline = time.monotonic() + timeout_s
    ok = {"green": ("green",), "yellow": ("yellow", "green")}[status]
    while time.monotonic() < deadline:
        for node in cluster.nodes:
            if node.pid is not None and not _alive(node.pid):
                log = node.dir / "logs" / f"{cluster.name}.log"
                tail = "\n".join(log.read_text(errors="replace").splitlines()[-30:]) if log.exists() else ""
                raise NodeError(f"cluster node {node.name} (pid {node.pid}) exited; end of its log:\n{tail}")
        for node in cluster.running():
            h = _get(f"{node.url}/_cluster/health?wait_for_nodes={nodes}&wait_for_status={status}&timeout=2s", timeout=5)
            if (
                isinstance(h, dict)
                and h.get("number_of_nodes") == nodes
                and h.get("status") in ok
                and (not plugins or all(plugins <= installed_plugins(n.url) for n in cluster.running()))
            ):
                return h
            break
        time.sleep(1.0)
    raise NodeError(f"cluster {cluster.name} did not reach {status} with {nodes} nodes within {timeout_s:.0f}s")


def stop_cluster_node(cluster: LocalCluster, index: int, kill: bool = False, grace_s: float = 60.0) -> None:
    """Stop node `index` of `cluster`: SIGTERM (a clean leave) or, with `kill`, SIGKILL (a crash)."""
    node = cluster.nodes[index]
    if node.pid is None:
        return
    pid = node.pid
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL if kill else signal.SIGTERM)
    deadline = time.monotonic() + grace_s
    while Path(f"/proc/{pid}").exists():
        with contextlib.suppress(ChildProcessError):
            if os.waitpid(pid, os.WNOHANG)[0] == pid:  # our child: reaped
                break
        if not _alive(pid):  # a zombie of another parent
            break
        if time.monotonic() > deadline:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
            deadline = time.monotonic() + grace_s
        time.sleep(0.2)
    node.pid = None
    (node.dir / "node.pid").unlink(missing_ok=True)


def stop_leftover_cluster(root: Path) -> list[int]:
    """Stop the nodes an earlier, interrupted run left running from cluster folder `root` (their pid
    files, checked against the process's command line); returns the pids stopped."""
    stopped = []
    for pidfile in sorted(root.glob("node-*/node.pid")):
        try:
            pid = int(pidfile.read_text().split()[0])
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace")
        except (OSError, ValueError, IndexError):
            continue
        if str(pidfile.parent / "config") in cmdline and _alive(pid):
            node = ClusterNode(pidfile.parent.name, 0, 0, pidfile.parent, pid)
            stop_cluster_node(LocalCluster(root.name, root, [node]), 0, grace_s=30.0)
            stopped.append(pid)
    return stopped


def stop_cluster(cluster: LocalCluster, remove_data: bool = True) -> None:
    """Stop every node of `cluster` (SIGTERM, SIGKILL after a grace period) and remove its folder
    (unless `remove_data` is False)."""
    for node in cluster.nodes:
        if node.pid is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(node.pid, signal.SIGTERM)
    for i in range(len(cluster.nodes)):
        stop_cluster_node(cluster, i, grace_s=30.0)
    if remove_data:
        shutil.rmtree(cluster.root, ignore_errors=True)
