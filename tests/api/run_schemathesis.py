"""schemathesis against a real `gatehouse serve`, driven by the server's own /openapi.json.

Builds nothing: it starts the binary given with --binary (make test passes the one `swift
test` just built) on an ephemeral loopback port with a fresh SQLite database and an admin
token (a fresh database on GATEHOUSE_TEST_POSTGRES's server when that is set), then runs
schemathesis with a bounded number of examples per operation and two checks:
no 5xx answer, and every answer matches the schema the document gives for it. A server that
crashes or logs a fatal error fails the run too.

Prints `api: N passed, 0 failed` (N operations tested; `0 passed, 1 failed` when anything went
wrong) for make test's closing summary.

    .venv/bin/python tests/api/run_schemathesis.py --binary .build/debug/gatehouse [--examples 25]
"""
import argparse
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
VENV_BIN = Path(sys.executable).parent

# Operations that are not request/response: the SSE stream never ends by design. Long polls
# (`…/wait`) are kept, their `timeout` pinned short by hooks.py.
EXCLUDE_PATH_REGEX = r"/v1/events/stream$"


def start_server(binary: str, workdir: str, db: str) -> tuple[subprocess.Popen, str]:
    env = dict(os.environ)
    env.update({"GATEHOUSE_LOG_LEVEL": "warning", "SWIFT_BACKTRACE": "enable=no"})
    for name in ("GATEHOUSE_CONFIG", "GATEHOUSE_TEMPLATES", "GATEHOUSE_AUTO_DECIDE", "GATEHOUSE_ADDRESS", "GATEHOUSE_DB"):
        env.pop(name, None)
    stderr = open(os.path.join(workdir, "server.stderr"), "wb")
    server = subprocess.Popen(
        [binary, "serve", "--address", "127.0.0.1:0", "--db", db],
        cwd=workdir, env=env, stdout=subprocess.PIPE, stderr=stderr, stdin=subprocess.DEVNULL)
    line = server.stdout.readline().decode()
    if "http://" not in line:
        server.kill()
        raise SystemExit(f"gatehouse serve did not start: {line}{read(workdir, 'server.stderr')}")
    return server, line[line.index("http://"):].split()[0]


def read(workdir: str, name: str) -> str:
    try:
        return Path(workdir, name).read_text(errors="replace")
    except OSError:
        return ""


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--binary", required=True, help="the built gatehouse binary")
    parser.add_argument("--examples", type=int, default=int(os.environ.get("SCHEMATHESIS_EXAMPLES", "25")),
                        help="examples per operation and phase (default 25, env SCHEMATHESIS_EXAMPLES)")
    parser.add_argument("--seed", type=int, default=None, help="schemathesis seed (default: random, printed)")
    args = parser.parse_args()
    args.binary = os.path.abspath(args.binary)  # the server runs in a temp dir
    if not os.access(args.binary, os.X_OK):
        raise SystemExit(f"no gatehouse binary at {args.binary}: build first (make test does)")

    with tempfile.TemporaryDirectory(prefix="gatehouse-api-") as workdir:
        db = os.path.join(workdir, "gatehouse.db")
        postgres = os.environ.get("GATEHOUSE_TEST_POSTGRES")
        if postgres:
            db = subprocess.run([str(HERE.parent / "postgres" / "cluster.sh"), "fresh", postgres],
                                check=True, capture_output=True, text=True).stdout.strip()
        token = subprocess.run(
            [args.binary, "token", "create", "--name", "schemathesis", "--scopes", "admin", "--db", db],
            cwd=workdir, check=True, capture_output=True, text=True).stdout.strip()
        server, url = start_server(args.binary, workdir, db)
        print(f"api: gatehouse serve at {url} on {'PostgreSQL' if postgres else 'SQLite'}, {args.examples} examples per operation", flush=True)
        started = time.monotonic()
        command = [
            str(VENV_BIN / "schemathesis"), "run", f"{url}/openapi.json", "--url", url,
            "--checks", "not_a_server_error,response_schema_conformance",
            "--max-examples", str(args.examples),
            "--header", f"Authorization: Bearer {token}",
            "--exclude-path-regex", EXCLUDE_PATH_REGEX,
            "--request-timeout", "20",
            # One worker: hypothesis describes strategies by parsing source with `ast`, and on
            # Python 3.11 two threads doing that at once fail with "AST constructor recursion
            # depth mismatch" (seen in CI), an error of the tool, not of the server.
            "--workers", "1",
            "--no-color",
            "--suppress-health-check", "too_slow,filter_too_much",
            "--generation-database", "none",
        ]
        if args.seed is not None:
            command += ["--seed", str(args.seed)]
        env = dict(os.environ, SCHEMATHESIS_HOOKS="hooks", PYTHONPATH=str(HERE))
        result = subprocess.run(command, env=env, cwd=workdir, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        print(result.stdout, flush=True)
        tested = re.search(r"Tested: (\d+)", result.stdout)
        operations = int(tested.group(1)) if tested else 0
        alive = server.poll() is None
        server.kill()
        server.wait()
        log = read(workdir, "server.stderr")
        problems = []
        if result.returncode != 0:
            problems.append(f"schemathesis exited {result.returncode}")
        if operations == 0:
            problems.append("schemathesis tested no operation")
        if not alive:
            problems.append(f"the server died during the run (exit {server.returncode})")
        if "Fatal error" in log or "AddressSanitizer" in log:
            problems.append("the server logged a fatal error")
        if problems:
            print("api: " + "; ".join(problems), flush=True)
            if log.strip():
                print("--- server stderr (last 60 lines) ---\n" + "\n".join(log.splitlines()[-60:]), flush=True)
        print(f"api: schemathesis took {time.monotonic() - started:.0f} s", flush=True)
        # One test per operation schemathesis exercised; any problem fails the run as one.
        print(f"api: {0 if problems else operations} passed, {1 if problems else 0} failed", flush=True)
        return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
