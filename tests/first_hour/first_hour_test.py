#!/usr/bin/env python3
"""The first hour of an operator with certcast (issue 14), against the real binaries.

Usage: first_hour_test.py BINARY_DIR

Runs BINARY_DIR/server/certcast-server and BINARY_DIR/client/certcast-client and checks:
  - help: `--help` and `-h` exit 0 and list every flag; the flags --help lists and the README's
    flag tables name the same flags, in both directions, so neither can drift;
  - version: `--version` prints "certcast-server 0.1.0 (commit ...)" with the CMake version;
  - a duration without a unit is refused with a message that asks for a unit, with an example;
  - credential files are checked at start (missing, empty, not PEM), naming the file; a client
    without credentials meeting a TLS server that requires an identity says so;
  - missing parent directories of --state-dir and --output-dir are created (leaf 0700), and a
    parent that cannot be created is a clear start-up error;
  - JSON logs: a TLS server and clients with --log-format=json, a failed TLS handshake (gRPC's own
    error line), an unauthenticated client whose certificate name holds a newline and a forged
    audit line, and one with a 60,000-character name: every stderr line of every process parses
    as JSON, with the expected fields; the same forged name in text format starts no line.

Needs Python 3 and the openssl CLI. Ends with "N passed, N failed"; exits 1 when a check failed.
"""

import json
import os
import re
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
README = os.path.join(ROOT, "README.md")
DEADLINE_S = 30
TOKEN = "first-hour-static-token-0123456789abcdef"
FORGED_TIME = "2026-12-03T00:00:00.000000Z"
FORGED = (f"web\n{FORGED_TIME} I audit identity=spiffe://cluster.local/ns/tenant-a/sa/admin "
          "method=Subscribe certificate=web decision=allowed")
FORGED_JSON = ('web\n{"time":"' + FORGED_TIME + '","level":"info","msg":"audit",'
               '"decision":"allowed"}')


class Checks:
    def __init__(self):
        self.passed = 0
        self.failed = 0

    def check(self, name, problems):
        if problems:
            self.failed += 1
            print(f"FAIL {name}")
            for problem in problems:
                print(f"  {problem}")
        else:
            self.passed += 1
            print(f"ok   {name}")


def run(argv, timeout=60):
    return subprocess.run(argv, capture_output=True, text=True, timeout=timeout)


class Process:
    """A binary running in its own session, stderr to a file."""

    def __init__(self, name, argv, log_path):
        self.name = name
        self.log_path = log_path
        self.log = open(log_path, "wb")
        self.proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=self.log,
                                     stdin=subprocess.DEVNULL, start_new_session=True)

    def text(self):
        with open(self.log_path, encoding="utf-8", errors="replace") as f:
            return f.read()

    def wait_for(self, pattern, deadline_s=DEADLINE_S):
        """The first match of regex `pattern` in the log; None if the process exits or time runs
        out first."""
        deadline = time.monotonic() + deadline_s
        while True:
            match = re.search(pattern, self.text())
            if match:
                return match
            if self.proc.poll() is not None or time.monotonic() > deadline:
                return None
            time.sleep(0.05)

    def stop(self):
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        self.log.close()


def openssl(*args):
    result = run(["openssl", *args])
    if result.returncode != 0:
        raise RuntimeError(f"openssl {args[0]} failed: {result.stderr.strip()}")


def mint(tmp):
    """A CA, a serving certificate for 127.0.0.1 signed by it, and a kubelet-style source
    directory for certificate "web". Returns a dict of paths."""
    paths = {name: os.path.join(tmp, name) for name in ("ca.crt", "ca.key", "server.crt",
                                                        "server.key", "server.csr", "source")}
    openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
            "-days", "2", "-subj", "/CN=first-hour CA", "-keyout", paths["ca.key"], "-out",
            paths["ca.crt"])
    openssl("req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-subj",
            "/CN=127.0.0.1", "-keyout", paths["server.key"], "-out", paths["server.csr"])
    ext = os.path.join(tmp, "server.ext")
    with open(ext, "w") as f:
        f.write("subjectAltName=IP:127.0.0.1,DNS:localhost\n")
    openssl("x509", "-req", "-in", paths["server.csr"], "-CA", paths["ca.crt"], "-CAkey",
            paths["ca.key"], "-CAcreateserial", "-days", "2", "-extfile", ext, "-out",
            paths["server.crt"])
    payload = os.path.join(paths["source"], "..2026_01_01_00_00_00.000000001")
    os.makedirs(payload)
    openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
            "-days", "30", "-subj", "/CN=web.certcast.test", "-addext",
            "subjectAltName=DNS:web.certcast.test", "-keyout", os.path.join(payload, "tls.key"),
            "-out", os.path.join(payload, "tls.crt"))
    os.symlink(os.path.basename(payload), os.path.join(paths["source"], "..data"))
    for name in ("tls.crt", "tls.key"):
        os.symlink(f"..data/{name}", os.path.join(paths["source"], name))
    import hashlib
    paths["token"] = os.path.join(tmp, "token")
    with open(paths["token"], "w") as f:
        f.write(TOKEN)
    os.chmod(paths["token"], 0o600)
    paths["token-map"] = os.path.join(tmp, "token-map.yaml")
    with open(paths["token-map"], "w") as f:
        f.write("tokens:\n  - sha256: %s\n    namespace: tenant-a\n    name: host-1\n"
                % hashlib.sha256(TOKEN.encode()).hexdigest())
    paths["policy"] = os.path.join(tmp, "policy.yaml")
    with open(paths["policy"], "w") as f:
        f.write("certificates:\n  web:\n    namespaces: [tenant-a]\n")
    return paths


# ---------------------------------------------------------------------------------------------
# --help, -h and the README's flag tables

def readme_flags(heading):
    """Flags named in the first column of the table under `## heading`."""
    with open(README, encoding="utf-8") as f:
        text = f.read()
    start = text.index(f"\n## {heading}\n")
    end = text.find("\n## ", start + 1)
    section = text[start:end if end != -1 else len(text)]
    flags = set()
    for line in section.splitlines():
        if line.startswith("| `--"):
            first_cell = line.split("|")[1]
            flags.update(re.findall(r"`--([a-z0-9-]+)", first_cell))
    return flags


def help_flags(text):
    return set(re.findall(r"^  --([a-z0-9-]+)", text, re.MULTILINE))


def check_help(binary, heading):
    problems = []
    outputs = {}
    for argv in (["--help"], ["-h"], ["--listen=127.0.0.1:0", "-h"]):
        result = run([binary, *argv])
        if result.returncode != 0:
            problems.append(f"{' '.join(argv)}: exit {result.returncode}, stderr {result.stderr!r}")
        outputs[" ".join(argv)] = result.stdout
    text = outputs["--help"]
    if outputs["-h"] != text:
        problems.append("-h prints something else than --help")
    listed = help_flags(text)
    documented = readme_flags(heading)
    if not documented:
        problems.append(f"README has no flag table under '## {heading}'")
    for flag in sorted(documented - listed):
        problems.append(f"README documents --{flag}, which --help does not list (not defined?)")
    for flag in sorted(listed - documented):
        problems.append(f"--help lists --{flag}, which the README table does not document")
    if "Other flags:" in text:
        problems.append("--help has flags in no group ('Other flags:')")
    for leak in ("/work/", ".cc", "absl", "helpshort"):
        if leak in text:
            problems.append(f"--help mentions {leak!r} (abseil internals or build paths)")
    if not re.search(r"^\S.*:$", text, re.MULTILINE):
        problems.append("--help has no group headings")
    return problems, text


def check_help_details(server_help):
    problems = []
    if not re.search(r"--heartbeat-interval=DURATION\s+\(default: 30s\)", server_help):
        problems.append("--help shows no type and default for --heartbeat-interval")
    if "Durations take a unit" not in server_help:
        problems.append("--help does not say that durations take a unit")
    return problems


# ---------------------------------------------------------------------------------------------
# --version

def cmake_version():
    with open(os.path.join(ROOT, "CMakeLists.txt"), encoding="utf-8") as f:
        return re.search(r"project\(certcast VERSION ([0-9.]+)", f.read()).group(1)


def check_version(binary, program):
    result = run([binary, "--version"])
    problems = []
    if result.returncode != 0:
        problems.append(f"exit {result.returncode}")
    pattern = rf"^{program} {re.escape(cmake_version())} \(commit ([0-9a-f]{{7,}}(-dirty)?|unknown)\)$"
    if not re.match(pattern, result.stdout.strip()):
        problems.append(f"--version printed {result.stdout!r}, expected /{pattern}/")
    if "Debug build" in result.stdout:
        problems.append("--version still prints abseil's build note")
    return problems


# ---------------------------------------------------------------------------------------------
# Start-up errors

def expect_startup_error(argv, needles, name):
    """Runs argv, which must fail at once (exit 2) with every needle in stderr."""
    try:
        result = run(argv, timeout=20)
    except subprocess.TimeoutExpired:
        return [f"{name}: still running after 20 s (the error is not caught at start)"]
    problems = []
    if result.returncode != 2:
        problems.append(f"{name}: exit {result.returncode}, expected 2; stderr {result.stderr!r}")
    for needle in needles:
        if needle not in result.stderr:
            problems.append(f"{name}: stderr {result.stderr.strip()!r} does not mention {needle!r}")
    return problems


def check_durations(server, client, tmp):
    problems = []
    for argv, flag in (([server, "--insecure", "--heartbeat-interval=5"], "heartbeat-interval"),
                       ([server, "--insecure", "--hello_timeout", "10"], "hello-timeout")):
        problems += expect_startup_error(argv, [f"--{flag}=", "needs a unit", "s"], flag)
    # With --log-format=json the start-up error is a JSON line too.
    result = run([server, "--log-format=json", "--insecure", "--heartbeat-interval=5"])
    try:
        record = json.loads(result.stderr.strip())
        if "needs a unit" not in record.get("msg", "") or result.returncode != 2:
            problems.append(f"json start-up error: {record}, exit {result.returncode}")
    except ValueError:
        problems.append(f"with --log-format=json the start-up error is not JSON: "
                        f"{result.stderr!r}")
    problems += expect_startup_error([server, "--insecure", "--shutdown-grace=soon"],
                                     ["--shutdown-grace=soon", "not a duration", "30s"],
                                     "shutdown-grace=soon")
    return problems


def client_argv(client, tmp, *extra):
    return [client, "--server=127.0.0.1:1", "--namespace=tenant-a", "--certificate=web",
            f"--output-dir={tmp}/out", f"--state-dir={tmp}/client-state", *extra]


def check_credential_files(server, client, paths, tmp):
    problems = []
    empty = os.path.join(tmp, "empty.pem")
    open(empty, "w").close()
    garbage = os.path.join(tmp, "garbage.pem")
    with open(garbage, "w") as f:
        f.write("this is not a certificate\n")
    missing = os.path.join(tmp, "missing.pem")
    for bad in (missing, empty, garbage):
        problems += expect_startup_error(client_argv(client, tmp, f"--ca={bad}"),
                                         ["--ca", bad], f"client --ca={os.path.basename(bad)}")
        problems += expect_startup_error(
            client_argv(client, tmp, f"--ca={paths['ca.crt']}", f"--tls-cert={bad}",
                        f"--tls-key={paths['server.key']}"),
            ["--tls-cert", bad], f"client --tls-cert={os.path.basename(bad)}")
        problems += expect_startup_error(
            client_argv(client, tmp, f"--ca={paths['ca.crt']}", f"--tls-cert={paths['server.crt']}",
                        f"--tls-key={bad}"),
            ["--tls-key", bad], f"client --tls-key={os.path.basename(bad)}")
        problems += expect_startup_error(
            [server, f"--tls-cert={bad}", f"--tls-key={paths['server.key']}",
             "--listen=127.0.0.1:0", f"--state-dir={tmp}/server-state-bad",
             f"--certificate=web={paths['source']}"],
            ["--tls-cert", bad], f"server --tls-cert={os.path.basename(bad)}")
        problems += expect_startup_error(
            [server, f"--tls-cert={paths['server.crt']}", f"--tls-key={paths['server.key']}",
             f"--client-ca={bad}", "--trust-domain=cluster.local", "--listen=127.0.0.1:0",
             f"--state-dir={tmp}/server-state-bad", f"--certificate=web={paths['source']}"],
            ["--client-ca", bad], f"server --client-ca={os.path.basename(bad)}")
    for bad in (missing, empty):
        problems += expect_startup_error(
            client_argv(client, tmp, f"--ca={paths['ca.crt']}", f"--token-file={bad}"),
            ["--token-file", bad], f"client --token-file={os.path.basename(bad)}")
    # A key that does not belong to the certificate.
    problems += expect_startup_error(
        client_argv(client, tmp, f"--ca={paths['ca.crt']}", f"--tls-cert={paths['server.crt']}",
                    f"--tls-key={paths['ca.key']}"),
        ["--tls-key", "does not match"], "client key of another certificate")
    return problems


# ---------------------------------------------------------------------------------------------
# Servers and clients that run

def start_server(server, paths, tmp, name, *extra):
    process = Process(name, [
        server, "--listen=127.0.0.1:0", f"--tls-cert={paths['server.crt']}",
        f"--tls-key={paths['server.key']}", f"--client-ca={paths['ca.crt']}",
        "--trust-domain=cluster.local", f"--token-map={paths['token-map']}", f"--policy={paths['policy']}",
        f"--certificate=web={paths['source']}", *extra], os.path.join(tmp, f"{name}.log"))
    match = process.wait_for(r"listening on port[^0-9]*(\d+)")
    if match is None:
        process.stop()
        raise RuntimeError(f"{name} did not start:\n{process.text()[-3000:]}")
    return process, int(match.group(1))


def check_missing_parents(server, client, paths, tmp):
    problems = []
    server_state = os.path.join(tmp, "deep", "var", "lib", "certcast")
    process, port = start_server(server, paths, tmp, "server-parents",
                                 f"--state-dir={server_state}")
    client_state = os.path.join(tmp, "deep", "client", "state")
    output = os.path.join(tmp, "deep", "etc", "tls")
    receiver = Process("client-parents", [
        client, f"--server=127.0.0.1:{port}", f"--ca={paths['ca.crt']}",
        f"--token-file={paths['token']}", "--namespace=tenant-a", "--certificate=web",
        f"--output-dir={output}", f"--state-dir={client_state}"],
        os.path.join(tmp, "client-parents.log"))
    try:
        if receiver.wait_for(r"version 1 applied") is None:
            problems.append("the client did not apply version 1 with missing parents:\n"
                            + receiver.text()[-2000:])
        for directory in (server_state, client_state):
            if not os.path.isdir(directory):
                problems.append(f"{directory} was not created")
            elif os.stat(directory).st_mode & 0o777 != 0o700:
                problems.append(f"{directory} has mode {oct(os.stat(directory).st_mode & 0o777)}")
        if not os.path.isfile(os.path.join(output, "web", "tls.crt")):
            problems.append(f"{output}/web/tls.crt was not written")
    finally:
        receiver.stop()
        process.stop()
    blocker = os.path.join(tmp, "a-file")
    open(blocker, "w").close()
    problems += expect_startup_error(
        [server, "--insecure", "--listen=127.0.0.1:0", f"--state-dir={blocker}/state",
         f"--certificate=web={paths['source']}"],
        ["--state-dir", blocker], "server --state-dir under a file")
    problems += expect_startup_error(
        client_argv(client, tmp, "--insecure", f"--state-dir={blocker}/state"),
        ["--state-dir", blocker], "client --state-dir under a file")
    problems += expect_startup_error(
        client_argv(client, tmp, "--insecure", f"--output-dir={blocker}/out"),
        ["--output-dir", blocker], "client --output-dir under a file")
    return problems


def check_no_credentials_said_plainly(client, paths, tmp, port):
    """A TLS client without an identity (only --ca) stops at start and says what it needs,
    instead of retrying refused connections for ever."""
    return expect_startup_error(
        [client, f"--server=127.0.0.1:{port}", f"--ca={paths['ca.crt']}",
         "--namespace=tenant-a", "--certificate=web", f"--output-dir={tmp}/anon-out",
         f"--state-dir={tmp}/anon-state"],
        ["no identity", "--token-file", "--tls-cert"], "client with only --ca")


def failed_handshakes(port):
    """A TLS handshake without a client certificate to a server that then refuses it, and
    plaintext bytes to the TLS port: gRPC logs both itself."""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as raw:
        raw.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        try:
            raw.recv(100)
        except OSError:
            pass


def parse_json_lines(text, who):
    problems = []
    records = []
    for number, line in enumerate(text.splitlines(), 1):
        try:
            record = json.loads(line)
        except ValueError:
            problems.append(f"{who} line {number} is not JSON: {line[:200]!r}")
            continue
        if not isinstance(record, dict):
            problems.append(f"{who} line {number} is not a JSON object: {line[:200]!r}")
            continue
        for field in ("time", "level", "msg"):
            if field not in record:
                problems.append(f"{who} line {number} has no {field!r}: {line[:200]!r}")
        records.append(record)
    return problems, records


def check_json_logs(server, client, paths, tmp):
    problems = []
    process, port = start_server(server, paths, tmp, "server-json", "--log-format=json",
                                 f"--state-dir={tmp}/server-json-state")
    clients = []
    try:
        good = Process("client-json", [
            client, f"--server=127.0.0.1:{port}", f"--ca={paths['ca.crt']}",
            f"--token-file={paths['token']}", "--namespace=tenant-a", "--certificate=web",
            f"--output-dir={tmp}/json-out", f"--state-dir={tmp}/json-state",
            "--log-format=json"], os.path.join(tmp, "client-json.log"))
        clients.append(good)
        if good.wait_for(r'"msg":"version 1 applied') is None:
            problems.append("the JSON client did not apply version 1:\n" + good.text()[-2000:])
        # Events carry their objects as fields, so a query needs no regular expression.
        _, records = parse_json_lines(good.text(), "client")
        applied = [r for r in records if r.get("msg", "").startswith("version 1 applied")]
        if not applied or applied[0].get("certificate") != "web" or applied[0].get(
                "version") != 1 or not applied[0].get("fingerprint"):
            problems.append(f"the client's apply event lacks certificate/version/fingerprint "
                            f"fields: {applied[:1]}")
        subscribed = [r for r in records if r.get("msg", "").startswith("subscribed")]
        if not subscribed or subscribed[0].get("namespace") != "tenant-a" or not subscribed[0].get(
                "client_id"):
            problems.append(f"the client's subscribe event lacks namespace/client_id fields: "
                            f"{subscribed[:1]}")
        _, records = parse_json_lines(process.text(), "server")
        published = [r for r in records if r.get("certificate") == "web" and r.get("version") == 1
                     and r.get("fingerprint")]
        if not published:
            problems.append("no server event with certificate, version and fingerprint fields")
        # Authenticated peers asking for a forged name and for a 60,000-character name (the
        # server says nothing about names before authentication, so the names reach the log
        # only through the denial of an authenticated caller).
        for index, name in enumerate((FORGED_JSON, "n" * 60000)):
            anonymous = Process(f"client-forger-{index}", [
                client, f"--server=127.0.0.1:{port}", f"--ca={paths['ca.crt']}",
                f"--token-file={paths['token']}", "--namespace=tenant-a",
                f"--certificate={name}",
                f"--output-dir={tmp}/forger-out-{index}",
                f"--state-dir={tmp}/forger-state-{index}", "--log-format=json"],
                os.path.join(tmp, f"client-forger-{index}.log"))
            clients.append(anonymous)
        failed_handshakes(port)
        # The server may refuse the name (NOT_FOUND) or the identity (an audit event) first;
        # either way the forged text must reach the log as a value, not as a line.
        deadline = time.monotonic() + DEADLINE_S
        while True:
            _, records = parse_json_lines(process.text(), "server")
            forged = [r for r in records if FORGED_TIME in json.dumps(r)]
            grpc_lines = [r for r in records if r.get("component") == "grpc"]
            if (forged and grpc_lines) or time.monotonic() > deadline:
                break
            time.sleep(0.1)
        if not forged:
            problems.append("the forged name never reached the server log: the check proves "
                            "nothing")
        audits = [r for r in records if r.get("msg") == "audit"]
        for audit in audits:
            for field in ("identity", "peer", "method", "certificate", "decision"):
                if field not in audit:
                    problems.append(f"audit event without {field!r}: {audit}")
            if audit.get("decision") == "denied" and audit.get("code") not in (
                    "UNAUTHENTICATED", "PERMISSION_DENIED", "NOT_FOUND"):
                problems.append(f"audit code is not a status name: {audit.get('code')!r}")
        if not grpc_lines:
            problems.append("no line from gRPC itself (component=grpc) for the failed handshake")
        server_text = process.text()
        longest = max((len(line) for line in server_text.splitlines()), default=0)
        if longest > 1500:
            problems.append(f"a server log line is {longest} bytes: the 60,000-character name "
                            "was not capped")
        for who, text in [("server", server_text)] + [(c.name, c.text()) for c in clients]:
            line_problems, records = parse_json_lines(text, who)
            problems += line_problems[:5]
            if any(r.get("decision") == "allowed" for r in records):
                problems.append(f"{who}: an audit line says decision=allowed (forged)")
    finally:
        for c in clients:
            c.stop()
        process.stop()
    _, records = parse_json_lines(process.text(), "server")
    if not any(r.get("msg", "").startswith("certcast-server stopped") for r in records):
        problems.append("the server's last line (stopped) is missing or not JSON")
    return problems


def check_text_log_not_forged(server, client, paths, tmp):
    problems = []
    process, port = start_server(server, paths, tmp, "server-text",
                                 f"--state-dir={tmp}/server-text-state")
    forger = Process("client-forger-text", [
        client, f"--server=127.0.0.1:{port}", f"--ca={paths['ca.crt']}",
        f"--token-file={paths['token']}", "--namespace=tenant-a",
        f"--certificate={FORGED}", f"--output-dir={tmp}/text-out", f"--state-dir={tmp}/text-st"],
        os.path.join(tmp, "client-forger-text.log"))
    try:
        if process.wait_for(re.escape(FORGED_TIME)) is None:
            problems.append("the forged name never reached the server log (the check proves "
                            "nothing):\n" + process.text()[-2000:])
    finally:
        forger.stop()
        process.stop()
    for who, text in (("server", process.text()), ("client", forger.text())):
        for line in text.splitlines():
            if line.startswith(FORGED_TIME) or not re.match(r"^\d{4}-\d\d-\d\dT\S+Z [TDIWEC] ",
                                                              line):
                problems.append(f"{who}: a line does not start as a log line does: {line[:200]!r}")
    return problems


def main(argv):
    if len(argv) != 2:
        print(__doc__)
        return 2
    server = os.path.join(argv[1], "server", "certcast-server")
    client = os.path.join(argv[1], "client", "certcast-client")
    checks = Checks()
    server_problems, server_help = check_help(server, "certcast-server flags")
    checks.check("server --help/-h list every flag, same set as the README table", server_problems)
    client_problems, _ = check_help(client, "certcast-client")
    checks.check("client --help/-h list every flag, same set as the README table", client_problems)
    checks.check("--help shows types, defaults and duration units", check_help_details(server_help))
    checks.check("server --version", check_version(server, "certcast-server"))
    checks.check("client --version", check_version(client, "certcast-client"))
    with tempfile.TemporaryDirectory(prefix="certcast-first-hour-") as tmp:
        paths = mint(tmp)
        checks.check("a duration without a unit asks for one",
                     check_durations(server, client, tmp))
        checks.check("credential files are checked at start, naming the file",
                     check_credential_files(server, client, paths, tmp))
        checks.check("missing parent directories are created; impossible ones are clear errors",
                     check_missing_parents(server, client, paths, tmp))
        process, port = start_server(server, paths, tmp, "server-plain",
                                     f"--state-dir={tmp}/server-plain-state")
        try:
            checks.check("a client without credentials says what it needs",
                         check_no_credentials_said_plainly(client, paths, tmp, port))
        finally:
            process.stop()
        checks.check("JSON logs: every line of both binaries is JSON with fields",
                     check_json_logs(server, client, paths, tmp))
        checks.check("text logs: a forged newline in a name starts no line",
                     check_text_log_not_forged(server, client, paths, tmp))
    print(f"{checks.passed} passed, {checks.failed} failed")
    return 1 if checks.failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
