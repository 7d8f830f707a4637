#!/usr/bin/env python3
"""Tests of the fake Kubernetes API server (python3 -m unittest, or run this file)."""

import base64
import http.client
import json
import os
import re
import shutil
import signal
import ssl
import subprocess
import sys
import tempfile
import time
import unittest

HERE = os.path.dirname(os.path.abspath(__file__))
SERVER = os.path.join(HERE, "fake_kube_api.py")

NS = "tenant-a"
CLIENT = "system:serviceaccount:tenant-a:certcast-client"
SERVER_SA = "system:serviceaccount:certcast:certcast-server"
SECRETS = "/api/v1/namespaces/tenant-a/secrets"
LEASES = "/apis/coordination.k8s.io/v1/namespaces/certcast/leases"


def b64(text):
    return base64.b64encode(text.encode()).decode()


def tls_secret(name, crt="cert-1", key="key-1", namespace=None):
    meta = {"name": name, "labels": {"app.kubernetes.io/managed-by": "certcast"}}
    if namespace:
        meta["namespace"] = namespace
    return {"apiVersion": "v1", "kind": "Secret", "metadata": meta, "type": "kubernetes.io/tls",
            "data": {"tls.crt": b64(crt), "tls.key": b64(key)}}


CONFIG = {
    "tokens": {
        "client-token": CLIENT,
        "server-token": SERVER_SA,
        "other-token": "system:serviceaccount:tenant-b:certcast-client",
    },
    "admin_tokens": ["admin-token"],
    "roles": [
        {"namespace": NS, "subjects": [CLIENT], "rules": [
            {"apiGroups": [""], "resources": ["secrets"],
             "verbs": ["get", "update", "patch", "list", "watch"],
             "resourceNames": ["wildcard-tls"]},
            {"apiGroups": [""], "resources": ["secrets"], "verbs": ["create"]},
            {"apiGroups": ["apps"], "resources": ["deployments"], "verbs": ["get", "patch"],
             "resourceNames": ["web"]},
        ]},
        # The rules a replicated server needs on its Lease (create cannot be limited by name).
        {"namespace": "certcast", "subjects": [SERVER_SA], "rules": [
            {"apiGroups": ["coordination.k8s.io"], "resources": ["leases"],
             "verbs": ["get", "update"], "resourceNames": ["certcast"]},
            {"apiGroups": ["coordination.k8s.io"], "resources": ["leases"], "verbs": ["create"]},
        ]},
    ],
    "cluster_roles": [
        {"subjects": [SERVER_SA], "rules": [
            {"apiGroups": ["authentication.k8s.io"], "resources": ["tokenreviews"],
             "verbs": ["create"]}]},
    ],
    "reviewable_tokens": {
        "projected-a": {"username": CLIENT, "audiences": ["certcast"]},
    },
    "objects": [
        tls_secret("wildcard-tls", namespace=NS),
        tls_secret("not-mine", namespace=NS),
        {"apiVersion": "apps/v1", "kind": "Deployment",
         "metadata": {"name": "web", "namespace": NS},
         "spec": {"replicas": 1, "selector": {"matchLabels": {"app": "web"}},
                  "template": {"metadata": {"labels": {"app": "web"}},
                               "spec": {"containers": [{"name": "web", "image": "nginx"}]}}}},
    ],
}


def start_server(tmp, port=0, config_name="config.json", extra=()):
    proc = subprocess.Popen(
        [sys.executable, SERVER, "--cert", os.path.join(tmp, "cert.pem"),
         "--key", os.path.join(tmp, "key.pem"), "--config", os.path.join(tmp, config_name),
         "--port", str(port)] + list(extra),
        stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True)
    line = proc.stderr.readline()
    m = re.fullmatch(r"listening on port (\d+)\n", line)
    if not m:
        proc.kill()
        raise RuntimeError("unexpected first line from the server: %r" % line)
    return proc, int(m.group(1))


class FakeKubeApiTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.tmp = tempfile.mkdtemp(prefix="fake-kube-api-test-")
        subprocess.run(
            ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
             "-nodes", "-keyout", os.path.join(cls.tmp, "key.pem"),
             "-out", os.path.join(cls.tmp, "cert.pem"), "-days", "1", "-subj", "/CN=localhost",
             "-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost"],
            check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        with open(os.path.join(cls.tmp, "config.json"), "w") as f:
            json.dump(CONFIG, f)
        cls.ctx = ssl.create_default_context(cafile=os.path.join(cls.tmp, "cert.pem"))
        cls.proc, cls.port = start_server(cls.tmp)

    @classmethod
    def tearDownClass(cls):
        cls.proc.terminate()
        try:
            cls.proc.wait(5)
        except subprocess.TimeoutExpired:
            cls.proc.kill()
        cls.proc.stderr.close()
        shutil.rmtree(cls.tmp, ignore_errors=True)

    def setUp(self):
        for method, path, body in [("DELETE", "/_control/fail", None),
                                   ("DELETE", "/_control/conflict", None),
                                   ("POST", "/_control/expire", {"on": False}),
                                   ("POST", "/_control/down", {"on": False}),
                                   ("POST", "/_control/bookmark_interval", {"seconds": 1})]:
            status, _, _ = self.call(method, path, body, token=None)
            self.assertEqual(status, 200)
        self.created = []

    def tearDown(self):
        for name in self.created:
            self.call("DELETE", SECRETS + "/" + name, token="admin-token")

    # -- helpers -----------------------------------------------------------------------------

    def conn(self, timeout=10):
        return http.client.HTTPSConnection("127.0.0.1", self.port, context=self.ctx,
                                           timeout=timeout)

    def call(self, method, path, body=None, token="client-token",
             content_type="application/json", conn=None):
        own = conn is None
        conn = conn or self.conn()
        headers = {"Accept": "application/json"}
        if token:
            headers["Authorization"] = "Bearer " + token
        data = None
        if body is not None:
            data = body if isinstance(body, bytes) else json.dumps(body).encode()
            headers["Content-Type"] = content_type
        try:
            conn.request(method, path, body=data, headers=headers)
            resp = conn.getresponse()
            raw = resp.read()
            parsed = json.loads(raw) if raw and resp.getheader("Content-Type", "").startswith(
                "application/json") else raw
            return resp.status, resp, parsed
        finally:
            if own:
                conn.close()

    def admin(self, method, path, body=None, **kw):
        return self.call(method, path, body, token="admin-token", **kw)

    def create(self, name, **kw):
        status, _, obj = self.admin("POST", SECRETS, tls_secret(name, **kw))
        self.assertEqual(status, 201, obj)
        self.created.append(name)
        return obj

    def open_watch(self, query, token="client-token", path=SECRETS):
        conn = self.conn()
        conn.request("GET", path + "?watch=1&" + query,
                     headers={"Authorization": "Bearer " + token})
        resp = conn.getresponse()
        self.addCleanup(conn.close)
        return resp

    def next_event(self, resp):
        """Reads one chunk of a watch: an event, or None for the terminating chunk.

        Parses the chunked framing itself: http.client's readline() hides an abrupt close
        (it returns b"" as for a clean end), which is what drop_watches must produce."""
        size_line = resp.fp.readline()
        if not size_line.endswith(b"\r\n"):
            raise ConnectionError("watch closed without a terminating chunk")
        size = int(size_line.split(b";")[0], 16)
        if size == 0:
            self.assertEqual(resp.fp.readline(), b"\r\n")
            return None
        data = resp.fp.read(size + 2)
        if len(data) != size + 2:
            raise ConnectionError("watch closed in the middle of a chunk")
        self.assertTrue(data.endswith(b"\n\r\n"), data)  # one JSON line per chunk
        return json.loads(data[:-2])

    def wait_for_watches(self, n):
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            _, _, watches = self.call("GET", "/_control/watches", token=None)
            if len(watches) >= n:
                return watches
            time.sleep(0.02)
        self.fail("the watch did not register")

    def current_rv(self):
        _, _, state = self.call("GET", "/_control/state", token=None)
        return int(state["resourceVersion"])

    # -- authentication / authorization --------------------------------------------------------

    def test_missing_or_unknown_token_is_401(self):
        for token in (None, "nope"):
            status, _, body = self.call("GET", SECRETS + "/wildcard-tls", token=token)
            self.assertEqual(status, 401)
            self.assertEqual(body, {"kind": "Status", "apiVersion": "v1", "metadata": {},
                                    "status": "Failure", "message": "Unauthorized",
                                    "reason": "Unauthorized", "code": 401})

    def test_resource_names_restrict_get_and_update(self):
        status, _, obj = self.call("GET", SECRETS + "/wildcard-tls")
        self.assertEqual(status, 200)
        self.assertEqual(obj["kind"], "Secret")
        self.assertEqual(obj["metadata"]["namespace"], NS)
        status, _, body = self.call("PUT", SECRETS + "/not-mine", tls_secret("not-mine"))
        self.assertEqual(status, 403)
        self.assertEqual(body, {
            "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
            "message": 'secrets "not-mine" is forbidden: User "%s" cannot update resource '
                       '"secrets" in API group "" in the namespace "tenant-a"' % CLIENT,
            "reason": "Forbidden", "details": {"name": "not-mine", "kind": "secrets"},
            "code": 403})
        status, _, _ = self.call("GET", SECRETS + "/not-mine")
        self.assertEqual(status, 403)
        status, _, body = self.call("DELETE", SECRETS + "/wildcard-tls")
        self.assertEqual(status, 403)
        self.assertIn("cannot delete resource", body["message"])
        status, _, body = self.call("GET", "/api/v1/namespaces/tenant-b/secrets/wildcard-tls")
        self.assertEqual(status, 403)
        self.assertIn('in the namespace "tenant-b"', body["message"])

    def test_stored_role_binding_grants_until_deleted(self):
        # tenant-b has no config role for the client: a Role and RoleBinding created through the
        # API grant exactly what the Role says, and deleting the binding takes it away again.
        path = "/api/v1/namespaces/tenant-b/secrets/wildcard-tls"
        status, _, _ = self.call("GET", path)
        self.assertEqual(status, 403)
        rbac = "/apis/rbac.authorization.k8s.io/v1/namespaces/tenant-b/"
        role = {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role",
                "metadata": {"name": "reader", "namespace": "tenant-b"},
                "rules": [{"apiGroups": [""], "resources": ["secrets"], "verbs": ["get"],
                           "resourceNames": ["wildcard-tls"]}]}
        binding = {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
                   "metadata": {"name": "reader", "namespace": "tenant-b"},
                   "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role",
                               "name": "reader"},
                   "subjects": [{"kind": "ServiceAccount", "name": "certcast-client",
                                 "namespace": "tenant-a"}]}
        status, _, obj = self.admin("POST", rbac + "rolebindings", binding)
        self.assertEqual(status, 201, obj)
        status, _, _ = self.call("GET", path)
        self.assertEqual(status, 403, "a binding to a Role that does not exist grants nothing")
        status, _, obj = self.admin("POST", rbac + "roles", role)
        self.assertEqual(status, 201, obj)
        status, _, body = self.call("GET", path)
        self.assertEqual(status, 404, body)  # allowed; the Secret does not exist
        status, _, _ = self.call("GET", "/api/v1/namespaces/tenant-b/secrets/other")
        self.assertEqual(status, 403, "only the Role's resourceNames")
        status, _, _ = self.call("GET", "/api/v1/namespaces/tenant-c/secrets/wildcard-tls")
        self.assertEqual(status, 403, "only in the binding's namespace")
        status, _, _ = self.admin("DELETE", rbac + "rolebindings/reader")
        self.assertEqual(status, 200)
        status, _, _ = self.call("GET", path)
        self.assertEqual(status, 403)
        self.admin("DELETE", rbac + "roles/reader")

    def test_list_and_watch_need_the_field_selector(self):
        status, _, body = self.call("GET", SECRETS)
        self.assertEqual(status, 403)
        self.assertEqual(body["message"],
                         'secrets is forbidden: User "%s" cannot list resource "secrets" in API '
                         'group "" in the namespace "tenant-a"' % CLIENT)
        self.assertEqual(body["details"], {"kind": "secrets"})
        status, _, body = self.call("GET", SECRETS + "?fieldSelector=metadata.name%3Dwildcard-tls")
        self.assertEqual(status, 200)
        self.assertEqual(body["kind"], "SecretList")
        self.assertEqual([i["metadata"]["name"] for i in body["items"]], ["wildcard-tls"])
        self.assertNotIn("kind", body["items"][0])  # typed list items carry no kind
        self.assertEqual(body["metadata"]["resourceVersion"], str(self.current_rv()))
        status, _, body = self.call("GET", SECRETS + "?fieldSelector=metadata.name%3Dnot-mine")
        self.assertEqual(status, 403)
        self.assertTrue(body["message"].startswith('secrets "not-mine" is forbidden'))
        status, _, body = self.call("GET", SECRETS + "?watch=true")
        self.assertEqual(status, 403)
        self.assertIn("cannot watch resource", body["message"])
        status, _, _ = self.call(
            "GET", SECRETS + "?watch=1&timeoutSeconds=1&fieldSelector=metadata.name%3Dnot-mine")
        self.assertEqual(status, 403)

    def test_create_is_allowed_by_the_rule_without_resource_names(self):
        status, _, obj = self.call("POST", SECRETS, tls_secret("anything-new"))
        self.assertEqual(status, 201, obj)
        self.created.append("anything-new")
        # ... but reading it back is not: the named rule covers wildcard-tls only.
        status, _, _ = self.call("GET", SECRETS + "/anything-new")
        self.assertEqual(status, 403)
        status, _, body = self.call("POST", "/api/v1/namespaces/tenant-b/secrets",
                                    tls_secret("x"))
        self.assertEqual(status, 403)
        self.assertEqual(body["message"],
                         'secrets is forbidden: User "%s" cannot create resource "secrets" in '
                         'API group "" in the namespace "tenant-b"' % CLIENT)

    # -- CRUD ------------------------------------------------------------------------------------

    def test_create_sets_system_fields_and_rejects_duplicates(self):
        before = self.current_rv()
        obj = self.create("created-1")
        meta = obj["metadata"]
        self.assertEqual(meta["namespace"], NS)
        self.assertRegex(meta["uid"], r"^[0-9a-f-]{36}$")
        self.assertRegex(meta["creationTimestamp"], r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$")
        self.assertEqual(int(meta["resourceVersion"]), before + 1)
        status, _, body = self.admin("POST", SECRETS, tls_secret("created-1"))
        self.assertEqual(status, 409)
        self.assertEqual(body["reason"], "AlreadyExists")
        self.assertEqual(body["message"], 'secrets "created-1" already exists')
        self.assertEqual(body["details"], {"name": "created-1", "kind": "secrets"})
        status, _, body = self.admin("POST", SECRETS, tls_secret("x", namespace="tenant-b"))
        self.assertEqual(status, 400)
        self.assertEqual(body["reason"], "BadRequest")
        status, _, body = self.admin("POST", SECRETS, {"metadata": {"name": "s"},
                                                       "stringData": {"a": "b"}})
        self.assertEqual(status, 201)
        self.created.append("s")
        self.assertEqual(body["data"], {"a": b64("b")})
        self.assertEqual(body["type"], "Opaque")
        self.assertNotIn("stringData", body)

    def test_update_with_stale_resource_version_conflicts(self):
        obj = self.create("upd")
        stale = json.loads(json.dumps(obj))
        obj["data"]["tls.crt"] = b64("cert-2")
        status, _, updated = self.admin("PUT", SECRETS + "/upd", obj)
        self.assertEqual(status, 200, updated)
        self.assertGreater(int(updated["metadata"]["resourceVersion"]),
                           int(obj["metadata"]["resourceVersion"]))
        self.assertEqual(updated["metadata"]["uid"], obj["metadata"]["uid"])
        stale["data"]["tls.crt"] = b64("cert-3")
        status, _, body = self.admin("PUT", SECRETS + "/upd", stale)
        self.assertEqual(status, 409)
        self.assertEqual(body, {
            "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
            "message": 'Operation cannot be fulfilled on secrets "upd": the object has been '
                       'modified; please apply your changes to the latest version and try again',
            "reason": "Conflict", "details": {"name": "upd", "kind": "secrets"}, "code": 409})
        # Without a resourceVersion the update is unconditional.
        del stale["metadata"]["resourceVersion"]
        status, _, forced = self.admin("PUT", SECRETS + "/upd", stale)
        self.assertEqual(status, 200)
        self.assertEqual(forced["data"]["tls.crt"], b64("cert-3"))
        # A no-op update writes nothing: the resourceVersion does not move.
        status, _, same = self.admin("PUT", SECRETS + "/upd", forced)
        self.assertEqual(status, 200)
        self.assertEqual(same["metadata"]["resourceVersion"], forced["metadata"]["resourceVersion"])
        status, _, body = self.admin("PUT", SECRETS + "/absent", tls_secret("absent"))
        self.assertEqual(status, 404)
        self.assertEqual(body["message"], 'secrets "absent" not found')
        self.assertEqual(body["details"], {"name": "absent", "kind": "secrets"})
        status, _, body = self.admin("PUT", SECRETS + "/upd", tls_secret("other"))
        self.assertEqual(status, 400)

    def test_the_client_updates_its_own_secret(self):
        status, _, obj = self.call("GET", SECRETS + "/wildcard-tls")
        obj["metadata"].setdefault("annotations", {})["certcast.io/version"] = str(time.time())
        status, _, updated = self.call("PUT", SECRETS + "/wildcard-tls", obj)
        self.assertEqual(status, 200, updated)

    def test_merge_patch(self):
        obj = self.create("patched")
        patch = {"metadata": {"annotations": {"certcast.io/fingerprint": "ab"}},
                 "data": {"tls.crt": b64("cert-9"), "ca.crt": b64("ca")}}
        status, _, out = self.admin("PATCH", SECRETS + "/patched", patch,
                                    content_type="application/merge-patch+json")
        self.assertEqual(status, 200, out)
        self.assertEqual(out["metadata"]["annotations"], {"certcast.io/fingerprint": "ab"})
        self.assertEqual(out["data"], {"tls.crt": b64("cert-9"), "tls.key": b64("key-1"),
                                       "ca.crt": b64("ca")})
        self.assertEqual(out["metadata"]["labels"], obj["metadata"]["labels"])
        status, _, out = self.admin("PATCH", SECRETS + "/patched", {"data": {"ca.crt": None}},
                                    content_type="application/strategic-merge-patch+json")
        self.assertEqual(status, 200)
        self.assertNotIn("ca.crt", out["data"])
        # A resourceVersion in the patch is a precondition.
        status, _, body = self.admin("PATCH", SECRETS + "/patched",
                                     {"metadata": {"resourceVersion": "1"}, "data": {"a": "YQ=="}},
                                     content_type="application/merge-patch+json")
        self.assertEqual(status, 409)
        self.assertEqual(body["reason"], "Conflict")
        status, _, out = self.admin("PATCH", SECRETS + "/patched",
                                    [{"op": "replace", "path": "/data/tls.key",
                                      "value": b64("key-2")}],
                                    content_type="application/json-patch+json")
        self.assertEqual(status, 200, out)
        self.assertEqual(out["data"]["tls.key"], b64("key-2"))
        status, _, body = self.admin("PATCH", SECRETS + "/patched", {"data": {}},
                                     content_type="application/json")
        self.assertEqual(status, 415)
        self.assertEqual(body["reason"], "UnsupportedMediaType")
        status, _, body = self.admin("PATCH", SECRETS + "/absent", {"data": {}},
                                     content_type="application/merge-patch+json")
        self.assertEqual(status, 404)

    def test_tls_validation_and_base64(self):
        bad = tls_secret("bad-tls")
        del bad["data"]["tls.key"]
        status, _, body = self.admin("POST", SECRETS, bad)
        self.assertEqual(status, 422)
        self.assertEqual(body["reason"], "Invalid")
        self.assertEqual(body["message"], 'Secret "bad-tls" is invalid: data[tls.key]: Required value')
        self.assertEqual(body["details"], {"name": "bad-tls", "kind": "Secret", "causes": [
            {"reason": "FieldValueRequired", "message": "Required value",
             "field": "data[tls.key]"}]})
        bad["data"] = {}
        status, _, body = self.admin("POST", SECRETS, bad)
        self.assertEqual(status, 422)
        self.assertEqual(len(body["details"]["causes"]), 2)
        self.assertTrue(body["message"].startswith('Secret "bad-tls" is invalid: [data[tls.crt]'))
        # Undecodable base64 fails in decoding, before validation: 400, as the real API does.
        bad = tls_secret("bad-b64")
        bad["data"]["tls.crt"] = "not base64!"
        status, _, body = self.admin("POST", SECRETS, bad)
        self.assertEqual(status, 400)
        self.assertEqual(body["message"], 'Secret in version "v1" cannot be handled as a Secret: '
                                          'illegal base64 data at input byte 3')
        # The type is immutable.
        obj = self.create("typed")
        obj["type"] = "Opaque"
        status, _, body = self.admin("PUT", SECRETS + "/typed", obj)
        self.assertEqual(status, 422)
        self.assertEqual(body["details"]["causes"][0]["field"], "type")
        status, _, body = self.admin("POST", SECRETS, tls_secret("Bad_Name"))
        self.assertEqual(status, 422)
        self.assertEqual(body["details"]["causes"][0]["field"], "metadata.name")

    def test_delete_returns_success_status(self):
        obj = self.create("doomed")
        status, _, body = self.admin("DELETE", SECRETS + "/doomed")
        self.assertEqual(status, 200)
        self.assertEqual(body, {"kind": "Status", "apiVersion": "v1", "metadata": {},
                                "status": "Success",
                                "details": {"name": "doomed", "kind": "secrets",
                                            "uid": obj["metadata"]["uid"]}})
        status, _, _ = self.admin("GET", SECRETS + "/doomed")
        self.assertEqual(status, 404)

    def test_label_selector(self):
        self.create("labelled")
        status, _, body = self.admin(
            "GET", SECRETS + "?labelSelector=app.kubernetes.io%2Fmanaged-by%3Dcertcast")
        self.assertEqual(status, 200)
        names = [i["metadata"]["name"] for i in body["items"]]
        self.assertIn("labelled", names)
        status, _, body = self.admin(
            "GET", SECRETS + "?labelSelector=app.kubernetes.io%2Fmanaged-by%21%3Dcertcast")
        self.assertEqual([i["metadata"]["name"] for i in body["items"]], [])

    def test_keep_alive(self):
        conn = self.conn()
        try:
            for _ in range(3):
                status, resp, _ = self.call("GET", SECRETS + "/wildcard-tls", conn=conn)
                self.assertEqual(status, 200)
                self.assertFalse(resp.will_close)
        finally:
            conn.close()


    # -- leases ----------------------------------------------------------------------------------

    def lease(self, holder, **spec):
        body = {"apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
                "metadata": {"name": "certcast"},
                "spec": {"holderIdentity": holder, "leaseDurationSeconds": 15,
                         "acquireTime": "2026-12-03T10:00:00.123456Z",
                         "renewTime": "2026-12-03T10:00:00.123456Z", "leaseTransitions": 0}}
        body["spec"].update(spec)
        return body

    def test_lease_lifecycle_with_optimistic_concurrency(self):
        self.addCleanup(self.admin, "DELETE", LEASES + "/certcast")
        status, _, created = self.call("POST", LEASES, self.lease("a_1"), token="server-token")
        self.assertEqual(status, 201, created)
        self.assertEqual(created["kind"], "Lease")
        self.assertEqual(created["apiVersion"], "coordination.k8s.io/v1")
        self.assertEqual(created["metadata"]["namespace"], "certcast")
        self.assertEqual(created["spec"]["holderIdentity"], "a_1")
        status, _, body = self.call("POST", LEASES, self.lease("b_2"), token="server-token")
        self.assertEqual((status, body["reason"]), (409, "AlreadyExists"))
        self.assertEqual(body["message"],
                         'leases.coordination.k8s.io "certcast" already exists')
        status, _, got = self.call("GET", LEASES + "/certcast", token="server-token")
        self.assertEqual(got, created)
        # Renewal with the current resourceVersion succeeds and moves it.
        renewed = json.loads(json.dumps(got))
        renewed["spec"]["renewTime"] = "2026-12-03T10:00:02.000001Z"
        status, _, renewed = self.call("PUT", LEASES + "/certcast", renewed, token="server-token")
        self.assertEqual(status, 200, renewed)
        self.assertGreater(int(renewed["metadata"]["resourceVersion"]),
                           int(got["metadata"]["resourceVersion"]))
        # A candidate that read the Lease before the renewal cannot take it over.
        stale = json.loads(json.dumps(got))
        stale["spec"].update(holderIdentity="b_2", leaseTransitions=1)
        status, _, body = self.call("PUT", LEASES + "/certcast", stale, token="server-token")
        self.assertEqual((status, body["reason"]), (409, "Conflict"))
        self.assertEqual(body["message"],
                         'Operation cannot be fulfilled on leases.coordination.k8s.io "certcast": '
                         'the object has been modified; please apply your changes to the latest '
                         'version and try again')
        self.assertEqual(body["details"], {"name": "certcast", "group": "coordination.k8s.io",
                                           "kind": "leases"})
        status, _, got = self.call("GET", LEASES + "/certcast", token="server-token")
        self.assertEqual(got["spec"]["holderIdentity"], "a_1")
        status, _, _ = self.admin("DELETE", LEASES + "/certcast")
        self.assertEqual(status, 200)
        status, _, body = self.call("GET", LEASES + "/certcast", token="server-token")
        self.assertEqual(status, 404)
        self.assertEqual(body["message"], 'leases.coordination.k8s.io "certcast" not found')

    def test_lease_validation_and_micro_time(self):
        self.addCleanup(self.admin, "DELETE", LEASES + "/certcast")
        status, _, body = self.admin("POST", LEASES, self.lease("a", leaseDurationSeconds=0))
        self.assertEqual((status, body["reason"]), (422, "Invalid"))
        self.assertEqual(body["message"], 'Lease.coordination.k8s.io "certcast" is invalid: '
                                          'spec.leaseDurationSeconds: Invalid value: 0: must be '
                                          'greater than 0')
        status, _, body = self.admin("POST", LEASES, self.lease("a", leaseTransitions=-1))
        self.assertEqual(status, 422)
        status, _, body = self.admin("POST", LEASES, self.lease("a", renewTime="yesterday"))
        self.assertEqual((status, body["reason"]), (400, "BadRequest"))
        status, _, body = self.admin("POST", LEASES, self.lease("a", leaseDurationSeconds="15"))
        self.assertEqual(status, 400)
        # MicroTime comes back in UTC with six fractional digits.
        status, _, body = self.admin("POST", LEASES, self.lease(
            "a", renewTime="2026-12-03T11:00:00.5+01:00", acquireTime="2026-12-03T10:00:00Z"))
        self.assertEqual(status, 201, body)
        self.assertEqual(body["spec"]["renewTime"], "2026-12-03T10:00:00.500000Z")
        self.assertEqual(body["spec"]["acquireTime"], "2026-12-03T10:00:00.000000Z")

    def test_lease_rbac_by_name(self):
        self.addCleanup(self.admin, "DELETE", LEASES + "/other")
        status, _, _ = self.call("POST", LEASES, dict(self.lease("a"), metadata={"name": "other"}),
                                 token="server-token")
        self.assertEqual(status, 201)  # create is never limited by name
        status, _, body = self.call("GET", LEASES + "/other", token="server-token")
        self.assertEqual(status, 403)
        self.assertTrue(body["message"].startswith(
            'leases.coordination.k8s.io "other" is forbidden: User "%s" cannot get resource '
            '"leases" in API group "coordination.k8s.io" in the namespace "certcast"'
            % SERVER_SA), body["message"])
        status, _, _ = self.call("GET", LEASES + "/certcast", token="client-token")
        self.assertEqual(status, 403)

    def test_watch_by_label_selector_resumes_from_resource_version(self):
        selector = "labelSelector=certcast.io%2Fstore%3Dreplicas"
        start = self.current_rv()
        state = tls_secret("state-a")
        state["metadata"]["labels"] = {"certcast.io/store": "replicas"}
        status, _, a = self.admin("POST", SECRETS, state)
        self.assertEqual(status, 201)
        self.created.append("state-a")
        self.create("not-state")
        resp = self.open_watch("resourceVersion=%d&%s&timeoutSeconds=5" % (start, selector),
                               token="admin-token")
        ev = self.next_event(resp)
        self.assertEqual((ev["type"], ev["object"]["metadata"]["name"]), ("ADDED", "state-a"))
        resume = ev["object"]["metadata"]["resourceVersion"]
        # A write that loses the compare-and-swap is not an event.
        stale = json.loads(json.dumps(a))
        a["data"]["tls.crt"] = b64("cert-2")
        status, _, a = self.admin("PUT", SECRETS + "/state-a", a)
        self.assertEqual(status, 200)
        stale["data"]["tls.crt"] = b64("cert-3")
        status, _, _ = self.admin("PUT", SECRETS + "/state-a", stale)
        self.assertEqual(status, 409)
        ev = self.next_event(resp)
        self.assertEqual((ev["type"], ev["object"]["data"]["tls.crt"]), ("MODIFIED", b64("cert-2")))
        # Resuming from the first event's resourceVersion replays only what came after it.
        resp = self.open_watch("resourceVersion=%s&%s&timeoutSeconds=1" % (resume, selector),
                               token="admin-token")
        ev = self.next_event(resp)
        self.assertEqual((ev["type"], ev["object"]["metadata"]["resourceVersion"]),
                         ("MODIFIED", a["metadata"]["resourceVersion"]))
        self.assertIsNone(self.next_event(resp))
        # Losing the label is a DELETED event for this watch.
        resp = self.open_watch("resourceVersion=%s&%s&timeoutSeconds=5"
                               % (a["metadata"]["resourceVersion"], selector), token="admin-token")
        a["metadata"]["labels"] = {}
        status, _, a = self.admin("PUT", SECRETS + "/state-a", a)
        ev = self.next_event(resp)
        self.assertEqual((ev["type"], ev["object"]["metadata"]["name"]), ("DELETED", "state-a"))

    # -- watch -----------------------------------------------------------------------------------

    def test_watch_replays_history_then_streams(self):
        start = self.current_rv()
        obj = self.create("watched")
        obj["data"]["tls.crt"] = b64("cert-2")
        status, _, obj = self.admin("PUT", SECRETS + "/watched", obj)
        self.assertEqual(status, 200)
        self.create("unrelated")
        resp = self.open_watch("resourceVersion=%d&fieldSelector=metadata.name%%3Dwatched"
                               "&timeoutSeconds=5" % start, token="admin-token")
        self.assertEqual(resp.status, 200)
        self.assertEqual(resp.getheader("Content-Type"), "application/json")
        self.assertEqual(resp.getheader("Transfer-Encoding"), "chunked")
        ev = self.next_event(resp)
        self.assertEqual(ev["type"], "ADDED")
        self.assertEqual(ev["object"]["kind"], "Secret")
        ev = self.next_event(resp)
        self.assertEqual(ev["type"], "MODIFIED")
        self.assertEqual(ev["object"]["metadata"]["resourceVersion"],
                         obj["metadata"]["resourceVersion"])
        # Live events; the unrelated secret never shows up.
        obj["data"]["tls.crt"] = b64("cert-3")
        status, _, obj = self.admin("PUT", SECRETS + "/watched", obj)
        ev = self.next_event(resp)
        self.assertEqual((ev["type"], ev["object"]["data"]["tls.crt"]), ("MODIFIED", b64("cert-3")))
        status, _, _ = self.admin("DELETE", SECRETS + "/watched")
        self.assertEqual(status, 200)
        self.created.remove("watched")
        ev = self.next_event(resp)
        self.assertEqual(ev["type"], "DELETED")
        self.assertGreater(int(ev["object"]["metadata"]["resourceVersion"]),
                           int(obj["metadata"]["resourceVersion"]))

    def test_watch_without_resource_version_starts_with_the_current_state(self):
        resp = self.open_watch("fieldSelector=metadata.name%3Dwildcard-tls&timeoutSeconds=1")
        ev = self.next_event(resp)
        self.assertEqual((ev["type"], ev["object"]["metadata"]["name"]), ("ADDED", "wildcard-tls"))
        self.assertIsNone(self.next_event(resp))

    def test_bookmarks_and_timeout(self):
        self.call("POST", "/_control/bookmark_interval", {"seconds": 0.2}, token=None)
        rv = self.current_rv()
        t0 = time.monotonic()
        resp = self.open_watch("resourceVersion=%d&allowWatchBookmarks=true&timeoutSeconds=1"
                               "&fieldSelector=metadata.name%%3Dwildcard-tls" % rv)
        events = []
        while True:
            ev = self.next_event(resp)
            if ev is None:
                break
            events.append(ev)
        elapsed = time.monotonic() - t0
        self.assertGreaterEqual(elapsed, 0.9)
        self.assertLess(elapsed, 3)
        self.assertGreaterEqual(len(events), 3)
        for ev in events:
            self.assertEqual(ev, {"type": "BOOKMARK", "object": {
                "kind": "Secret", "apiVersion": "v1",
                "metadata": {"resourceVersion": ev["object"]["metadata"]["resourceVersion"],
                             "creationTimestamp": None}}})
            self.assertGreaterEqual(int(ev["object"]["metadata"]["resourceVersion"]), rv)
        # Without allowWatchBookmarks there are none.
        resp = self.open_watch("resourceVersion=%d&timeoutSeconds=1"
                               "&fieldSelector=metadata.name%%3Dwildcard-tls" % rv)
        self.assertIsNone(self.next_event(resp))

    def test_expired_resource_version(self):
        self.call("POST", "/_control/expire", {"on": True}, token=None)
        rv = self.current_rv()
        resp = self.open_watch("resourceVersion=%d&fieldSelector=metadata.name%%3Dwildcard-tls"
                               % rv)
        self.assertEqual(resp.status, 200)
        ev = self.next_event(resp)
        self.assertEqual(ev, {"type": "ERROR", "object": {
            "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
            "message": "too old resource version: %d (%d)" % (rv, rv), "reason": "Expired",
            "code": 410}})
        self.assertIsNone(self.next_event(resp))
        self.call("POST", "/_control/expire", {"on": False}, token=None)
        # Older than the history: compaction makes every earlier version too old.
        self.create("compacted")
        status, _, state = self.call("POST", "/_control/compact", {}, token=None)
        now = int(state["resourceVersion"])
        resp = self.open_watch("resourceVersion=%d&fieldSelector=metadata.name%%3Dwildcard-tls"
                               % (now - 1))
        ev = self.next_event(resp)
        self.assertEqual(ev["object"]["message"],
                         "too old resource version: %d (%d)" % (now - 1, now))
        self.assertIsNone(self.next_event(resp))
        resp = self.open_watch("resourceVersion=%d&timeoutSeconds=1"
                               "&fieldSelector=metadata.name%%3Dwildcard-tls" % now)
        self.assertIsNone(self.next_event(resp))

    def test_drop_watches(self):
        resp = self.open_watch("resourceVersion=%d&fieldSelector=metadata.name%%3Dwildcard-tls"
                               % self.current_rv())
        self.assertEqual(resp.status, 200)
        watches = self.wait_for_watches(1)
        self.assertEqual(watches[0]["user"], CLIENT)
        status, _, body = self.call("POST", "/_control/drop_watches", {}, token=None)
        self.assertEqual(body["dropped"], 1)
        with self.assertRaises((ConnectionError, ssl.SSLError)):
            self.next_event(resp)

    # -- failure injection -----------------------------------------------------------------------

    def test_fail_injection_count(self):
        self.call("POST", "/_control/fail", {"status": 503, "count": 2, "method": "PUT",
                                             "path_prefix": SECRETS}, token=None)
        status, _, obj = self.call("GET", SECRETS + "/wildcard-tls")
        self.assertEqual(status, 200)
        for _ in range(2):
            status, _, body = self.call("PUT", SECRETS + "/wildcard-tls", obj)
            self.assertEqual(status, 503)
            self.assertEqual(body, {"kind": "Status", "apiVersion": "v1", "metadata": {},
                                    "status": "Failure",
                                    "message": "the server is currently unable to handle the "
                                               "request",
                                    "reason": "ServiceUnavailable", "code": 503})
        status, _, _ = self.call("PUT", SECRETS + "/wildcard-tls", obj)
        self.assertEqual(status, 200)
        # count -1: until cleared.
        self.call("POST", "/_control/fail", {"status": 500, "count": -1, "verb": "get"},
                  token=None)
        for _ in range(3):
            self.assertEqual(self.call("GET", SECRETS + "/wildcard-tls")[0], 500)
        self.call("DELETE", "/_control/fail", token=None)
        self.assertEqual(self.call("GET", SECRETS + "/wildcard-tls")[0], 200)
        # close: the connection drops without an answer.
        self.call("POST", "/_control/fail", {"close": True, "count": 1}, token=None)
        with self.assertRaises((http.client.RemoteDisconnected, ConnectionError, ssl.SSLError)):
            self.call("GET", SECRETS + "/wildcard-tls")
        self.assertEqual(self.call("GET", SECRETS + "/wildcard-tls")[0], 200)

    def test_fail_injection_for_one_user(self):
        # One replica cut off from the API while the others reach it.
        self.call("POST", "/_control/fail", {"status": 503, "count": -1, "user": CLIENT},
                  token=None)
        self.assertEqual(self.call("GET", SECRETS + "/wildcard-tls")[0], 503)
        self.assertEqual(self.admin("GET", SECRETS + "/wildcard-tls")[0], 200)
        self.call("DELETE", "/_control/fail", token=None)
        self.assertEqual(self.call("GET", SECRETS + "/wildcard-tls")[0], 200)

    def test_conflict_injection(self):
        self.call("POST", "/_control/conflict", {"count": 1}, token=None)
        status, _, obj = self.call("GET", SECRETS + "/wildcard-tls")
        status, _, body = self.call("PATCH", SECRETS + "/wildcard-tls",
                                    {"metadata": {"annotations": {"x": "1"}}},
                                    content_type="application/merge-patch+json")
        self.assertEqual(status, 409)
        self.assertEqual(body["reason"], "Conflict")
        status, _, _ = self.call("PUT", SECRETS + "/wildcard-tls", obj)
        self.assertEqual(status, 200)

    def test_down(self):
        self.call("POST", "/_control/down", {"on": True}, token=None)
        with self.assertRaises((http.client.RemoteDisconnected, ConnectionError, ssl.SSLError)):
            self.call("GET", SECRETS + "/wildcard-tls")
        self.call("POST", "/_control/down", {"on": False}, token=None)
        self.assertEqual(self.call("GET", SECRETS + "/wildcard-tls")[0], 200)

    def test_request_log(self):
        self.call("DELETE", "/_control/requests", token=None)
        self.call("GET", SECRETS + "/wildcard-tls")
        self.call("PUT", SECRETS + "/not-mine", tls_secret("not-mine"))
        self.call("GET", SECRETS + "?fieldSelector=metadata.name%3Dwildcard-tls")
        _, _, log = self.call("GET", "/_control/requests", token=None)
        self.assertEqual(log, [
            {"method": "GET", "path": SECRETS + "/wildcard-tls", "query": "", "user": CLIENT,
             "status": 200, "verb": "get"},
            {"method": "PUT", "path": SECRETS + "/not-mine", "query": "", "user": CLIENT,
             "status": 403, "verb": "update"},
            {"method": "GET", "path": SECRETS, "query": "fieldSelector=metadata.name%3Dwildcard-tls",
             "user": CLIENT, "status": 200, "verb": "list"},
        ])
        writes = [r for r in log if r["method"] in ("POST", "PUT", "PATCH", "DELETE")
                  and r["status"] < 300]
        self.assertEqual(writes, [])
        _, _, objects = self.call("GET", "/_control/objects?resource=secrets&namespace=tenant-a",
                                  token=None)
        self.assertIn("wildcard-tls", [o["metadata"]["name"] for o in objects])

    # -- TokenReview, Deployments ---------------------------------------------------------------

    def review(self, token, audiences, as_token="server-token"):
        spec = {"token": token}
        if audiences is not None:
            spec["audiences"] = audiences
        return self.call("POST", "/apis/authentication.k8s.io/v1/tokenreviews",
                         {"apiVersion": "authentication.k8s.io/v1", "kind": "TokenReview",
                          "spec": spec}, token=as_token)

    def test_token_review(self):
        status, _, body = self.review("projected-a", ["certcast"])
        self.assertEqual(status, 201)
        self.assertEqual(body["kind"], "TokenReview")
        self.assertEqual(body["status"], {
            "authenticated": True,
            "user": {"username": CLIENT, "groups": ["system:serviceaccounts",
                                                    "system:serviceaccounts:tenant-a",
                                                    "system:authenticated"]},
            "audiences": ["certcast"]})
        status, _, body = self.review("projected-a", ["other"])
        self.assertEqual(status, 201)
        self.assertNotIn("authenticated", body["status"])  # false is omitted, like the real API
        self.assertEqual(body["status"]["user"], {})
        self.assertIn("invalid bearer token", body["status"]["error"])
        status, _, body = self.review("unknown", ["certcast"])
        self.assertNotIn("authenticated", body["status"])
        self.assertTrue(body["status"]["error"])
        # No audiences: the API server's own audiences apply, which a certcast token lacks.
        status, _, body = self.review("projected-a", None)
        self.assertNotIn("authenticated", body["status"])
        status, _, body = self.review("projected-a", ["certcast"], as_token="client-token")
        self.assertEqual(status, 403)
        self.assertEqual(body["message"],
                         'tokenreviews.authentication.k8s.io is forbidden: User "%s" cannot '
                         'create resource "tokenreviews" in API group "authentication.k8s.io" '
                         'at the cluster scope' % CLIENT)
        self.assertEqual(body["details"], {"group": "authentication.k8s.io",
                                           "kind": "tokenreviews"})

    def test_deployment_patch(self):
        path = "/apis/apps/v1/namespaces/tenant-a/deployments/web"
        status, _, before = self.call("GET", path)
        self.assertEqual(status, 200)
        self.assertEqual(before["apiVersion"], "apps/v1")
        stamp = "2025-01-01T00:00:%02dZ" % (int(time.time()) % 60)
        status, _, after = self.call(
            "PATCH", path,
            {"spec": {"template": {"metadata": {"annotations": {
                "kubectl.kubernetes.io/restartedAt": stamp}}}}},
            content_type="application/strategic-merge-patch+json")
        self.assertEqual(status, 200, after)
        self.assertEqual(after["spec"]["template"]["metadata"]["annotations"],
                         {"kubectl.kubernetes.io/restartedAt": stamp})
        self.assertEqual(after["spec"]["template"]["spec"], before["spec"]["template"]["spec"])
        self.assertEqual(after["metadata"]["generation"], before["metadata"]["generation"] + 1)
        status, _, body = self.call("PATCH", "/apis/apps/v1/namespaces/tenant-a/deployments/db",
                                    {"spec": {}},
                                    content_type="application/merge-patch+json")
        self.assertEqual(status, 403)
        self.assertEqual(body["details"], {"name": "db", "group": "apps", "kind": "deployments"})
        self.assertTrue(body["message"].startswith('deployments.apps "db" is forbidden'))

    # -- process ---------------------------------------------------------------------------------

    def test_sigterm_and_restart_on_the_same_port(self):
        proc, port = start_server(self.tmp)
        try:
            conn = http.client.HTTPSConnection("127.0.0.1", port, context=self.ctx, timeout=5)
            conn.request("GET", SECRETS + "?watch=1&fieldSelector=metadata.name%3Dwildcard-tls",
                         headers={"Authorization": "Bearer client-token"})
            self.assertEqual(conn.getresponse().status, 200)  # an open watch does not block exit
            proc.send_signal(signal.SIGTERM)
            self.assertEqual(proc.wait(5), 0)
            conn.close()
        finally:
            if proc.poll() is None:
                proc.kill()
            proc.stderr.close()
        proc, port2 = start_server(self.tmp, port=port)
        try:
            self.assertEqual(port2, port)
            conn = http.client.HTTPSConnection("127.0.0.1", port, context=self.ctx, timeout=5)
            conn.request("GET", "/version")
            self.assertEqual(conn.getresponse().status, 200)
            conn.close()
        finally:
            proc.terminate()
            proc.wait(5)
            proc.stderr.close()

    def test_data_file_keeps_objects_across_a_restart(self):
        data = os.path.join(self.tmp, "data.json")
        proc, port = start_server(self.tmp, extra=["--data-file", data])
        try:
            conn = http.client.HTTPSConnection("127.0.0.1", port, context=self.ctx, timeout=5)
            def call(method, path, body=None):
                conn.request(method, path, body=json.dumps(body).encode() if body else None,
                             headers={"Authorization": "Bearer admin-token",
                                      "Content-Type": "application/json"})
                resp = conn.getresponse()
                return resp.status, json.loads(resp.read())
            status, lease = call("POST", LEASES, self.lease("a_1"))
            self.assertEqual(status, 201)
            conn.close()
            proc.kill()  # as abrupt as it gets: every answered write must be on disk
            proc.wait(5)
            proc.stderr.close()
            proc, port = start_server(self.tmp, port=port, extra=["--data-file", data])
            conn = http.client.HTTPSConnection("127.0.0.1", port, context=self.ctx, timeout=5)
            status, got = call("GET", LEASES + "/certcast")
            self.assertEqual((status, got), (200, lease))
            # resourceVersions keep growing; a watch from before the restart is too old.
            status, secret = call("POST", SECRETS, tls_secret("after-restart"))
            self.assertEqual(status, 201)
            self.assertGreater(int(secret["metadata"]["resourceVersion"]),
                               int(lease["metadata"]["resourceVersion"]))
            conn.request("GET", SECRETS + "?watch=1&resourceVersion=%s"
                         % lease["metadata"]["resourceVersion"],
                         headers={"Authorization": "Bearer admin-token"})
            resp = conn.getresponse()
            self.assertEqual(self.next_event(resp)["object"]["code"], 410)
            conn.close()
        finally:
            proc.kill()
            proc.wait(5)
            proc.stderr.close()


if __name__ == "__main__":
    unittest.main()
