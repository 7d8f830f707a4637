#!/usr/bin/env python3
"""The container image, built and run: deploy/Dockerfile with podman, then the server and a client
from that image as the manifests run them (user 65532, read-only root filesystem, no
capabilities). A rotation of the source must reach the client's files, and the server must hold
the client's ACK for it.

Usage: image_test.py REPO_ROOT BUILD_DIR BUF
Exits 77 (skipped) when podman, runc or mmdebstrap is missing or not running as root, and fails
instead under CI=true. The image is built from BUILD_DIR's binaries (scripts/build-image.sh
--prebuilt); the base image is made once per machine by mmdebstrap and kept by podman.
"""

import hashlib
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time

IMAGE = "localhost/certcast-test:latest"
USER = 65532
SKIP = 77


def log(message):
    print(f"image_test: {message}", flush=True)


def skip_or_fail(reason):
    if os.environ.get("CI") == "true":
        log(f"FAIL: {reason} (CI=true: a skipped image test is a failure)")
        sys.exit(1)
    log(f"SKIP: {reason}")
    sys.exit(SKIP)


def run(*args, check=True, **kwargs):
    return subprocess.run(args, check=check, text=True, capture_output=True, **kwargs)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(what, predicate, timeout=60.0, on_timeout=lambda: ""):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.2)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}\n{on_timeout()}")


class Pki:
    """Throwaway CA, serving certificate for 127.0.0.1 and wildcard versions (openssl CLI)."""

    def __init__(self, directory):
        self.dir = directory
        self._openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
                      "-nodes", "-keyout", self.path("ca.key"), "-out", self.path("ca.crt"),
                      "-subj", "/CN=certcast image test CA", "-days", "2")

    def path(self, name):
        return os.path.join(self.dir, name)

    def _openssl(self, *args):
        run("openssl", *args)

    def issue(self, name, subject, san):
        key, csr, crt = self.path(f"{name}.key"), self.path(f"{name}.csr"), self.path(f"{name}.crt")
        self._openssl("req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
                      "-nodes", "-keyout", key, "-out", csr, "-subj", subject)
        extensions = self.path(f"{name}.ext")
        with open(extensions, "w") as f:
            f.write(f"subjectAltName={san}\nextendedKeyUsage=serverAuth\n")
        self._openssl("x509", "-req", "-in", csr, "-CA", self.path("ca.crt"), "-CAkey",
                      self.path("ca.key"), "-set_serial", "0x" + os.urandom(8).hex(), "-days", "2",
                      "-extfile", extensions, "-out", crt)
        return crt, key


def leaf_sha256(pem_path):
    out = run("openssl", "x509", "-noout", "-fingerprint", "-sha256", "-in", pem_path).stdout
    return out.strip().split("=", 1)[1].replace(":", "").lower()


def main():
    if len(sys.argv) != 4:
        print(__doc__, file=sys.stderr)
        return 2
    root, build, buf = sys.argv[1:]
    if os.geteuid() != 0:
        skip_or_fail("not root (podman runs the image as root here)")
    for tool in ("podman", "runc", "mmdebstrap"):
        if shutil.which(tool) is None:
            skip_or_fail(f"{tool} not installed (scripts/install-deps.sh installs it)")

    log("building the image from the host build's binaries")
    started = time.monotonic()
    build_log = subprocess.run(
        [os.path.join(root, "scripts/build-image.sh"), f"--tag={IMAGE}", f"--prebuilt={build}"],
        text=True, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    if build_log.returncode != 0:
        print(build_log.stdout[-6000:])
        raise AssertionError("scripts/build-image.sh failed")
    size = int(run("podman", "image", "inspect", "--format", "{{.Size}}", IMAGE).stdout)
    log(f"image {IMAGE} built in {time.monotonic() - started:.0f} s, {size / 1e6:.1f} MB")
    user = run("podman", "image", "inspect", "--format", "{{.Config.User}}", IMAGE).stdout.strip()
    assert user == f"{USER}:{USER}", f"image runs as {user!r}, expected {USER}:{USER}"

    work = tempfile.mkdtemp(prefix="certcast-image-")
    os.chmod(work, 0o755)
    containers = []
    try:
        return scenario(work, buf, containers)
    finally:
        for name in containers:
            logs = run("podman", "logs", name, check=False)
            with open(os.path.join(work, f"{name}.log"), "w") as f:
                f.write(logs.stdout + logs.stderr)
            run("podman", "rm", "--force", "--time=5", name, check=False)
        if os.environ.get("KEEP") != "1":
            shutil.rmtree(work, ignore_errors=True)
        else:
            log(f"kept {work}")


def owned_dir(path, mode):
    os.makedirs(path)
    os.chown(path, USER, USER)
    os.chmod(path, mode)
    return path


def scenario(work, buf, containers):
    pki_dir = os.path.join(work, "pki")
    os.makedirs(pki_dir)
    pki = Pki(pki_dir)
    serving_crt, serving_key = pki.issue("serving", "/CN=certcast", "IP:127.0.0.1")
    # The server's inputs are readable by the image's user and mounted read-only.
    tls = owned_dir(os.path.join(work, "tls"), 0o700)
    shutil.copy(serving_crt, os.path.join(tls, "tls.crt"))
    shutil.copy(serving_key, os.path.join(tls, "tls.key"))
    source = owned_dir(os.path.join(work, "source"), 0o700)
    config = owned_dir(os.path.join(work, "config"), 0o700)
    tenant_token, admin_token = os.urandom(32).hex(), os.urandom(32).hex()

    def sha(text):
        return hashlib.sha256(text.encode()).hexdigest()

    with open(os.path.join(config, "tokens.yaml"), "w") as f:
        f.write(f"tokens:\n  - sha256: {sha(tenant_token)}\n    namespace: tenant-a\n"
                f"    name: image-client\n  - sha256: {sha(admin_token)}\n"
                f"    namespace: certcast-system\n    name: operator\n")
    with open(os.path.join(config, "policy.yaml"), "w") as f:
        f.write("certificates:\n  wildcard:\n    namespaces: [tenant-a]\n"
                "admins:\n  - static:certcast-system/operator\n")
    for name in os.listdir(tls):
        os.chown(os.path.join(tls, name), USER, USER)
    for name in os.listdir(config):
        os.chown(os.path.join(config, name), USER, USER)

    def publish(version):
        """Writes wildcard `version` into the source as kubelet does: a ..data symlink swap."""
        crt, key = pki.issue(f"wildcard-{version}", "/CN=*.example.com", "DNS:*.example.com")
        data = os.path.join(source, f"..v{version}")
        os.makedirs(data)
        shutil.copy(crt, os.path.join(data, "tls.crt"))
        shutil.copy(key, os.path.join(data, "tls.key"))
        for path in (data, os.path.join(data, "tls.crt"), os.path.join(data, "tls.key")):
            os.chown(path, USER, USER)
        os.symlink(f"..v{version}", os.path.join(source, "..data_tmp"))
        os.rename(os.path.join(source, "..data_tmp"), os.path.join(source, "..data"))
        for name in ("tls.crt", "tls.key"):
            if not os.path.islink(os.path.join(source, name)):
                os.symlink(f"..data/{name}", os.path.join(source, name))
        return leaf_sha256(crt)

    first = publish(1)
    state = owned_dir(os.path.join(work, "server-state"), 0o700)
    client_ca = owned_dir(os.path.join(work, "client-ca"), 0o755)
    shutil.copy(pki.path("ca.crt"), os.path.join(client_ca, "ca.crt"))
    token_dir = owned_dir(os.path.join(work, "client-token"), 0o700)
    with open(os.path.join(token_dir, "token"), "w") as f:
        f.write(tenant_token)
    os.chown(os.path.join(token_dir, "token"), USER, USER)
    os.chmod(os.path.join(token_dir, "token"), 0o600)
    client_home = owned_dir(os.path.join(work, "client"), 0o755)

    port, server_health, client_health = free_port(), free_port(), free_port()
    suffix = f"{os.getpid()}"
    limits = ["--ulimit", "nofile=4096:4096", "--ulimit", "nproc=1024:1024"]
    hardened = ["--runtime=runc", "--network=host", "--read-only", f"--user={USER}:{USER}",
                "--cap-drop=all", "--security-opt=no-new-privileges", *limits]

    server = f"certcast-image-server-{suffix}"
    containers.append(server)
    run("podman", "run", "--detach", f"--name={server}", *hardened,
        "--volume", f"{source}:/etc/certcast/source:ro",
        "--volume", f"{tls}:/etc/certcast/tls:ro",
        "--volume", f"{config}:/etc/certcast/config:ro",
        "--volume", f"{state}:/var/lib/certcast",
        IMAGE, "/usr/local/bin/certcast-server",
        "--certificate=wildcard=/etc/certcast/source",
        f"--listen=127.0.0.1:{port}",
        "--tls-cert=/etc/certcast/tls/tls.crt", "--tls-key=/etc/certcast/tls/tls.key",
        "--token-map=/etc/certcast/config/tokens.yaml",
        "--policy=/etc/certcast/config/policy.yaml",
        "--state-dir=/var/lib/certcast/state",
        f"--health-listen=127.0.0.1:{server_health}", "--log-format=json")

    client = f"certcast-image-client-{suffix}"
    containers.append(client)
    run("podman", "run", "--detach", f"--name={client}", *hardened,
        "--volume", f"{client_ca}:/etc/certcast/ca:ro",
        "--volume", f"{token_dir}:/var/run/secrets/certcast:ro",
        "--volume", f"{client_home}:/var/lib/certcast-client",
        IMAGE, "/usr/local/bin/certcast-client",
        f"--server=127.0.0.1:{port}", "--ca=/etc/certcast/ca/ca.crt",
        "--token-file=/var/run/secrets/certcast/token", "--namespace=tenant-a",
        "--certificate=wildcard",
        "--output-dir=/var/lib/certcast-client/files",
        "--state-dir=/var/lib/certcast-client/state",
        f"--health-listen=127.0.0.1:{client_health}", "--log-format=json")

    def container_logs():
        parts = []
        for name in containers:
            out = run("podman", "logs", "--tail=40", name, check=False)
            parts.append(f"--- {name}\n{out.stdout}{out.stderr}")
        return "\n".join(parts)

    served = os.path.join(client_home, "files", "wildcard", "tls.crt")

    def all_running():
        for name in containers:
            running = run("podman", "inspect", "--format", "{{.State.Running}}", name).stdout
            if running.strip() != "true":
                raise AssertionError(f"{name} exited\n{container_logs()}")

    def client_holds(expected):
        all_running()
        try:
            return leaf_sha256(served) == expected
        except subprocess.CalledProcessError:
            return False

    last_reply = [""]

    def server_acknowledged(version):
        out = subprocess.run(
            [buf, "curl", "--timeout", "10s", "--protocol", "grpc", "--cacert",
             pki.path("ca.crt"), "-H", f"authorization: Bearer {admin_token}",
             "-d", "{}", f"https://127.0.0.1:{port}/certcast.v1.Inspection/ListCertificates"],
            text=True, capture_output=True)
        last_reply[0] = f"buf curl ListCertificates: exit {out.returncode}\n{out.stdout}{out.stderr}"
        if out.returncode != 0:
            return False
        summary = json.loads(out.stdout)["certificates"][0]
        return (int(summary.get("version", 0)) == version and
                int(summary.get("clients", 0)) == 1 and
                int(summary.get("clientsAcknowledged", 0)) == 1)

    wait_for("the client to write version 1", lambda: client_holds(first), 90, container_logs)
    wait_for("the server to hold the ACK of version 1", lambda: server_acknowledged(1), 60,
             lambda: last_reply[0] + container_logs())
    log("version 1 reached the client's files and was acknowledged")
    rotated = time.monotonic()
    second = publish(2)
    wait_for("the client to write version 2", lambda: client_holds(second), 60, container_logs)
    wait_for("the server to hold the ACK of version 2", lambda: server_acknowledged(2), 60,
             lambda: last_reply[0] + container_logs())
    log(f"rotation reached the client's files and its ACK in {time.monotonic() - rotated:.1f} s")
    key_mode = os.stat(os.path.join(client_home, "files", "wildcard", "tls.key")).st_mode & 0o777
    assert key_mode == 0o600, f"tls.key is {oct(key_mode)}"
    for name in containers:
        running = run("podman", "inspect", "--format", "{{.State.Running}} {{.HostConfig.ReadonlyRootfs}}",
                     name).stdout.split()
        assert running == ["true", "true"], f"{name}: running/read-only = {running}"
    log("PASS")
    return 0


if __name__ == "__main__":
    sys.exit(main())
