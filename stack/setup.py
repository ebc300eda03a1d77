"""One-time (and idempotent) machine set-up: JVM jars from Maven Central, PostgreSQL, Prometheus and
Chromium from Debian's packages. A second run only checks stamps and takes well under a second."""

from __future__ import annotations

import glob
import hashlib
import os
import shutil
import subprocess
from pathlib import Path

from stack import paths
from stack.errors import StackError
from stack.log import say
from stack.proc import require_java


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()[:16]


def _run(cmd: list[str], what: str, log_file: Path) -> None:
    log_file.parent.mkdir(parents=True, exist_ok=True)
    with open(log_file, "wb") as log:
        result = subprocess.run(cmd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    if result.returncode != 0:
        tail = log_file.read_text(errors="replace").strip().splitlines()[-5:]
        raise StackError(f"{what} failed (exit {result.returncode}); see {log_file}\n  " + "\n  ".join(tail))


def _apt_install(*packages: str) -> None:
    if os.geteuid() != 0:
        names = " ".join(packages)
        raise StackError(f"missing Debian packages {names}: run `sudo apt-get install {names}`")
    say(f"installing Debian packages: {' '.join(packages)} (apt-get, about a minute)")
    log = paths.STACK_DIR / "setup" / "apt.log"
    env_cmd = ["env", "DEBIAN_FRONTEND=noninteractive"]
    _run(env_cmd + ["apt-get", "update", "-q"], "apt-get update", log)
    _run(env_cmd + ["apt-get", "install", "-y", "-q", "--no-install-recommends", *packages],
         f"apt-get install {' '.join(packages)}", log)


def ensure_jars() -> None:
    """Resolves deps/pom.xml into .deps/ when the pom changed since the last resolve."""
    stamp = paths.DEPS_DIR / ".pom.sha"
    want = _sha(paths.POM)
    if stamp.exists() and stamp.read_text() == want and any(paths.KAFKA_JARS.glob("kafka_*.jar")):
        return
    if not shutil.which("mvn"):
        _apt_install("maven")
    say("resolving JVM artifacts from Maven Central (deps/pom.xml): Flink connectors, Kafka broker")
    log = paths.STACK_DIR / "setup" / "maven.log"
    for profile, target in (("flink", paths.FLINK_CONNECTOR_JARS), ("kafka", paths.KAFKA_JARS)):
        shutil.rmtree(target, ignore_errors=True)
        _run(["mvn", "-B", "-q", "-f", str(paths.POM), "-P", profile, "dependency:copy-dependencies",
              f"-DoutputDirectory={target}", "-DincludeScope=runtime"],
             f"Maven resolve of the '{profile}' jars", log)
    stamp.write_text(want)
    jars = len(list(paths.FLINK_CONNECTOR_JARS.glob("*.jar"))) + len(list(paths.KAFKA_JARS.glob("*.jar")))
    say(f"  {jars} jars in {paths.shown(paths.DEPS_DIR)}/")


EXT_SOURCES = paths.REPO / "flink-ext" / "src" / "main"
EXT_JAR = paths.DEPS_DIR / "flink-ext" / "marketpulse-flink-ext.jar"


def build_flink_ext() -> None:
    """flink-ext/ compiled with javac against the Flink and connector jars into .deps/flink-ext when its
    sources changed: the 'marketpulse-jdbc' sink (Flink's JDBC sink whose close() cannot kill a TaskManager)
    and the TaskManager's Java agent (Premain-Class) with its stand-in for PyFlink's PythonSharedResources.
    That one (flink-ext/src/patch/) is compiled against flink-python too and stored under
    META-INF/marketpulse-patches/, never as a class of lib/ (see io.marketpulse.flink.agent)."""
    patch_sources = EXT_SOURCES.parent / "patch"
    files = sorted(path for folder in (EXT_SOURCES, patch_sources) if folder.exists()
                   for path in folder.rglob("*") if path.is_file())
    stamp = EXT_JAR.with_suffix(".sha")
    digests = b"".join(_sha(path).encode() + path.name.encode() for path in files)
    want = hashlib.sha256(digests).hexdigest()[:16]
    if EXT_JAR.exists() and stamp.exists() and stamp.read_text() == want:
        return
    javac = shutil.which("javac")
    if javac is None:
        raise StackError("javac not found: install a JDK (sudo apt-get install openjdk-17-jdk-headless)")
    say("compiling flink-ext (the marketpulse-jdbc sink, the TaskManager agent) with javac")
    classes = EXT_JAR.parent / "classes"
    patches = EXT_JAR.parent / "patch-classes"
    for folder in (classes, patches):
        shutil.rmtree(folder, ignore_errors=True)
        folder.mkdir(parents=True)
    jars = [jar for folder in (paths.pyflink_home() / "lib", paths.FLINK_CONNECTOR_JARS)
            for jar in sorted(folder.glob("*.jar"))]
    main_files = [path for path in files if EXT_SOURCES in path.parents]
    patch_files = [path for path in files if patch_sources in path.parents and path.suffix == ".java"]
    _run([javac, "--release", "17", "-nowarn", "-d", str(classes), "-cp", ":".join(map(str, jars)),
          *(str(path) for path in main_files if path.suffix == ".java")],
         "javac of flink-ext", paths.STACK_DIR / "setup" / "javac.log")
    if patch_files:
        python_jars = sorted((paths.pyflink_home() / "opt").glob("flink-python*.jar"))
        _run([javac, "--release", "17", "-nowarn", "-d", str(patches),
              "-cp", ":".join(map(str, python_jars + jars)), *(str(path) for path in patch_files)],
             "javac of flink-ext/src/patch", paths.STACK_DIR / "setup" / "javac-patch.log")
    import zipfile

    # Written aside and renamed over the old jar: a running Flink JVM keeps reading the old file (its inode)
    # instead of finding a half-written or changed jar under classes it already indexed.
    building = EXT_JAR.with_suffix(".jar.tmp")
    with zipfile.ZipFile(building, "w") as jar:
        jar.writestr("META-INF/MANIFEST.MF", "Manifest-Version: 1.0\n"
                     "Premain-Class: io.marketpulse.flink.agent.PythonCloseGuardAgent\n\n")
        for path in sorted(classes.rglob("*.class")):
            jar.write(path, path.relative_to(classes).as_posix())
        for path in sorted(patches.rglob("*.class")):
            jar.write(path, "META-INF/marketpulse-patches/" + path.relative_to(patches).as_posix())
        for path in main_files:
            if "resources" in path.relative_to(EXT_SOURCES).parts[:1]:
                jar.write(path, path.relative_to(EXT_SOURCES / "resources").as_posix())
    os.replace(building, EXT_JAR)
    stamp.write_text(want)


def assemble_flink_dirs() -> None:
    """FLINK_LIB_DIR / FLINK_OPT_DIR for bin/config.sh: pyflink's own jars plus ours, as symlinks, so
    site-packages is never written to. Rebuilt each time: cheap, and follows a re-created venv."""
    home = paths.pyflink_home()
    for target in (paths.FLINK_LIB_DIR, paths.FLINK_OPT_DIR, paths.FLINK_PLUGINS_DIR):
        shutil.rmtree(target, ignore_errors=True)
        target.mkdir(parents=True)
    for jar in sorted((home / "lib").glob("*.jar")):
        (paths.FLINK_LIB_DIR / jar.name).symlink_to(jar)
    for jar in sorted((home / "opt").glob("*.jar")):
        (paths.FLINK_OPT_DIR / jar.name).symlink_to(jar)
    for jar in sorted(paths.FLINK_CONNECTOR_JARS.glob("*.jar")):
        # The SQL gateway belongs in opt/ (sql-client.sh looks there), the metrics reporter and a file system
        # (flink-s3-fs-presto, README "Running on a real cluster") in a plugin folder of its own (its class
        # loader); connectors and the driver in lib/.
        if jar.name.startswith(("flink-metrics-", "flink-s3-fs-")):
            folder = paths.FLINK_PLUGINS_DIR / jar.name.removeprefix("flink-").rsplit("-", 1)[0]
            folder.mkdir(exist_ok=True)
        else:
            folder = paths.FLINK_OPT_DIR if jar.name.startswith("flink-sql-gateway") else paths.FLINK_LIB_DIR
        (folder / jar.name).symlink_to(jar.resolve())
    if EXT_JAR.exists():
        (paths.FLINK_LIB_DIR / EXT_JAR.name).symlink_to(EXT_JAR)


def postgres_bin_dir() -> Path | None:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(Path(p).parts[-3]))
    return Path(found[-1]).parent if found else None


def ensure_postgres() -> Path:
    if postgres_bin_dir() is None:
        _apt_install("postgresql")
    bin_dir = postgres_bin_dir()
    if bin_dir is None:
        raise StackError("PostgreSQL server binaries not found under /usr/lib/postgresql/*/bin after install")
    return bin_dir


def ensure_prometheus() -> None:
    """Debian's Prometheus server (stack/prometheus.py runs it; the package's own service is not started)."""
    if not shutil.which("prometheus") and not Path("/usr/bin/prometheus").exists():
        _apt_install("prometheus")


def ensure_browser() -> None:
    """Debian's Chromium for the browser tests (Playwright drives it; it never downloads a browser)."""
    if not Path("/usr/bin/chromium").exists():
        _apt_install("chromium")


def setup(browser: bool = False) -> None:
    require_java()
    ensure_jars()
    build_flink_ext()
    assemble_flink_dirs()
    ensure_postgres()
    ensure_prometheus()
    if browser:
        ensure_browser()
