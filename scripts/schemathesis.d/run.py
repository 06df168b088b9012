#!/usr/bin/env python3
"""Run schemathesis against a real Tacit server's /openapi.json.

Starts the debug `tacit-server` binary on a loopback port of its choosing (`--print-addr`) with a fresh data directory,
checks the served document with openapi-spec-validator, registers two accounts (the one
schemathesis acts as, and a peer with devices and prekeys so that lookups find somebody),
reserves a blob, and runs every operation except two (below) in positive and negative
mode with all of schemathesis's checks (two are turned off for one operation each, with
the reason in the generated schemathesis.toml below). Fails if schemathesis fails, if it made fewer than
MIN_CASES cases, or if the server logged a panic.

`DELETE /v1/accounts/me` would delete the credential the main run uses, so it has a short
run of its own with another account. Left out: `GET /v1/ws` (a WebSocket upgrade, not a
request/response operation; the socket tests cover it).
"""

import base64
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
HERE = os.path.dirname(os.path.abspath(__file__))
SERVER = os.path.join(
    os.environ.get("CARGO_TARGET_DIR", os.path.join(ROOT, "target")), "debug", "tacit-server"
)
SENDER = "st-probe"
PEER = "st-peer"
MIN_CASES = int(os.environ.get("TACIT_ST_MIN_CASES", "2000"))
MAX_EXAMPLES = os.environ.get("TACIT_ST_MAX_EXAMPLES", "100")
TIMEOUT_SECS = int(os.environ.get("TACIT_ST_TIMEOUT_SECS", "900"))

CONFIG = """
open_registration = true
plain_http = true
[log]
level = "warn"
[rate_limits]
# schemathesis sends thousands of requests from one address: failed authentication from
# it (the ignored-auth probes) must not lock the run's own credential out.
auth_failures_per_minute_per_source = 1000000
[blobs]
# Reservations of random sizes up to the largest blob: the account quota is a stateful
# limit (tested by the server's own suites) that would turn later reservations into 507.
quota_bytes_per_account = 2305843009213693952
# SCIM on, so that its routes answer as they do in use: the discovery documents 200, and
# every /Users operation 401 (the run's bearer is a device credential, not the SCIM
# token), which is also what a request without the header must get. Without [scim] they
# would be 404 with or without the header, which schemathesis's missing-header check
# (ST203) counts as a failure. The SCIM operations themselves are tested with Entra ID's
# and Okta's requests by tests/tests/scim.rs.
[scim]
bearer_token_file = "SCIM_TOKEN_FILE"
"""


def b64(n):
    return base64.b64encode(os.urandom(n)).decode()


def signed(i, n):
    return {"id": i, "public_key": b64(n), "signature": b64(64)}


def call(base, method, path, body=None, credential=None):
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(base + path, data=data, method=method)
    if data is not None:
        req.add_header("content-type", "application/json")
    if credential:
        req.add_header("authorization", "Bearer " + credential)
    with urllib.request.urlopen(req, timeout=10) as r:
        text = r.read()
        return json.loads(text) if text else None


def register(base, username, prekeys):
    keys = {
        "identity_key": b64(32),
        "signed_prekey": signed(1, 32),
        "kem_last_resort_prekey": signed(2, 1568),
        "one_time_prekeys": [signed(100 + i, 32) for i in range(prekeys)],
        "one_time_kem_prekeys": [signed(500 + i, 1568) for i in range(prekeys)],
    }
    return call(base, "POST", "/v1/accounts", {"username": username, "keys": keys})["credential"]


def main():
    if not os.path.exists(SERVER):
        sys.exit(f"{SERVER} not found: run `cargo build -p tacit-server` first")
    work = tempfile.mkdtemp(prefix="tacit-st-")
    with open(os.path.join(work, "tacit.toml"), "w") as f:
        f.write(CONFIG.replace("SCIM_TOKEN_FILE", os.path.join(work, "scim.token")))
    with open(os.path.join(work, "scim.token"), "w") as f:
        f.write(base64.b16encode(os.urandom(32)).decode() + "\n")
    log = open(os.path.join(work, "server.log"), "w+")
    # Port 0 and --print-addr: the server says where it listens on one stdout line.
    server = subprocess.Popen(
        [
            SERVER,
            "--config",
            os.path.join(work, "tacit.toml"),
            "--listen",
            "127.0.0.1:0",
            "--data-dir",
            os.path.join(work, "data"),
            "--print-addr",
        ],
        stdout=subprocess.PIPE,
        stderr=log,
        text=True,
    )
    try:
        line = server.stdout.readline()
        match = re.fullmatch(r"listening addr=(\S+)\n", line)
        if not match:
            log.seek(0)
            sys.exit(f"the server did not say where it listens ({line!r}):\n" + log.read())
        base = f"http://{match.group(1)}"
        deadline = time.time() + 30
        while True:
            try:
                urllib.request.urlopen(base + "/readyz", timeout=2).read()
                break
            except (urllib.error.URLError, ConnectionError):
                if server.poll() is not None or time.time() > deadline:
                    log.seek(0)
                    sys.exit("the server did not become ready:\n" + log.read())
                time.sleep(0.2)

        doc_path = os.path.join(work, "openapi.json")
        with urllib.request.urlopen(base + "/openapi.json") as r, open(doc_path, "wb") as f:
            f.write(r.read())
        subprocess.run(["openapi-spec-validator", doc_path], check=True)

        credential = register(base, SENDER, 0)
        register(base, PEER, 20)
        # A second device for `DELETE /v1/devices/{device_id}` to remove: left to itself,
        # schemathesis would remove device 1, the one whose credential the run uses.
        spare = call(
            base,
            "POST",
            "/v1/devices",
            {
                "keys": {
                    "identity_key": b64(32),
                    "signed_prekey": signed(1, 32),
                    "kem_last_resort_prekey": signed(2, 1568),
                }
            },
            credential,
        )["device_id"]
        with open(os.path.join(work, "schemathesis.toml"), "w") as f:
            f.write(
                "[parameters]\n"
                f'username = "{PEER}"\n'
                f"device_id = {spare}\n"
                "\n"
                "[checks.negative_data_rejection]\n"
                "# 413 (too large) and 414 are rejections too.\n"
                'expected-statuses = ["400", "401", "403", "404", "405", "406", "409", "413", "414", "415", "422", "428", "429", "431"]\n'
                "\n"
                "# A blob upload's body is raw bytes: every body is one, so there is no\n"
                "# negative body to refuse (its offset header and path still are checked).\n"
                "[[operations]]\n"
                'include-operation-id = "uploadBlob"\n'
                "checks.negative_data_rejection.enabled = false\n"
                "# A body longer than the bytes the reserved blob has left is 413 by design:\n"
                "# the schema cannot state a reservation's size.\n"
                'checks.positive_data_acceptance.expected-statuses = ["2xx", "3xx", "401", "403", "404", "409", "413", "429", "5xx"]\n'
                "\n"
                "# A reserved blob can be downloaded only once its last byte is uploaded\n"
                "# (until then GET is 404 by design), so `POST /v1/blobs` creates nothing GET\n"
                "# can find yet.\n"
                "[[operations]]\n"
                'include-operation-id = "downloadBlob"\n'
                "checks.ensure_resource_availability.enabled = false\n"
            )

        env = dict(os.environ, SCHEMATHESIS_HOOKS="hooks", TACIT_ST_SENDER=SENDER)
        env["PYTHONPATH"] = HERE + os.pathsep + env.get("PYTHONPATH", "")
        # The main run acts as SENDER and leaves out the operation that would end its
        # credential; a second, short run deletes an account of its own.
        leaver = register(base, "st-leaver", 0)
        runs = [
            ("every operation but deleteAccount", credential, ["--exclude-operation-id", "deleteAccount"], MIN_CASES),
            # No stateful phase: no link leads from or to this one operation.
            (
                "deleteAccount",
                leaver,
                ["--include-operation-id", "deleteAccount", "--phases", "examples,coverage,fuzzing"],
                1,
            ),
        ]
        total = 0
        for label, acting, selection, min_cases in runs:
            cmd = [
                "st",
                "--config-file",
                os.path.join(work, "schemathesis.toml"),
                "run",
                base + "/openapi.json",
                "--header",
                f"Authorization: Bearer {acting}",
                *selection,
                "--exclude-operation-id",
                "socket",
                "--max-examples",
                MAX_EXAMPLES,
                # One worker: CPython 3.11's ast.parse, which hypothesis calls to describe
                # strategies, is not safe from two threads at once ("AST constructor
                # recursion depth mismatch").
                "--workers",
                "1",
                "--request-timeout",
                "20",
                "--output-truncate",
                "true",
                "--no-color",
            ] + sys.argv[1:]
            shown = " ".join(c if "Bearer" not in c else "Authorization: Bearer …" for c in cmd)
            print(f"running ({label}):", shown, flush=True)
            try:
                run = subprocess.run(
                    cmd, env=env, cwd=work, capture_output=True, text=True, timeout=TIMEOUT_SECS
                )
            except subprocess.TimeoutExpired:
                sys.exit(f"schemathesis ({label}) did not finish within {TIMEOUT_SECS} s")
            out = run.stdout + run.stderr
            print(out)
            cases = re.search(r"(\d+) generated", out)
            log.seek(0)
            server_log = log.read()
            if "panicked" in server_log:
                print(server_log)
                sys.exit("the server panicked during the run")
            if run.returncode != 0:
                sys.exit(f"schemathesis ({label}) failed (exit {run.returncode})")
            if not cases or int(cases.group(1)) < min_cases:
                found = cases.group(1) if cases else "no"
                sys.exit(
                    f"schemathesis ({label}) made {found} test cases; at least {min_cases} are required"
                )
            total += int(cases.group(1))
        print(f"schemathesis: {total} cases, no failure")
    finally:
        server.send_signal(signal.SIGTERM)
        try:
            server.wait(timeout=15)
        except subprocess.TimeoutExpired:
            server.kill()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
