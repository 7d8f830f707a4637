#!/usr/bin/env python3
"""Tests the missing-tool logic of the tests that need kubectl or promtool.

Runs tests/deploy/kustomize_test.py and tests/monitoring/monitoring_test.py with a PATH that lacks
the tool (an empty directory, or one whose kubectl has only kustomize v4) and checks: without CI
the script prints SKIP and exits 77, which ctest reports as skipped (SKIP_RETURN_CODE), never 0;
with CI=true it prints FAIL and exits 1.

Usage: missing_tools_test.py SOURCE_DIR
"""

import os
import subprocess
import sys
import tempfile

SKIP_EXIT = 77


def run(args, path, ci):
    env = {k: v for k, v in os.environ.items() if k != "CI"}
    env["PATH"] = path
    if ci:
        env["CI"] = "true"
    return subprocess.run([sys.executable] + args, env=env, capture_output=True, text=True,
                          timeout=120, check=False)


def main(argv):
    if len(argv) != 2:
        print(f"usage: {argv[0]} SOURCE_DIR", file=sys.stderr)
        return 2
    source = os.path.abspath(argv[1])
    kustomize = [os.path.join(source, "tests/deploy/kustomize_test.py"),
                 os.path.join(source, "deploy")]
    monitoring = [os.path.join(source, "tests/monitoring/monitoring_test.py")]
    failures = 0
    with tempfile.TemporaryDirectory(prefix="certcast-missing-tools-") as tmp:
        empty = os.path.join(tmp, "empty")
        os.mkdir(empty)
        old = os.path.join(tmp, "old-kubectl")
        os.mkdir(old)
        with open(os.path.join(old, "kubectl"), "w", encoding="utf-8") as f:
            f.write("#!/bin/sh\necho '{\"kustomizeVersion\": \"v4.5.7\"}'\n")
        os.chmod(os.path.join(old, "kubectl"), 0o755)

        cases = [
            ("kustomize_test without kubectl", kustomize, empty, "kubectl is not on PATH"),
            ("kustomize_test with kustomize v4", kustomize, old, "has kustomize v4.5.7"),
            ("monitoring_test without promtool", monitoring, empty, "promtool is not on PATH"),
        ]
        for name, args, path, reason in cases:
            for ci, code, word in ((False, SKIP_EXIT, "SKIP"), (True, 1, "FAIL")):
                result = run(args, path, ci)
                label = f"{name}{' (CI=true)' if ci else ''}"
                if result.returncode == code and f"{word}: " in result.stdout and \
                        reason in result.stdout:
                    print(f"ok   {label}: exit {code}, {word} with the reason")
                else:
                    failures += 1
                    print(f"FAIL {label}: expected exit {code} and \"{word}: ...{reason}...\", "
                          f"got exit {result.returncode}:\n{result.stdout}{result.stderr}")
    print(f"{failures} failed")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
