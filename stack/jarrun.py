"""Submitting a PyFlink job through the JobManager's REST API instead of a `flink run -py` client JVM.

`flink run -py` starts a JVM (the Flink client) that starts the job's Python program, which plans the job
and hands it to the cluster: on a 2-core machine that JVM costs seconds of CPU next to a starting cluster.
The REST API can run the same program inside the JobManager: POST /jars/<id>/run with Flink's PythonDriver
(the entry class `flink run -py` uses too) and `-py <script> <args>`; the JobManager starts the script with
its own Python (`python.client.executable`, the venv's first on its PATH) and submits the job it plans.

The program runs in the JobManager's environment, not the caller's: the caller's MARKETPULSE_* settings go
along as `--env NAME=VALUE` program arguments (jobs/market_metrics.py applies them before reading its
settings), so a job submitted this way reads the same topic and database as one submitted with `flink run`.
Program arguments are visible to whoever can read the JobManager's log, so a caller with a password in its
environment (MARKETPULSE_*PASSWORD*) is refused here (`can_submit`) and the caller uses `flink run`.
"""

from __future__ import annotations

import json
import os
import re
import urllib.error
import urllib.request
import uuid
from collections.abc import Mapping
from pathlib import Path

from marketpulse.config import Settings
from stack import flink, paths
from stack.errors import StackError

PYTHON_DRIVER = "org.apache.flink.client.python.PythonDriver"
ENV_PREFIX = "MARKETPULSE_"
RUN_TIMEOUT_S = 300  # planning in the JobManager: seconds, a minute on a loaded machine


def python_driver_jar() -> Path:
    """flink-python (PythonDriver and PyFlink's runtime), as `flink run -py` ships it."""
    found = sorted(paths.FLINK_OPT_DIR.glob("flink-python-*.jar"))
    if not found:
        raise StackError(f"flink-python jar not found in {paths.FLINK_OPT_DIR}; run `make setup`")
    return found[-1]


def environment_args(environ: Mapping[str, str]) -> list[str]:
    """The caller's MARKETPULSE_* settings as program arguments: ["--env", "NAME=VALUE", ...]."""
    args = []
    for name in sorted(environ):
        if name.startswith(ENV_PREFIX):
            args += ["--env", f"{name}={environ[name]}"]
    return args


def can_submit(environ: Mapping[str, str]) -> bool:
    """False when a password would travel as a program argument (see the module docstring)."""
    # A *_PASSWORD_FILE names a file (the JobManager reads it on this machine), which is no secret itself.
    return not any(name.startswith(ENV_PREFIX) and "PASSWORD" in name and not name.endswith("_FILE")
                   for name in environ)


def _request(settings: Settings, path: str, data: bytes | None, content_type: str | None,
             timeout: float) -> dict:
    request = urllib.request.Request(settings.flink.rest_url.rstrip("/") + path, data=data, method="POST"
                                     if data is not None else "GET")
    if content_type:
        request.add_header("Content-Type", content_type)
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return json.loads(response.read() or b"{}")
    except urllib.error.HTTPError as err:
        raise StackError(f"Flink REST {path}: {failure(err.read())}") from None
    except (urllib.error.URLError, OSError) as err:
        raise StackError(f"Flink REST API at {settings.flink.rest_url} not reachable ({err})") from None


def failure(body: bytes) -> str:
    """The one line that says why, from a Flink REST error body (its `errors` hold Java stack traces)."""
    try:
        errors = json.loads(body).get("errors", [])
    except ValueError:
        return body.decode(errors="replace")[:300]
    text = "\n".join(str(error) for error in errors)
    causes = re.findall(r"Caused by: ([^\n]+)", text)
    python = re.findall(r"^\s*(\w+(?:Error|Exception): [^\n]+)$", text, re.M)
    return (python or causes or [text.strip().splitlines()[0] if text.strip() else "unknown error"])[-1][:500]


def uploaded_jar_id(settings: Settings, jar: Path) -> str:
    """The id of `jar` on the JobManager, uploading it the first time (uploads last until it restarts)."""
    for entry in _request(settings, "/jars", None, None, 10).get("files", []):
        if entry.get("name") == jar.name:
            return entry["id"]
    boundary = uuid.uuid4().hex
    body = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"jarfile\"; filename=\"{jar.name}\"\r\n"
            f"Content-Type: application/x-java-archive\r\n\r\n").encode() + jar.read_bytes() + \
        f"\r\n--{boundary}--\r\n".encode()
    uploaded = _request(settings, "/jars/upload", body, f"multipart/form-data; boundary={boundary}", 120)
    return Path(uploaded["filename"]).name


def run_python_job(settings: Settings, script: Path, program_args: list[str], savepoint: str | None = None,
                   environ: Mapping[str, str] | None = None) -> str:
    """Runs `script` with `program_args` in the JobManager; returns the job id it submitted."""
    environ = os.environ if environ is None else environ
    if not can_submit(environ):
        raise StackError("a MARKETPULSE_*PASSWORD* variable is set: not sent as a program argument")
    jar_id = uploaded_jar_id(settings, python_driver_jar())
    body = {"entryClass": PYTHON_DRIVER,
            "programArgsList": ["-py", str(script.resolve()), *program_args, *environment_args(environ)]}
    if savepoint:
        body["savepointPath"] = savepoint
    output = jobmanager_output()
    seen = output.stat().st_size if output and output.exists() else 0
    try:
        answer = _request(settings, f"/jars/{jar_id}/run", json.dumps(body).encode(), "application/json",
                          RUN_TIMEOUT_S)
    except StackError as err:
        if "Python process exits" in str(err) and output and output.exists():
            # The program's own traceback went to the JobManager's stdout: say its last line ...
            with output.open("rb") as handle:
                handle.seek(seen)
                printed = handle.read().decode(errors="replace")
            # ... or the program's own message: argparse's, a SystemExit's ("market_metrics: ...").
            said = rf"^((?:[\w.]+(?:Error|Exception|Exit)|{re.escape(script.stem)}): .+)$"
            last = re.findall(said, printed, re.M)
            raise StackError(f"{script.name} failed in the JobManager: "
                             f"{last[-1] if last else 'see its output'} (output: {output})") from None
        raise
    if not answer.get("jobid"):
        raise StackError(f"Flink REST /jars/{jar_id}/run answered without a job id: {answer}")
    return answer["jobid"]


def jobmanager_output() -> Path | None:
    """The JobManager's stdout file, where a program run by PythonDriver prints (and its traceback goes)."""
    found = sorted(flink.LOG_DIR.glob("flink-*-standalonesession-*.out"))
    return found[-1] if found else None
