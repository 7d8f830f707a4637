#!/usr/bin/env python3
"""A fake Kubernetes API server for certcast's tests (Python 3 standard library only).

It serves, over HTTPS/1.1 with keep-alive, the small part of the API that certcast uses, and it
tries to behave like the real kube-apiserver where a client could notice the difference:

* core/v1 Secrets and ConfigMaps, apps/v1 Deployments, coordination.k8s.io/v1 Leases: get, list,
  watch, create, update (PUT), patch (merge, strategic merge, JSON patch, a simplified server-side
  apply), delete;
* rbac.authorization.k8s.io/v1 Roles and RoleBindings (namespaced, the same verbs): a stored
  RoleBinding to a stored Role in its namespace grants like the config's "roles" (ClusterRole
  references grant nothing: the fake has no ClusterRoles as objects);
* core/v1 Namespaces (cluster-scoped, the same verbs; the API adds the immutable label
  kubernetes.io/metadata.name; deletion is immediate, without the Terminating phase);
* POST /apis/authentication.k8s.io/v1/tokenreviews;
* bearer-token authentication and RBAC-like authorization (resourceNames restrict only requests
  that name an object; list/watch name one only through fieldSelector=metadata.name=NAME;
  create is never matched by a rule with resourceNames);
* one global resourceVersion counter, optimistic concurrency, no-op updates that write nothing,
  a bounded event history for watches, BOOKMARK events, 410 Expired, 504 for too-new versions;
* Status bodies, reasons, messages and details shaped like the real ones;
* with --data-file, objects and the resourceVersion counter survive a restart (as the real API
  server's objects survive in etcd); the watch history does not, so old resourceVersions get 410.

Tests drive failures through an unauthenticated control API under /_control/ (see CONTROL_HELP).

Usage: fake_kube_api.py --cert FILE --key FILE --config FILE [--host 127.0.0.1] [--port 0]
                        [--data-file FILE]
After binding it prints exactly one line, "listening on port N", to stderr.
"""

import argparse
import base64
import collections
import copy
import datetime
import json
import os
import re
import signal
import socket
import socketserver
import ssl
import sys
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, unquote, urlsplit

CONTROL_HELP = """control API (no authentication), all bodies JSON:
  POST   /_control/fail {"status":503,"count":2,"method":"PUT","path_prefix":"/api/...",
                         "verb":"update","user":"system:serviceaccount:ns:sa","message":"...",
                         "reason":"...","retry_after_seconds":1,"close":false,
                         "delay_seconds":0}   count -1 = until cleared; "user" cuts one client off
  GET    /_control/fail          list the pending failure rules
  DELETE /_control/fail          clear them
  POST   /_control/conflict {"count":N,"path_prefix":"...","bump":false}
  DELETE /_control/conflict
  POST   /_control/drop_watches  close every open watch abruptly (no terminating chunk)
  GET    /_control/watches       the open watches
  POST   /_control/expire {"on":true}   every watch from an explicit resourceVersion gets 410
  POST   /_control/compact       forget the event history (older versions become too old)
  POST   /_control/bookmark_interval {"seconds":0.2}
  GET    /_control/requests      [{method,path,query,user,status,verb[,pod]}] of every API request
  DELETE /_control/requests
  GET    /_control/objects[?resource=secrets&namespace=NS]
  POST   /_control/down {"on":true}     close every non-control connection immediately
  GET    /_control/state         counters and switches
"""

DEFAULT_API_AUDIENCES = ["https://kubernetes.default.svc.cluster.local"]
DEFAULT_HISTORY_LIMIT = 1000
DEFAULT_WATCH_TIMEOUT = 300
MAX_BODY_BYTES = 3 * 1024 * 1024
MAX_SECRET_BYTES = 1024 * 1024
MAX_ANNOTATIONS_BYTES = 256 * 1024
TOO_LARGE_RV_WAIT_SECONDS = 3.0

REASONS = {
    400: "BadRequest", 401: "Unauthorized", 403: "Forbidden", 404: "NotFound",
    405: "MethodNotAllowed", 406: "NotAcceptable", 409: "Conflict", 410: "Expired",
    413: "RequestEntityTooLarge", 415: "UnsupportedMediaType", 422: "Invalid",
    429: "TooManyRequests", 500: "InternalError", 503: "ServiceUnavailable", 504: "Timeout",
}
DEFAULT_MESSAGES = {
    400: "the server rejected our request for an unknown reason",
    401: "Unauthorized",
    403: "forbidden",
    404: "the server could not find the requested resource",
    409: "the server reported a conflict",
    429: "Too many requests, please try again later.",
    500: "Internal error occurred: injected failure",
    502: "the server received an invalid response from an upstream server",
    503: "the server is currently unable to handle the request",
    504: "Timeout: request did not complete within requested timeout - context deadline exceeded",
}


# ----------------------------------------------------------------------------------------------
# Status bodies and errors


def make_details(name=None, group=None, kind=None, uid=None, causes=None, retry_after=None):
    """StatusDetails with Go's field order and omitempty behaviour."""
    d = {}
    if name:
        d["name"] = name
    if group:
        d["group"] = group
    if kind:
        d["kind"] = kind
    if uid:
        d["uid"] = uid
    if causes:
        d["causes"] = causes
    if retry_after:
        d["retryAfterSeconds"] = retry_after
    return d


def make_status(code, reason, message, details=None, status="Failure"):
    body = {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": status}
    if message:
        body["message"] = message
    if reason:
        body["reason"] = reason
    if details is not None:
        body["details"] = details
    if code:
        body["code"] = code
    return body


class ApiError(Exception):
    def __init__(self, code, reason, message, details=None, headers=None):
        super().__init__(message)
        self.code = code
        self.body = make_status(code, reason, message, details)
        self.headers = headers or {}


def bad_request(message):
    return ApiError(400, "BadRequest", message)


def not_found(rt, name):
    return ApiError(404, "NotFound", '%s "%s" not found' % (rt.qualified, name),
                    make_details(name=name, group=rt.group, kind=rt.plural))


def already_exists(rt, name):
    return ApiError(409, "AlreadyExists", '%s "%s" already exists' % (rt.qualified, name),
                    make_details(name=name, group=rt.group, kind=rt.plural))


MODIFIED_MESSAGE = ("the object has been modified; please apply your changes to the latest "
                    "version and try again")


def conflict(rt, name, what=MODIFIED_MESSAGE):
    return ApiError(409, "Conflict",
                    'Operation cannot be fulfilled on %s "%s": %s' % (rt.qualified, name, what),
                    make_details(name=name, group=rt.group, kind=rt.plural))


def resource_not_found():
    return ApiError(404, "NotFound", "the server could not find the requested resource", {})


def method_not_allowed():
    return ApiError(405, "MethodNotAllowed",
                    "the server does not allow this method on the requested resource", {})


def unsupported_media(accepted):
    return ApiError(415, "UnsupportedMediaType",
                    "the body of the request was in an unknown format - accepted media types "
                    "include: " + ", ".join(accepted), {})


class FieldError:
    """One field.Error of k8s.io/apimachinery/pkg/util/validation/field."""

    def __init__(self, etype, field, value=None, detail=""):
        self.etype, self.field, self.value, self.detail = etype, field, value, detail

    def body(self):
        if self.etype == "Required":
            text = "Required value"
        elif self.etype == "Invalid":
            text = "Invalid value: " + go_quote(self.value)
        elif self.etype == "Forbidden":
            text = "Forbidden"
        elif self.etype == "TooLong":
            text = "Too long"
        elif self.etype == "NotSupported":
            text = "Unsupported value: " + go_quote(self.value)
        else:
            text = self.etype
        if self.detail:
            text += ": " + self.detail
        return text

    def cause(self):
        return {"reason": "FieldValue" + self.etype, "message": self.body(), "field": self.field}

    def __str__(self):
        return "%s: %s" % (self.field, self.body())


def go_quote(value):
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return "null"
    return str(value)


def invalid(rt, name, errors):
    if len(errors) == 1:
        agg = str(errors[0])
    else:
        agg = "[" + ", ".join(str(e) for e in errors) + "]"
    return ApiError(422, "Invalid", '%s "%s" is invalid: %s' % (rt.qualified_kind, name, agg),
                    make_details(name=name, group=rt.group, kind=rt.kind,
                                 causes=[e.cause() for e in errors]))


# ----------------------------------------------------------------------------------------------
# JSON encoding the way the API server does it (compact, Go's HTML escaping, trailing newline)


def dumps(obj):
    text = json.dumps(obj, ensure_ascii=False, separators=(",", ":"))
    text = (text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")
            .replace("\u2028", "\\u2028").replace("\u2029", "\\u2029"))
    return (text + "\n").encode("utf-8")


def now_rfc3339():
    return datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


# ----------------------------------------------------------------------------------------------
# Validation helpers (apimachinery's validation package, simplified messages where harmless)

DNS1123_LABEL = r"[a-z0-9]([-a-z0-9]*[a-z0-9])?"
DNS1123_SUBDOMAIN_RE = re.compile(r"^%s(\.%s)*$" % (DNS1123_LABEL, DNS1123_LABEL))
QUALIFIED_NAME_RE = re.compile(r"^([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]$")
LABEL_VALUE_RE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$")
CONFIG_KEY_RE = re.compile(r"^[-._a-zA-Z0-9]+$")
B64_ALPHABET = set("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/")

SUBDOMAIN_MSG = ("a lowercase RFC 1123 subdomain must consist of lower case alphanumeric "
                 "characters, '-' or '.', and must start and end with an alphanumeric character "
                 "(e.g. 'example.com', regex used for validation is "
                 "'[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')")
QUALIFIED_NAME_MSG = ("name part must consist of alphanumeric characters, '-', '_' or '.', and "
                      "must start and end with an alphanumeric character (e.g. 'MyName',  or "
                      "'my.name',  or '123-abc', regex used for validation is "
                      "'([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]')")
LABEL_VALUE_MSG = ("a valid label must be an empty string or consist of alphanumeric characters, "
                   "'-', '_' or '.', and must start and end with an alphanumeric character (e.g. "
                   "'MyValue',  or 'my_value',  or '12345', regex used for validation is "
                   "'(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?')")
CONFIG_KEY_MSG = ("a valid config key must consist of alphanumeric characters, '-', '_' or '.' "
                  "(e.g. 'key.name',  or 'KEY_NAME',  or 'key-name', regex used for validation "
                  "is '[-._a-zA-Z0-9]+')")


def subdomain_errors(value):
    msgs = []
    if len(value) > 253:
        msgs.append("must be no more than 253 characters")
    if not DNS1123_SUBDOMAIN_RE.match(value):
        msgs.append(SUBDOMAIN_MSG)
    return msgs


def qualified_name_errors(value):
    parts = value.split("/")
    if len(parts) == 1:
        name = parts[0]
    elif len(parts) == 2:
        prefix, name = parts
        if not prefix:
            return ["prefix part must be non-empty"]
        errs = ["prefix part " + m for m in subdomain_errors(prefix)]
        if errs:
            return errs
    else:
        return [QUALIFIED_NAME_MSG.replace("name part ", "a qualified name ")]
    if not name:
        return ["name part must be non-empty"]
    if len(name) > 63:
        return ["name part must be no more than 63 characters"]
    if not QUALIFIED_NAME_RE.match(name):
        return [QUALIFIED_NAME_MSG]
    return []


def base64_error_offset(text):
    """None if Go's base64.StdEncoding accepts text, else the offset Go would report (approx)."""
    stripped = text.replace("\r", "").replace("\n", "")
    for i, ch in enumerate(stripped):
        if ch == "=":
            break
        if ch not in B64_ALPHABET:
            return i
    try:
        base64.b64decode(stripped, validate=True)
    except Exception:  # wrong padding or length
        return max(0, len(stripped) - (len(stripped) % 4 or 4))
    return None


def validate_object_meta(meta, is_create, namespaced=True):
    errs = []
    name = meta.get("name", "")
    if is_create:
        if not name and not meta.get("generateName"):
            errs.append(FieldError("Required", "metadata.name", None,
                                   "name or generateName is required"))
        elif name:
            for m in subdomain_errors(name):
                errs.append(FieldError("Invalid", "metadata.name", name, m))
    labels = meta.get("labels") or {}
    if not isinstance(labels, dict):
        errs.append(FieldError("Invalid", "metadata.labels", str(labels), "must be a map"))
        labels = {}
    for k, v in labels.items():
        for m in qualified_name_errors(k):
            errs.append(FieldError("Invalid", "metadata.labels", k, m))
        if not isinstance(v, str):
            errs.append(FieldError("Invalid", "metadata.labels", str(v), "must be a string"))
            continue
        if len(v) > 63:
            errs.append(FieldError("Invalid", "metadata.labels", v,
                                   "must be no more than 63 characters"))
        elif not LABEL_VALUE_RE.match(v):
            errs.append(FieldError("Invalid", "metadata.labels", v, LABEL_VALUE_MSG))
    annotations = meta.get("annotations") or {}
    if not isinstance(annotations, dict):
        errs.append(FieldError("Invalid", "metadata.annotations", str(annotations),
                               "must be a map"))
        annotations = {}
    total = 0
    for k, v in annotations.items():
        for m in qualified_name_errors(k):
            errs.append(FieldError("Invalid", "metadata.annotations", k.lower(), m))
        total += len(k) + len(str(v))
    if total > MAX_ANNOTATIONS_BYTES:
        errs.append(FieldError("TooLong", "metadata.annotations", None,
                               "must have at most %d bytes" % MAX_ANNOTATIONS_BYTES))
    return errs


# ----------------------------------------------------------------------------------------------
# Resource types

META_ORDER = ["name", "generateName", "namespace", "selfLink", "uid", "resourceVersion",
              "generation", "creationTimestamp", "deletionTimestamp", "deletionGracePeriodSeconds",
              "labels", "annotations", "ownerReferences", "finalizers", "managedFields"]


def order_meta(meta):
    out = {}
    for k in META_ORDER:
        if k in meta and meta[k] not in (None, {}, [], ""):
            out[k] = meta[k]
    return out


class ResourceType:
    cluster_scoped = False

    def __init__(self, group, version, plural, kind, field_labels=()):
        self.group, self.version, self.plural, self.kind = group, version, plural, kind
        self.api_version = version if not group else group + "/" + version
        self.qualified = plural if not group else plural + "." + group
        self.qualified_kind = kind if not group else kind + "." + group
        self.field_labels = ("metadata.name", "metadata.namespace") + tuple(field_labels)

    # Hooks specialised per kind.
    known_fields = None  # None: keep every top-level field

    def normalize(self, body, warnings, strict):
        """Decodes a request body into a stored object (the "typed decoding" step)."""
        if not isinstance(body, dict):
            raise bad_request("%s in version \"%s\" cannot be handled as a %s: json: cannot "
                              "unmarshal %s into Go value of type struct"
                              % (self.kind, self.version, self.kind, type(body).__name__))
        kind = body.get("kind")
        if kind not in (None, "", self.kind):
            raise bad_request("%s in version \"%s\" cannot be handled as a %s: no kind \"%s\" is "
                              "registered for version \"%s\""
                              % (self.kind, self.version, self.kind, kind,
                                 body.get("apiVersion", self.api_version)))
        api_version = body.get("apiVersion")
        if api_version not in (None, "", self.api_version):
            raise bad_request("the API version in the data (%s) does not match the expected API "
                              "version (%s)" % (api_version, self.api_version))
        meta = body.get("metadata") or {}
        if not isinstance(meta, dict):
            raise bad_request("%s in version \"%s\" cannot be handled as a %s: json: cannot "
                              "unmarshal into Go struct field %s.metadata of type v1.ObjectMeta"
                              % (self.kind, self.version, self.kind, self.kind))
        unknown = []
        for k in meta:
            if k not in META_ORDER:
                unknown.append("metadata." + k)
        if self.known_fields is not None:
            for k in body:
                if k not in self.known_fields:
                    unknown.append(k)
        if unknown:
            if strict:
                raise bad_request("strict decoding error: " + ", ".join(
                    'unknown field "%s"' % u for u in unknown))
            warnings.extend('unknown field "%s"' % u for u in unknown)
        obj = {"kind": self.kind, "apiVersion": self.api_version}
        obj["metadata"] = {k: copy.deepcopy(v) for k, v in meta.items() if k in META_ORDER}
        for k, v in body.items():
            if k in ("kind", "apiVersion", "metadata"):
                continue
            if self.known_fields is None or k in self.known_fields:
                obj[k] = copy.deepcopy(v)
        return self.normalize_kind(obj)

    def normalize_kind(self, obj):
        return obj

    def canonical(self, obj):
        """Field order and omitempty as the API server would serialise the object."""
        obj = dict(obj)
        obj["metadata"] = order_meta(obj.get("metadata") or {})
        return obj

    def validate(self, obj, old):
        return validate_object_meta(obj["metadata"], old is None)

    def prepare_update(self, obj, old):
        pass

    def prepare_create(self, obj):
        pass

    def field_value(self, obj, label):
        meta = obj.get("metadata") or {}
        if label == "metadata.name":
            return meta.get("name", "")
        if label == "metadata.namespace":
            return meta.get("namespace", "")
        return ""


class SecretType(ResourceType):
    known_fields = ("kind", "apiVersion", "metadata", "immutable", "data", "stringData", "type")

    def __init__(self):
        super().__init__("", "v1", "secrets", "Secret", field_labels=("type",))

    def normalize_kind(self, obj):
        data = obj.get("data")
        if data is None:
            data = {}
        if not isinstance(data, dict):
            raise bad_request('Secret in version "v1" cannot be handled as a Secret: json: cannot '
                              'unmarshal %s into Go struct field Secret.data of type '
                              'map[string][]uint8' % type(data).__name__)
        for k, v in list(data.items()):
            if v is None:
                data[k] = ""
                continue
            if not isinstance(v, str):
                raise bad_request('Secret in version "v1" cannot be handled as a Secret: json: '
                                  'cannot unmarshal %s into Go struct field Secret.data of type '
                                  '[]uint8' % type(v).__name__)
            off = base64_error_offset(v)
            if off is not None:
                raise bad_request('Secret in version "v1" cannot be handled as a Secret: illegal '
                                  'base64 data at input byte %d' % off)
            # The API server stores bytes and re-encodes them canonically.
            data[k] = base64.b64encode(base64.b64decode(v.replace("\r", "").replace("\n", "")))\
                .decode("ascii")
        string_data = obj.pop("stringData", None)
        if string_data is not None:
            if not isinstance(string_data, dict) or not all(
                    isinstance(v, str) for v in string_data.values()):
                raise bad_request('Secret in version "v1" cannot be handled as a Secret: json: '
                                  'cannot unmarshal into Go struct field Secret.stringData of '
                                  'type map[string]string')
            for k, v in string_data.items():
                data[k] = base64.b64encode(v.encode("utf-8")).decode("ascii")
        obj["data"] = data
        stype = obj.get("type")
        if stype in (None, ""):
            obj["type"] = "Opaque"
        elif not isinstance(stype, str):
            raise bad_request('Secret in version "v1" cannot be handled as a Secret: json: cannot '
                              'unmarshal into Go struct field Secret.type of type v1.SecretType')
        if "immutable" in obj and obj["immutable"] is not None and \
                not isinstance(obj["immutable"], bool):
            raise bad_request('Secret in version "v1" cannot be handled as a Secret: json: cannot '
                              'unmarshal into Go struct field Secret.immutable of type bool')
        return obj

    def canonical(self, obj):
        out = {"kind": "Secret", "apiVersion": "v1",
               "metadata": order_meta(obj.get("metadata") or {})}
        if obj.get("immutable") is not None:
            out["immutable"] = obj["immutable"]
        if obj.get("data"):
            out["data"] = obj["data"]
        out["type"] = obj.get("type") or "Opaque"
        return out

    def validate(self, obj, old):
        errs = validate_object_meta(obj["metadata"], old is None)
        data = obj.get("data") or {}
        total = 0
        for k, v in data.items():
            if not CONFIG_KEY_RE.match(k):
                errs.append(FieldError("Invalid", "data[%s]" % k, k, CONFIG_KEY_MSG))
            total += len(base64.b64decode(v))
        if total > MAX_SECRET_BYTES:
            errs.append(FieldError("TooLong", "data", None,
                                   "must have at most %d bytes" % MAX_SECRET_BYTES))
        stype = obj.get("type")
        if stype == "kubernetes.io/tls":
            for key in ("tls.crt", "tls.key"):
                if key not in data:
                    errs.append(FieldError("Required", "data[%s]" % key))
        elif stype == "kubernetes.io/basic-auth":
            if "username" not in data and "password" not in data:
                errs.append(FieldError("Required", "data[username]"))
        elif stype == "kubernetes.io/ssh-auth":
            if "ssh-privatekey" not in data:
                errs.append(FieldError("Required", "data[ssh-privatekey]"))
        if old is not None:
            if stype != old.get("type"):
                errs.append(FieldError("Invalid", "type", stype, "field is immutable"))
            if old.get("immutable"):
                if not obj.get("immutable"):
                    errs.append(FieldError("Forbidden", "immutable", None,
                                           "field is immutable when `immutable` is set"))
                if (obj.get("data") or {}) != (old.get("data") or {}):
                    errs.append(FieldError("Forbidden", "data", None,
                                           "field is immutable when `immutable` is set"))
        return errs

    def field_value(self, obj, label):
        if label == "type":
            return obj.get("type", "")
        return super().field_value(obj, label)


class ConfigMapType(ResourceType):
    known_fields = ("kind", "apiVersion", "metadata", "immutable", "data", "binaryData")

    def __init__(self):
        super().__init__("", "v1", "configmaps", "ConfigMap")

    def canonical(self, obj):
        out = {"kind": "ConfigMap", "apiVersion": "v1",
               "metadata": order_meta(obj.get("metadata") or {})}
        for k in ("immutable", "data", "binaryData"):
            if obj.get(k) not in (None, {}):
                out[k] = obj[k]
        return out

    def validate(self, obj, old):
        errs = validate_object_meta(obj["metadata"], old is None)
        for field in ("data", "binaryData"):
            values = obj.get(field) or {}
            if not isinstance(values, dict):
                errs.append(FieldError("Invalid", field, None, "must be a map"))
                continue
            for k in values:
                if not CONFIG_KEY_RE.match(k):
                    errs.append(FieldError("Invalid", "%s[%s]" % (field, k), k, CONFIG_KEY_MSG))
        if old is not None and old.get("immutable"):
            if (obj.get("data"), obj.get("binaryData")) != (old.get("data"),
                                                            old.get("binaryData")):
                errs.append(FieldError("Forbidden", "data", None,
                                       "field is immutable when `immutable` is set"))
        return errs


class DeploymentType(ResourceType):
    def __init__(self):
        super().__init__("apps", "v1", "deployments", "Deployment")

    def prepare_create(self, obj):
        obj["metadata"]["generation"] = 1
        obj.pop("status", None)
        obj["status"] = {}

    def prepare_update(self, obj, old):
        # The main resource ignores status; spec changes bump metadata.generation.
        if "status" in old:
            obj["status"] = copy.deepcopy(old["status"])
        else:
            obj.pop("status", None)
        generation = old["metadata"].get("generation", 1)
        if obj.get("spec") != old.get("spec"):
            generation += 1
        obj["metadata"]["generation"] = generation

    def canonical(self, obj):
        out = {"kind": "Deployment", "apiVersion": "apps/v1",
               "metadata": order_meta(obj.get("metadata") or {})}
        for k, v in obj.items():
            if k not in ("kind", "apiVersion", "metadata"):
                out[k] = v
        out.setdefault("spec", {})
        out.setdefault("status", {})
        return out

    def validate(self, obj, old):
        errs = validate_object_meta(obj["metadata"], old is None)
        spec = obj.get("spec")
        if spec is not None and not isinstance(spec, dict):
            errs.append(FieldError("Invalid", "spec", None, "must be an object"))
        return errs


MICRO_TIME_RE = re.compile(r"^(\d{4})-(\d{2})-(\d{2})T(\d{2}):(\d{2}):(\d{2})(\.\d{1,9})?"
                           r"(Z|[+-]\d{2}:\d{2})$")


def parse_micro_time(value):
    """metav1.MicroTime's JSON decoding (RFC 3339, fraction optional); None when invalid."""
    if not isinstance(value, str):
        return None
    m = MICRO_TIME_RE.match(value)
    if not m:
        return None
    fraction = (m.group(7) or ".0")[1:]
    zone = m.group(8)
    try:
        t = datetime.datetime(int(m.group(1)), int(m.group(2)), int(m.group(3)), int(m.group(4)),
                              int(m.group(5)), int(m.group(6)),
                              int((fraction + "000000")[:6]), tzinfo=datetime.timezone.utc)
    except ValueError:
        return None
    if zone != "Z":
        sign = 1 if zone[0] == "+" else -1
        t -= sign * datetime.timedelta(hours=int(zone[1:3]), minutes=int(zone[4:6]))
    return t


def format_micro_time(t):
    """metav1.MicroTime's JSON encoding: UTC, always six fractional digits."""
    return t.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class LeaseType(ResourceType):
    """coordination.k8s.io/v1 Lease, as leader election uses it."""
    known_fields = ("kind", "apiVersion", "metadata", "spec")
    SPEC_FIELDS = ("holderIdentity", "leaseDurationSeconds", "acquireTime", "renewTime",
                   "leaseTransitions", "strategy", "preferredHolder")

    def __init__(self):
        super().__init__("coordination.k8s.io", "v1", "leases", "Lease")

    def normalize_kind(self, obj):
        spec = obj.get("spec")
        if spec is None:
            spec = {}
        if not isinstance(spec, dict):
            raise bad_request('Lease in version "v1" cannot be handled as a Lease: json: cannot '
                              'unmarshal %s into Go struct field Lease.spec of type '
                              'v1.LeaseSpec' % type(spec).__name__)
        out = {}
        for k in self.SPEC_FIELDS:
            v = spec.get(k)
            if v is None:
                continue
            if k in ("leaseDurationSeconds", "leaseTransitions"):
                if isinstance(v, bool) or not isinstance(v, int) or not -2**31 <= v < 2**31:
                    raise bad_request('Lease in version "v1" cannot be handled as a Lease: json: '
                                      'cannot unmarshal %s into Go struct field LeaseSpec.spec.%s '
                                      'of type int32' % (json.dumps(v), k))
                out[k] = v
            elif k in ("acquireTime", "renewTime"):
                t = parse_micro_time(v)
                if t is None:
                    raise bad_request('Lease in version "v1" cannot be handled as a Lease: '
                                      'parsing time %s as "2006-01-02T15:04:05.000000Z07:00": '
                                      'cannot parse' % json.dumps(v))
                out[k] = format_micro_time(t)
            else:
                if not isinstance(v, str):
                    raise bad_request('Lease in version "v1" cannot be handled as a Lease: json: '
                                      'cannot unmarshal %s into Go struct field LeaseSpec.spec.%s '
                                      'of type string' % (type(v).__name__, k))
                if v:
                    out[k] = v
        obj["spec"] = out
        return obj

    def canonical(self, obj):
        spec = obj.get("spec") or {}
        return {"kind": "Lease", "apiVersion": "coordination.k8s.io/v1",
                "metadata": order_meta(obj.get("metadata") or {}),
                "spec": {k: spec[k] for k in self.SPEC_FIELDS if k in spec}}

    def validate(self, obj, old):
        # pkg/apis/coordination/validation: ValidateLeaseSpec.
        errs = validate_object_meta(obj["metadata"], old is None)
        spec = obj.get("spec") or {}
        duration = spec.get("leaseDurationSeconds")
        if duration is not None and duration <= 0:
            errs.append(FieldError("Invalid", "spec.leaseDurationSeconds", duration,
                                   "must be greater than 0"))
        transitions = spec.get("leaseTransitions")
        if transitions is not None and transitions < 0:
            errs.append(FieldError("Invalid", "spec.leaseTransitions", transitions,
                                   "must be greater than or equal to 0"))
        return errs


class NamespaceType(ResourceType):
    """Cluster-scoped: stored and listed with namespace ""; the API server sets the label
    kubernetes.io/metadata.name to the name and keeps it."""
    cluster_scoped = True
    known_fields = ("kind", "apiVersion", "metadata", "spec", "status")
    NAME_LABEL = "kubernetes.io/metadata.name"

    def __init__(self):
        super().__init__("", "v1", "namespaces", "Namespace", field_labels=("status.phase",))

    def _name_label(self, obj):
        meta = obj["metadata"]
        labels = dict(meta.get("labels") or {})
        labels[self.NAME_LABEL] = meta.get("name", "")
        meta["labels"] = labels

    def prepare_create(self, obj):
        obj["spec"] = {"finalizers": ["kubernetes"]}
        obj["status"] = {"phase": "Active"}
        self._name_label(obj)

    def prepare_update(self, obj, old):
        obj["spec"] = copy.deepcopy(old.get("spec") or {})
        obj["status"] = copy.deepcopy(old.get("status") or {})
        self._name_label(obj)

    def validate(self, obj, old):
        return validate_object_meta(obj["metadata"], old is None, namespaced=False)

    def field_value(self, obj, label):
        if label == "status.phase":
            return (obj.get("status") or {}).get("phase", "")
        return super().field_value(obj, label)


class RoleType(ResourceType):
    known_fields = ("kind", "apiVersion", "metadata", "rules")

    def __init__(self):
        super().__init__("rbac.authorization.k8s.io", "v1", "roles", "Role")

    def validate(self, obj, old):
        errs = validate_object_meta(obj["metadata"], old is None)
        if not isinstance(obj.get("rules", []), list):
            errs.append(FieldError("Invalid", "rules", None, "must be a list"))
        return errs


class RoleBindingType(ResourceType):
    known_fields = ("kind", "apiVersion", "metadata", "subjects", "roleRef")

    def __init__(self):
        super().__init__("rbac.authorization.k8s.io", "v1", "rolebindings", "RoleBinding")

    def validate(self, obj, old):
        errs = validate_object_meta(obj["metadata"], old is None)
        ref = obj.get("roleRef")
        if not isinstance(ref, dict) or not ref.get("name") or \
                ref.get("kind") not in ("Role", "ClusterRole"):
            errs.append(FieldError("Required", "roleRef", None, "kind Role or ClusterRole and a name"))
        elif old is not None and ref != old.get("roleRef"):
            errs.append(FieldError("Invalid", "roleRef", None, "cannot change roleRef"))
        if not isinstance(obj.get("subjects", []), list):
            errs.append(FieldError("Invalid", "subjects", None, "must be a list"))
        return errs


RESOURCE_TYPES = [SecretType(), ConfigMapType(), DeploymentType(), LeaseType(),
                  NamespaceType(), RoleType(), RoleBindingType()]
RESOURCES_BY_PATH = {(rt.group, rt.version, rt.plural): rt for rt in RESOURCE_TYPES}
RESOURCES_BY_KIND = {(rt.api_version, rt.kind): rt for rt in RESOURCE_TYPES}


# ----------------------------------------------------------------------------------------------
# Patches


class PatchError(Exception):
    pass


def merge_patch(target, patch):
    """RFC 7386 JSON merge patch."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    result = dict(target) if isinstance(target, dict) else {}
    for k, v in patch.items():
        if v is None:
            result.pop(k, None)
        else:
            result[k] = merge_patch(result.get(k), v)
    return result


# Merge keys of the lists certcast can meet (patchMergeKey in the Go types).
SMP_MERGE_KEYS = {
    "containers": "name", "initContainers": "name", "ephemeralContainers": "name",
    "volumes": "name", "env": "name", "volumeMounts": "mountPath", "ports": "containerPort",
    "imagePullSecrets": "name", "ownerReferences": "uid", "conditions": "type",
}
SMP_MERGE_PRIMITIVES = {"finalizers"}
_DELETE = object()


def strategic_merge_patch(target, patch):
    """Strategic merge patch, limited to the directives and list keys certcast's objects use."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    directive = patch.get("$patch")
    if directive == "delete":
        return _DELETE
    if directive == "replace":
        return {k: copy.deepcopy(v) for k, v in patch.items() if not k.startswith("$")}
    if directive not in (None, "merge"):
        raise PatchError("unknown patch type: %s" % directive)
    result = dict(target) if isinstance(target, dict) else {}
    for k, v in patch.items():
        if k.startswith("$deleteFromPrimitiveList/"):
            field = k.split("/", 1)[1]
            if isinstance(result.get(field), list) and isinstance(v, list):
                result[field] = [x for x in result[field] if x not in v]
            continue
        if k.startswith("$"):
            continue  # $setElementOrder/..., $retainKeys: ordering/pruning hints
        if v is None:
            result.pop(k, None)
        elif isinstance(v, list) and k in SMP_MERGE_KEYS and isinstance(result.get(k), list):
            result[k] = _smp_list(result[k], v, SMP_MERGE_KEYS[k])
        elif isinstance(v, list) and k in SMP_MERGE_PRIMITIVES and isinstance(result.get(k), list):
            result[k] = list(result[k]) + [x for x in v if x not in result[k]]
        else:
            merged = strategic_merge_patch(result.get(k), v)
            if merged is _DELETE:
                result.pop(k, None)
            else:
                result[k] = merged
    return result


def _smp_list(old, patch, key):
    if any(isinstance(e, dict) and e.get("$patch") == "replace" for e in patch):
        return [copy.deepcopy(e) for e in patch if not (isinstance(e, dict) and "$patch" in e)]
    result = [copy.deepcopy(e) for e in old]
    for element in patch:
        if not isinstance(element, dict) or key not in element:
            raise PatchError("map: %s does not contain declared merge key: %s" % (element, key))
        index = next((i for i, e in enumerate(result)
                      if isinstance(e, dict) and e.get(key) == element[key]), None)
        if element.get("$patch") == "delete":
            if index is not None:
                result.pop(index)
            continue
        if index is None:
            result.append(strategic_merge_patch({}, element))
        else:
            result[index] = strategic_merge_patch(result[index], element)
    return result


def _pointer(path):
    if path == "":
        return []
    if not isinstance(path, str) or not path.startswith("/"):
        raise PatchError("invalid JSON pointer: %r" % (path,))
    return [p.replace("~1", "/").replace("~0", "~") for p in path[1:].split("/")]


def _container(doc, parts, path):
    cur = doc
    for p in parts[:-1]:
        if isinstance(cur, dict) and p in cur:
            cur = cur[p]
        elif isinstance(cur, list) and p.isdigit() and int(p) < len(cur):
            cur = cur[int(p)]
        else:
            raise PatchError("doc is missing path: %s" % path)
    return cur


def _jp_get(doc, path):
    parts = _pointer(path)
    if not parts:
        return doc
    c = _container(doc, parts, path)
    last = parts[-1]
    if isinstance(c, dict) and last in c:
        return c[last]
    if isinstance(c, list) and last.isdigit() and int(last) < len(c):
        return c[int(last)]
    raise PatchError("doc is missing path: %s" % path)


def _jp_remove(doc, path):
    parts = _pointer(path)
    if not parts:
        raise PatchError("cannot remove the whole document")
    c = _container(doc, parts, path)
    last = parts[-1]
    if isinstance(c, dict) and last in c:
        return c.pop(last)
    if isinstance(c, list) and last.isdigit() and int(last) < len(c):
        return c.pop(int(last))
    raise PatchError("unable to remove nonexistent key: %s: missing value" % last)


def _jp_add(doc, path, value):
    parts = _pointer(path)
    if not parts:
        return value
    c = _container(doc, parts, path)
    last = parts[-1]
    if isinstance(c, dict):
        c[last] = value
    elif isinstance(c, list):
        if last == "-":
            c.append(value)
        elif last.isdigit() and int(last) <= len(c):
            c.insert(int(last), value)
        else:
            raise PatchError("add operation does not apply: doc is missing path: %s" % path)
    else:
        raise PatchError("add operation does not apply: doc is missing path: %s" % path)
    return doc


def json_patch(doc, ops):
    """RFC 6902 JSON patch."""
    if not isinstance(ops, list):
        raise PatchError("json: cannot unmarshal object into Go value of type jsonpatch.Patch")
    doc = copy.deepcopy(doc)
    for op in ops:
        if not isinstance(op, dict):
            raise PatchError("invalid operation")
        kind, path = op.get("op"), op.get("path")
        if kind == "add":
            doc = _jp_add(doc, path, copy.deepcopy(op.get("value")))
        elif kind == "remove":
            _jp_remove(doc, path)
        elif kind == "replace":
            _jp_get(doc, path)
            if _pointer(path):
                _jp_remove(doc, path)
            doc = _jp_add(doc, path, copy.deepcopy(op.get("value")))
        elif kind == "move":
            value = _jp_remove(doc, op.get("from"))
            doc = _jp_add(doc, path, value)
        elif kind == "copy":
            doc = _jp_add(doc, path, copy.deepcopy(_jp_get(doc, op.get("from"))))
        elif kind == "test":
            if _jp_get(doc, path) != op.get("value"):
                raise PatchError("testing value %s failed: test failed" % path)
        else:
            raise PatchError("Unexpected kind: %s" % kind)
    return doc


# ----------------------------------------------------------------------------------------------
# Selectors


class SelectorError(Exception):
    pass


def parse_field_selector(text, rt):
    terms = []
    if not text:
        return terms
    for part in text.split(","):
        part = part.strip()
        if not part:
            continue
        m = re.match(r"^([^=!]+)(==|!=|=)(.*)$", part)
        if not m:
            raise bad_request('invalid selector: \'%s\'; can\'t understand \'%s\'' % (text, part))
        field, op, value = m.group(1).strip(), m.group(2), m.group(3).strip()
        if rt is not None and field not in rt.field_labels:
            raise bad_request("field label not supported: %s" % field)
        terms.append((field, "!=" if op == "!=" else "=", value))
    return terms


def field_selector_exact_name(text):
    """fields.Selector.RequiresExactMatch("metadata.name"), as the request-info resolver uses."""
    if not text:
        return ""
    for part in text.split(","):
        m = re.match(r"^\s*metadata\.name\s*(==|=)(.*)$", part)
        if m:
            return m.group(2).strip()
    return ""


def _split_top_level(text):
    parts, depth, cur = [], 0, ""
    for ch in text:
        if ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
        if ch == "," and depth == 0:
            parts.append(cur)
            cur = ""
        else:
            cur += ch
    parts.append(cur)
    return [p.strip() for p in parts if p.strip()]


def parse_label_selector(text):
    reqs = []
    if not text:
        return reqs
    for part in _split_top_level(text):
        m = re.match(r"^(\S+)\s+(in|notin)\s*\((.*)\)$", part)
        if m:
            values = [v.strip() for v in m.group(3).split(",") if v.strip()]
            reqs.append((m.group(1), m.group(2), values))
            continue
        m = re.match(r"^([^=!<>\s]+)\s*(==|!=|=|<|>)\s*(\S*)$", part)
        if m:
            op = {"==": "=", "=": "="}.get(m.group(2), m.group(2))
            reqs.append((m.group(1), op, [m.group(3)]))
            continue
        m = re.match(r"^!\s*([^=!<>\s]+)$", part)
        if m:
            reqs.append((m.group(1), "!exists", []))
            continue
        m = re.match(r"^([^=!<>\s()]+)$", part)
        if m:
            reqs.append((m.group(1), "exists", []))
            continue
        raise bad_request("unable to parse requirement: found '%s', expected: identifier" % part)
    for key, _, _ in reqs:
        if qualified_name_errors(key):
            raise bad_request("unable to parse requirement: values[0][%s]: Invalid value: \"%s\""
                              % (key, key))
    return reqs


def labels_match(reqs, labels):
    labels = labels or {}
    for key, op, values in reqs:
        present = key in labels
        value = labels.get(key)
        if op == "=" and not (present and value == values[0]):
            return False
        if op == "!=" and present and value == values[0]:
            return False
        if op == "in" and not (present and value in values):
            return False
        if op == "notin" and present and value in values:
            return False
        if op == "exists" and not present:
            return False
        if op == "!exists" and present:
            return False
        if op in ("<", ">"):
            try:
                a, b = int(value), int(values[0])
            except (TypeError, ValueError):
                return False
            if (op == "<" and not a < b) or (op == ">" and not a > b):
                return False
    return True


class Filter:
    def __init__(self, rt, namespace, field_terms, label_reqs):
        self.rt, self.namespace = rt, namespace
        self.field_terms, self.label_reqs = field_terms, label_reqs

    def matches(self, obj):
        if obj is None:
            return False
        meta = obj.get("metadata") or {}
        if self.namespace and meta.get("namespace") != self.namespace:
            return False
        for field, op, value in self.field_terms:
            actual = self.rt.field_value(obj, field)
            if (op == "=") != (actual == value):
                return False
        return labels_match(self.label_reqs, meta.get("labels"))


# ----------------------------------------------------------------------------------------------
# Users and RBAC


class User:
    def __init__(self, name, groups, admin=False, uid="", extra=None):
        self.name, self.groups, self.admin = name, list(groups), admin
        self.uid, self.extra = uid, extra or {}


def default_groups(username):
    parts = username.split(":")
    if len(parts) == 4 and parts[0] == "system" and parts[1] == "serviceaccount":
        return ["system:serviceaccounts", "system:serviceaccounts:" + parts[2],
                "system:authenticated"]
    return ["system:authenticated"]


def subject_matches(subject, user):
    if isinstance(subject, str):
        return subject == user.name or subject in user.groups
    if isinstance(subject, dict):
        kind, name = subject.get("kind", "User"), subject.get("name", "")
        if kind == "ServiceAccount":
            return user.name == "system:serviceaccount:%s:%s" % (subject.get("namespace", ""),
                                                                 name)
        if kind == "Group":
            return name in user.groups
        return name == user.name
    return False


def rule_allows(rule, verb, group, resource, subresource, name):
    verbs = rule.get("verbs") or []
    if "*" not in verbs and verb not in verbs:
        return False
    groups = rule.get("apiGroups") or []
    if "*" not in groups and group not in groups:
        return False
    combined = resource + ("/" + subresource if subresource else "")
    ok = False
    for r in rule.get("resources") or []:
        if r == "*" or r == combined:
            ok = True
            break
        if subresource and r == "*/" + subresource:
            ok = True
            break
    if not ok:
        return False
    names = rule.get("resourceNames") or []
    if names and (not name or name not in names):
        return False
    return True


class RequestInfo:
    """What k8s.io/apiserver's RequestInfoFactory derives from a request."""

    def __init__(self):
        self.is_resource = False
        self.verb = ""
        self.group = ""
        self.version = ""
        self.namespace = ""
        self.resource = ""
        self.subresource = ""
        self.name = ""
        self.url_name = False  # the URL names the object (not only the fieldSelector)
        self.path = ""


def query_bool(q, key):
    if key not in q:
        return False
    value = q[key][0]
    return not (value == "0" or value.lower() in ("f", "false", "n", "no"))


def parse_request_info(method, path, q):
    info = RequestInfo()
    info.path = path
    segments = [unquote(s) for s in path.strip("/").split("/")] if path.strip("/") else []
    if len(segments) >= 2 and segments[0] == "api":
        info.group, info.version, rest = "", segments[1], segments[2:]
    elif len(segments) >= 3 and segments[0] == "apis":
        info.group, info.version, rest = segments[1], segments[2], segments[3:]
    else:
        info.verb = method.lower()
        return info
    if not rest:
        info.verb = method.lower()
        return info
    info.is_resource = True
    if rest[0] == "namespaces" and len(rest) >= 3:
        info.namespace = rest[1]
        rest = rest[2:]
    elif rest[0] == "namespaces" and len(rest) == 2:
        info.namespace = rest[1]  # a namespace object is its own namespace
    info.resource = rest[0]
    if len(rest) > 1:
        info.name = rest[1]
        info.url_name = True
    if len(rest) > 2:
        info.subresource = rest[2]
    verbs = {"POST": "create", "GET": "get", "HEAD": "get", "PUT": "update", "PATCH": "patch",
             "DELETE": "delete"}
    info.verb = verbs.get(method, method.lower())
    if info.verb == "delete" and not info.name:
        info.verb = "deletecollection"
    if info.verb == "get" and not info.name:
        info.verb = "watch" if query_bool(q, "watch") else "list"
        name = field_selector_exact_name(q.get("fieldSelector", [""])[0])
        if name and name not in (".", "..") and "/" not in name and "%" not in name:
            info.name = name
    return info


def forbidden(user, info):
    username = user.name if user else "system:anonymous"
    if not info.is_resource:
        msg = 'User "%s" cannot %s path "%s"' % (username, info.verb, info.path)
        return ApiError(403, "Forbidden", "forbidden: " + msg, {})
    resource = info.resource + ("/" + info.subresource if info.subresource else "")
    if info.namespace:
        msg = 'User "%s" cannot %s resource "%s" in API group "%s" in the namespace "%s"' % (
            username, info.verb, resource, info.group, info.namespace)
    else:
        msg = 'User "%s" cannot %s resource "%s" in API group "%s" at the cluster scope' % (
            username, info.verb, resource, info.group)
    qualified = info.resource + ("." + info.group if info.group else "")
    if info.name:
        full = '%s "%s" is forbidden: %s' % (qualified, info.name, msg)
    else:
        full = "%s is forbidden: %s" % (qualified, msg)
    return ApiError(403, "Forbidden", full,
                    make_details(name=info.name, group=info.group, kind=info.resource))


# ----------------------------------------------------------------------------------------------
# The store


class Event:
    __slots__ = ("rv", "type", "resource", "old", "new")

    def __init__(self, rv, etype, resource, old, new):
        self.rv, self.type, self.resource, self.old, self.new = rv, etype, resource, old, new


class Watch:
    def __init__(self, user, path, query, resource, namespace, start_rv):
        self.user, self.path, self.query = user, path, query
        self.resource, self.namespace, self.start_rv = resource, namespace, start_rv
        self.dropped = False
        self.started = time.time()


class Dropped(Exception):
    pass


class FailRule:
    def __init__(self, spec, rule_id):
        self.id = rule_id
        self.status = int(spec.get("status", 503))
        self.count = int(spec.get("count", 1))
        self.method = spec.get("method")
        self.path_prefix = spec.get("path_prefix")
        self.verb = spec.get("verb")
        self.user = spec.get("user")
        self.message = spec.get("message")
        self.reason = spec.get("reason")
        self.retry_after = spec.get("retry_after_seconds")
        self.close = bool(spec.get("close", False))
        self.delay = float(spec.get("delay_seconds", 0) or 0)

    def matches(self, method, path, verb, user=None):
        if self.count == 0:
            return False
        if self.user and self.user != user:
            return False
        if self.method and self.method.upper() != method:
            return False
        if self.path_prefix and not path.startswith(self.path_prefix):
            return False
        if self.verb and self.verb != verb:
            return False
        return True

    def describe(self):
        return {"id": self.id, "status": self.status, "count": self.count, "method": self.method,
                "path_prefix": self.path_prefix, "verb": self.verb, "user": self.user,
                "close": self.close,
                "delay_seconds": self.delay}

    def error(self):
        code = self.status
        reason = self.reason if self.reason is not None else REASONS.get(code, "")
        message = self.message or DEFAULT_MESSAGES.get(code, "injected failure")
        headers = {}
        details = None
        retry = self.retry_after
        if retry is None and code == 429:
            retry = 1
        if retry:
            headers["Retry-After"] = str(int(retry))
            details = make_details(retry_after=int(retry))
        return ApiError(code, reason, message, details, headers)


class App:
    def __init__(self, config, initial_rv=None, data_file=None):
        self.lock = threading.Lock()
        self.cond = threading.Condition(self.lock)
        self.log_lock = threading.Lock()
        self.objects = {}  # (plural, namespace, name) -> stored object
        self.history_limit = int(config.get("history_limit", DEFAULT_HISTORY_LIMIT))
        self.events = collections.deque()
        if initial_rv is None:
            initial_rv = config.get("initial_resource_version")
        if initial_rv is None:
            # Like an API server restarted on top of a persistent etcd: versions only grow, so
            # a client that watched the previous process sees "too old", never "too new".
            initial_rv = time.time_ns() // 1000
        self.rv = int(initial_rv)
        self.data_file = data_file
        saved = None
        if data_file and os.path.exists(data_file):
            with open(data_file, encoding="utf-8") as f:
                saved = json.load(f)
            self.rv = max(self.rv, int(saved["resourceVersion"]))
        self.history_start = self.rv  # watches from RVs >= this can be served
        self.watches = set()
        self.requests = []
        self.fail_rules = []
        self.next_rule_id = 1
        self.conflicts = []  # [{"count": n, "path_prefix": p, "bump": b}]
        self.expire = False
        self.down = False
        self.bookmark_interval = float(config.get("bookmark_interval", 1.0))
        self.api_audiences = list(config.get("api_audiences", DEFAULT_API_AUDIENCES))
        self.tokens = {}
        for token, who in (config.get("tokens") or {}).items():
            if isinstance(who, dict):
                name = who["username"]
                self.tokens[token] = User(name, who.get("groups") or default_groups(name),
                                          uid=who.get("uid", ""), extra=who.get("extra"))
            else:
                self.tokens[token] = User(who, default_groups(who))
        for token in config.get("admin_tokens") or []:
            self.tokens[token] = User("kubernetes-admin", ["system:masters",
                                                           "system:authenticated"], admin=True)
        self.roles = config.get("roles") or []
        self.cluster_roles = config.get("cluster_roles") or []
        self.reviewable = config.get("reviewable_tokens") or {}
        if saved is not None:
            # A restart on top of the saved objects: the config's objects were loaded the first
            # time and may since have been changed or deleted.
            for obj in saved["objects"]:
                rt = RESOURCES_BY_KIND[(obj["apiVersion"], obj["kind"])]
                meta = obj["metadata"]
                self.objects[(rt.plural, meta["namespace"], meta["name"])] = obj
        else:
            for obj in config.get("objects") or []:
                self.preload(obj)

    # -- helpers called with the lock held --------------------------------------------------

    def _record(self, etype, resource, old, new):
        self.events.append(Event(self.rv, etype, resource, old, new))
        while len(self.events) > self.history_limit:
            dropped = self.events.popleft()
            self.history_start = dropped.rv
        self._save()
        self.cond.notify_all()

    def _save(self):
        """With --data-file: every write is on disk before it is answered, as etcd's would be."""
        if not self.data_file:
            return
        tmp = self.data_file + ".tmp"
        with open(tmp, "w", encoding="utf-8") as f:
            json.dump({"resourceVersion": str(self.rv),
                       "objects": [o for _, o in sorted(self.objects.items())]}, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, self.data_file)

    def _next_rv(self):
        self.rv += 1
        return self.rv

    def preload(self, obj):
        rt = RESOURCES_BY_KIND.get((obj.get("apiVersion"), obj.get("kind")))
        if rt is None:
            raise ValueError("cannot preload %s %s" % (obj.get("apiVersion"), obj.get("kind")))
        stored = rt.normalize(obj, [], False)
        meta = stored["metadata"]
        meta.setdefault("namespace", "default")
        if rt.cluster_scoped:
            meta["namespace"] = ""
        given_uid, given_ts = meta.get("uid"), meta.get("creationTimestamp")
        meta.pop("resourceVersion", None)
        errs = rt.validate(stored, None)
        if errs:
            raise ValueError("invalid preloaded object: %s" % invalid(rt, meta.get("name"),
                                                                      errs).body["message"])
        with self.lock:
            self._create_locked(rt, meta["namespace"], stored, dry_run=False,
                                keep={"uid": given_uid, "creationTimestamp": given_ts})

    def _create_locked(self, rt, namespace, obj, dry_run, keep=None):
        meta = obj["metadata"]
        if not meta.get("name") and meta.get("generateName"):
            alphabet = "bcdfghjklmnpqrstvwxz2456789"
            while True:
                suffix = "".join(alphabet[b % len(alphabet)] for b in os.urandom(5))
                candidate = meta["generateName"] + suffix
                if (rt.plural, namespace, candidate) not in self.objects:
                    meta["name"] = candidate
                    break
        key = (rt.plural, namespace, meta["name"])
        if key in self.objects:
            raise already_exists(rt, meta["name"])
        meta["namespace"] = namespace
        meta["uid"] = str(uuid.uuid4())
        meta["creationTimestamp"] = now_rfc3339()
        for k, v in (keep or {}).items():
            if v:
                meta[k] = v
        for k in ("deletionTimestamp", "deletionGracePeriodSeconds", "selfLink", "generation"):
            meta.pop(k, None)
        rt.prepare_create(obj)
        obj = rt.canonical(obj)
        if dry_run:
            obj["metadata"]["resourceVersion"] = ""
            return obj
        obj["metadata"]["resourceVersion"] = str(self._next_rv())
        obj = rt.canonical(obj)
        self.objects[key] = obj
        self._record("ADDED", rt.plural, None, obj)
        return obj

    def _take_conflict(self, path):
        for c in self.conflicts:
            if c["count"] != 0 and (not c.get("path_prefix") or path.startswith(c["path_prefix"])):
                if c["count"] > 0:
                    c["count"] -= 1
                return c
        return None

    def _update_locked(self, rt, key, old, new, dry_run):
        """Write new over old (both already validated); handles no-ops and finalizers."""
        meta = new["metadata"]
        old_meta = old["metadata"]
        for k in ("uid", "creationTimestamp", "deletionTimestamp", "deletionGracePeriodSeconds"):
            if k in old_meta:
                meta[k] = old_meta[k]
            else:
                meta.pop(k, None)
        meta["name"], meta["namespace"] = old_meta["name"], old_meta.get("namespace", "")
        meta["resourceVersion"] = old_meta["resourceVersion"]
        new = rt.canonical(new)
        if new == old:
            return old, False  # a no-op: nothing is written, resourceVersion does not move
        if dry_run:
            return new, False
        new["metadata"]["resourceVersion"] = str(self._next_rv())
        if new["metadata"].get("deletionTimestamp") and not new["metadata"].get("finalizers"):
            del self.objects[key]
            self._record("DELETED", rt.plural, old, new)
            return new, True
        self.objects[key] = new
        self._record("MODIFIED", rt.plural, old, new)
        return new, False

    # -- request log ------------------------------------------------------------------------

    def log_request(self, entry):
        with self.log_lock:
            self.requests.append(entry)

    # -- authentication / authorization -----------------------------------------------------

    def authenticate(self, header):
        if not header:
            return None
        parts = header.split(" ", 1)
        if len(parts) != 2 or parts[0].lower() != "bearer":
            return None
        return self.tokens.get(parts[1].strip())

    def authorize(self, user, info):
        if user.admin or "system:masters" in user.groups:
            return True
        if not info.is_resource:  # system:public-info-viewer, system:discovery
            return info.path in ("/version", "/healthz", "/livez", "/readyz", "/api", "/apis")
        bindings = []
        for role in self.cluster_roles:
            bindings.append(role)
        if info.namespace:
            for role in self.roles:
                if role.get("namespace") == info.namespace:
                    bindings.append(role)
        if info.namespace:
            # RoleBindings stored through the API, each to a Role of its namespace.
            for (plural, ns, _), binding in list(self.objects.items()):
                if plural != "rolebindings" or ns != info.namespace:
                    continue
                ref = binding.get("roleRef") or {}
                role = self.objects.get(("roles", ns, ref.get("name", "")))
                if ref.get("kind") != "Role" or role is None:
                    continue
                bindings.append({"subjects": binding.get("subjects") or [],
                                 "rules": role.get("rules") or []})
        for role in bindings:
            if not any(subject_matches(s, user) for s in role.get("subjects") or []):
                continue
            for rule in role.get("rules") or []:
                if rule_allows(rule, info.verb, info.group, info.resource, info.subresource,
                               info.name):
                    return True
        return False

    # -- failure injection ------------------------------------------------------------------

    def take_failure(self, method, path, verb, user=None):
        with self.lock:
            for rule in self.fail_rules:
                if rule.matches(method, path, verb, user):
                    if rule.count > 0:
                        rule.count -= 1
                    return rule
        return None

    def drop_watches_locked(self):
        n = 0
        for w in self.watches:
            if not w.dropped:
                w.dropped = True
                n += 1
        self.cond.notify_all()
        return n


# ----------------------------------------------------------------------------------------------
# HTTP


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "fake-kube-apiserver"
    sys_version = ""

    @property
    def app(self):
        return self.server.app

    def setup(self):
        super().setup()
        try:
            self.connection.settimeout(10)
            self.connection.do_handshake()
            self.connection.settimeout(None)
        except (OSError, ssl.SSLError, ValueError):
            self.close_connection = True
            raise

    def handle(self):
        try:
            super().handle()
        except (OSError, ssl.SSLError, ValueError, Dropped):
            self.close_connection = True

    def finish(self):
        try:
            super().finish()
        except (OSError, ssl.SSLError, ValueError):
            pass

    def log_message(self, fmt, *args):
        if self.server.verbose:
            sys.stderr.write("%s - %s\n" % (self.address_string(), fmt % args))
            sys.stderr.flush()

    def send_response(self, code, message=None):
        # Like Go's net/http: a Date header, no Server header.
        self.log_request(code)
        self.send_response_only(code, message)
        self.send_header("Date", self.date_time_string())

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = do_HEAD = lambda self: self.dispatch()

    # -- low level I/O ------------------------------------------------------------------------

    def read_body(self):
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            chunks, total = [], 0
            while True:
                line = self.rfile.readline(65537)
                if not line:
                    raise ConnectionError("eof in chunked body")
                size = int(line.split(b";", 1)[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline(65537) not in (b"\r\n", b"\n", b""):
                        pass
                    break
                total += size
                if total > MAX_BODY_BYTES:
                    raise ApiError(413, "RequestEntityTooLarge",
                                   "the request is too large", {})
                chunks.append(self.rfile.read(size))
                self.rfile.readline(65537)
            return b"".join(chunks)
        length = int(self.headers.get("Content-Length") or 0)
        if length > MAX_BODY_BYTES:
            self.close_connection = True
            raise ApiError(413, "RequestEntityTooLarge", "the request is too large", {})
        return self.rfile.read(length) if length else b""

    def send_bytes(self, code, body, content_type="application/json", headers=None):
        self.send_response(code)
        self.send_header("Audit-Id", str(uuid.uuid4()))
        self.send_header("Cache-Control", "no-cache, private")
        self.send_header("Content-Type", content_type)
        for k, v in (headers or {}).items():
            if isinstance(v, list):
                for item in v:
                    self.send_header(k, item)
            else:
                self.send_header(k, v)
        self.send_header("Content-Length", str(len(body)))
        if self.close_connection:
            self.send_header("Connection", "close")
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)
        return code

    def send_obj(self, code, obj, headers=None):
        return self.send_bytes(code, dumps(obj), headers=headers)

    def abort_connection(self):
        self.close_connection = True
        try:
            self.connection.shutdown(socket.SHUT_RDWR)
        except (OSError, ValueError):
            pass

    # -- dispatch ----------------------------------------------------------------------------

    def dispatch(self):
        url = urlsplit(self.path)
        path, raw_query = url.path, url.query
        q = parse_qs(raw_query, keep_blank_values=True)
        if path == "/_control" or path.startswith("/_control/"):
            try:
                body = self.read_body()
            except ApiError as e:
                self.send_obj(e.code, e.body)
                return
            self.control(path, q, body)
            return
        if self.app.down:
            self.abort_connection()
            return
        info = parse_request_info(self.command, path, q)
        user = self.app.authenticate(self.headers.get("Authorization"))
        entry = {"method": self.command, "path": path, "query": raw_query,
                 "user": user.name if user else None, "status": 0, "verb": info.verb}
        if user and user.extra.get("authentication.kubernetes.io/pod-name"):
            # A bound ServiceAccount token names its pod: which replica made the request.
            pod = user.extra["authentication.kubernetes.io/pod-name"]
            entry["pod"] = pod[0] if isinstance(pod, list) else pod
        try:
            try:
                body = self.read_body()
            except ApiError as e:
                entry["status"] = self.send_obj(e.code, e.body)
                return
            rule = self.app.take_failure(self.command, path, info.verb,
                                         user.name if user else None)
            if rule is not None:
                if rule.delay:
                    time.sleep(rule.delay)
                if rule.close:
                    entry["status"] = -1
                    self.abort_connection()
                    return
                if rule.status:
                    err = rule.error()
                    entry["status"] = self.send_obj(err.code, err.body, err.headers)
                    return
            entry["status"] = self.api(info, user, q, body, entry)
        except ApiError as e:
            entry["status"] = self.send_obj(e.code, e.body, e.headers)
        except Dropped:
            self.abort_connection()
        except (OSError, ssl.SSLError, ValueError):
            self.close_connection = True
        except Exception as e:  # a bug in the fake: answer 500 rather than hang the client
            import traceback
            traceback.print_exc()
            err = ApiError(500, "InternalError", "Internal error occurred: %s" % e,
                           make_details(causes=[{"message": str(e)}]))
            try:
                entry["status"] = self.send_obj(500, err.body)
            except (OSError, ValueError):
                self.close_connection = True
        finally:
            self.app.log_request(entry)

    def api(self, info, user, q, body, entry):
        app = self.app
        if not info.is_resource and info.path in ("/healthz", "/livez", "/readyz") and \
                not self.headers.get("Authorization"):
            return self.send_bytes(200, b"ok", "text/plain; charset=utf-8")
        if not info.is_resource and info.path == "/version" and \
                not self.headers.get("Authorization"):
            return self.send_obj(200, VERSION_INFO)
        if user is None:
            raise ApiError(401, "Unauthorized", "Unauthorized")
        if not app.authorize(user, info):
            raise forbidden(user, info)
        if not info.is_resource:
            if info.path in ("/healthz", "/livez", "/readyz"):
                return self.send_bytes(200, b"ok", "text/plain; charset=utf-8")
            if info.path == "/version":
                return self.send_obj(200, VERSION_INFO)
            return self.send_bytes(404, b"404 page not found\n", "text/plain; charset=utf-8")
        if info.group == "authentication.k8s.io" and info.version == "v1" and \
                info.resource == "tokenreviews" and not info.namespace:
            if self.command != "POST" or info.name:
                raise method_not_allowed()
            return self.token_review(body)
        rt = RESOURCES_BY_PATH.get((info.group, info.version, info.resource))
        if rt is None or info.subresource:
            raise resource_not_found()
        if rt.cluster_scoped:
            info.namespace = ""  # RequestInfo names a Namespace its own namespace; storage doesn't
        dry_run = "All" in q.get("dryRun", [])
        strict = q.get("fieldValidation", [""])[0] == "Strict"
        if self.command in ("GET", "HEAD"):
            if info.name and info.url_name:
                return self.get(rt, info)
            if info.verb == "watch":
                return self.watch(rt, info, q, user, entry)
            return self.list(rt, info, q)
        if not info.namespace and not rt.cluster_scoped:
            raise method_not_allowed()
        if self.command == "POST":
            if info.url_name:
                raise method_not_allowed()
            return self.create(rt, info, body, dry_run, strict)
        if self.command == "PUT":
            if not info.url_name:
                raise method_not_allowed()
            return self.update(rt, info, body, dry_run, strict)
        if self.command == "PATCH":
            if not info.url_name:
                raise method_not_allowed()
            return self.patch(rt, info, q, body, dry_run, strict)
        if self.command == "DELETE":
            if not info.url_name:
                raise method_not_allowed()
            return self.delete(rt, info, body, dry_run)
        raise method_not_allowed()

    # -- body decoding ------------------------------------------------------------------------

    def content_type(self):
        return (self.headers.get("Content-Type") or "").split(";", 1)[0].strip().lower()

    def decode_json(self, body, rt):
        ctype = self.content_type()
        if ctype not in ("", "application/json", "application/yaml", "*/*"):
            raise unsupported_media(["application/json", "application/yaml",
                                     "application/vnd.kubernetes.protobuf"])
        try:
            return json.loads(body.decode("utf-8")) if body else None
        except (ValueError, UnicodeDecodeError) as e:
            kind = rt.kind if rt else "object"
            raise bad_request("couldn't get version/kind; json parse error: %s" % e
                              if not body.strip().startswith(b"{") else
                              "%s in version \"%s\" cannot be handled as a %s: %s"
                              % (kind, rt.version if rt else "v1", kind, e))

    def warning_headers(self, warnings):
        if not warnings:
            return None
        return {"Warning": ['299 - %s' % json.dumps(w) for w in warnings]}

    # -- verbs --------------------------------------------------------------------------------

    def get(self, rt, info):
        app = self.app
        with app.lock:
            obj = app.objects.get((rt.plural, info.namespace, info.name))
            obj = copy.deepcopy(obj)
        if obj is None or not (info.namespace or rt.cluster_scoped):
            raise not_found(rt, info.name)
        return self.send_obj(200, obj)

    def make_filter(self, rt, info, q):
        field_terms = parse_field_selector(q.get("fieldSelector", [""])[0], rt)
        label_reqs = parse_label_selector(q.get("labelSelector", [""])[0])
        return Filter(rt, info.namespace, field_terms, label_reqs)

    def list(self, rt, info, q):
        app = self.app
        flt = self.make_filter(rt, info, q)
        limit = int(q.get("limit", ["0"])[0] or 0)
        cont = q.get("continue", [""])[0]
        start_after = None
        if cont:
            try:
                token = json.loads(base64.urlsafe_b64decode(cont.encode()).decode())
                start_after = tuple(token["start"])
            except Exception:
                raise bad_request("continue key is not valid: illegal base64 data")
        with app.lock:
            items = [copy.deepcopy(o) for (plural, _, _), o in app.objects.items()
                     if plural == rt.plural and flt.matches(o)]
            rv = app.rv
        items.sort(key=lambda o: (o["metadata"].get("namespace", ""), o["metadata"]["name"]))
        if start_after is not None:
            items = [o for o in items
                     if (o["metadata"].get("namespace", ""), o["metadata"]["name"]) > start_after]
        list_meta = {"resourceVersion": str(rv)}
        if limit > 0 and len(items) > limit:
            last = items[limit - 1]["metadata"]
            remaining = len(items) - limit
            items = items[:limit]
            token = {"v": "meta.k8s.io/v1", "rv": rv,
                     "start": [last.get("namespace", ""), last["name"]]}
            list_meta["continue"] = base64.urlsafe_b64encode(
                json.dumps(token).encode()).decode()
            list_meta["remainingItemCount"] = remaining
        for o in items:  # items of a typed list carry no kind/apiVersion
            o.pop("kind", None)
            o.pop("apiVersion", None)
        return self.send_obj(200, {"kind": rt.kind + "List", "apiVersion": rt.api_version,
                                   "metadata": list_meta, "items": items})

    def create(self, rt, info, body, dry_run, strict):
        app = self.app
        raw = self.decode_json(body, rt)
        if isinstance(raw, dict) and isinstance(raw.get("metadata"), dict) and \
                raw["metadata"].get("resourceVersion"):
            raise ApiError(500, "InternalError", "Internal error occurred: resourceVersion should "
                           "not be set on objects to be created",
                           make_details(causes=[{"message": "resourceVersion should not be set "
                                                 "on objects to be created"}]))
        warnings = []
        obj = rt.normalize(raw, warnings, strict)
        meta = obj["metadata"]
        if meta.get("namespace") and meta["namespace"] != info.namespace:
            raise bad_request("the namespace of the provided object does not match the "
                              "namespace sent on the request")
        meta["namespace"] = info.namespace
        errs = rt.validate(obj, None)
        if errs:
            raise invalid(rt, meta.get("name") or meta.get("generateName", ""), errs)
        with app.lock:
            created = copy.deepcopy(app._create_locked(rt, info.namespace, obj, dry_run))
        return self.send_obj(201, created, self.warning_headers(warnings))

    def update(self, rt, info, body, dry_run, strict):
        app = self.app
        raw = self.decode_json(body, rt)
        warnings = []
        obj = rt.normalize(raw, warnings, strict)
        meta = obj["metadata"]
        if meta.get("name", "") != info.name:
            raise bad_request("the name of the object (%s) does not match the name on the URL "
                              "(%s)" % (meta.get("name", ""), info.name))
        if meta.get("namespace") and meta["namespace"] != info.namespace:
            raise bad_request("the namespace of the provided object does not match the "
                              "namespace sent on the request")
        key = (rt.plural, info.namespace, info.name)
        with app.lock:
            old = app.objects.get(key)
            if old is None:
                raise not_found(rt, info.name)
            result = self.write_locked(rt, key, old, obj, dry_run)
        return self.send_obj(200, result, self.warning_headers(warnings))

    def write_locked(self, rt, key, old, obj, dry_run):
        """Preconditions, validation and the write shared by update and patch."""
        app = self.app
        injected = app._take_conflict(urlsplit(self.path).path)
        if injected is not None:
            if injected.get("bump") and not dry_run:
                bumped = copy.deepcopy(old)
                bumped["metadata"]["resourceVersion"] = str(app._next_rv())
                app.objects[key] = bumped
                app._record("MODIFIED", rt.plural, old, bumped)
            raise conflict(rt, key[2])
        meta = obj["metadata"]
        rv = meta.get("resourceVersion")
        if rv and rv != old["metadata"]["resourceVersion"]:
            raise conflict(rt, key[2])
        if meta.get("uid") and meta["uid"] != old["metadata"].get("uid"):
            raise conflict(rt, key[2], "Precondition failed: UID in precondition: %s, UID in "
                           "object meta: %s" % (meta["uid"], old["metadata"].get("uid")))
        meta["namespace"] = key[1]
        rt.prepare_update(obj, old)
        errs = rt.validate(obj, old)
        if errs:
            raise invalid(rt, key[2], errs)
        result, _ = app._update_locked(rt, key, old, obj, dry_run)
        return copy.deepcopy(result)

    def patch(self, rt, info, q, body, dry_run, strict):
        app = self.app
        ctype = self.content_type()
        accepted = ["application/json-patch+json", "application/merge-patch+json",
                    "application/strategic-merge-patch+json", "application/apply-patch+yaml"]
        if ctype not in accepted:
            raise unsupported_media(accepted)
        if ctype == "application/apply-patch+yaml":
            if not q.get("fieldManager", [""])[0]:
                raise ApiError(422, "Invalid", 'PatchOptions.meta.k8s.io "" is invalid: '
                               'fieldManager: Required value: is required for apply patch',
                               make_details(group="meta.k8s.io", kind="PatchOptions",
                                            causes=[{"reason": "FieldValueRequired",
                                                     "message": "Required value: is required "
                                                                "for apply patch",
                                                     "field": "fieldManager"}]))
        try:
            patch = json.loads(body.decode("utf-8")) if body else None
        except (ValueError, UnicodeDecodeError) as e:
            if ctype == "application/apply-patch+yaml":
                raise bad_request("error decoding YAML: this fake accepts JSON apply bodies only: "
                                  "%s" % e)
            raise bad_request("error decoding patch: %s" % e)
        if patch is None:
            raise bad_request("the body of the request was empty")
        key = (rt.plural, info.namespace, info.name)
        warnings = []
        with app.lock:
            old = app.objects.get(key)
            if old is None:
                if ctype != "application/apply-patch+yaml":
                    raise not_found(rt, info.name)
                obj = rt.normalize(patch, warnings, strict)
                meta = obj["metadata"]
                if meta.get("name", "") != info.name:
                    raise bad_request("the name of the object (%s) does not match the name on "
                                      "the URL (%s)" % (meta.get("name", ""), info.name))
                meta["namespace"] = info.namespace
                errs = rt.validate(obj, None)
                if errs:
                    raise invalid(rt, info.name, errs)
                created = copy.deepcopy(app._create_locked(rt, info.namespace, obj, dry_run))
                return self.send_obj(201, created, self.warning_headers(warnings))
            current = copy.deepcopy(old)
            try:
                if ctype == "application/merge-patch+json":
                    if not isinstance(patch, dict):
                        raise PatchError("merge patch must be a JSON object")
                    patched = merge_patch(current, patch)
                elif ctype == "application/strategic-merge-patch+json":
                    if not isinstance(patch, dict):
                        raise PatchError("strategic merge patch must be a JSON object")
                    patched = strategic_merge_patch(current, patch)
                elif ctype == "application/json-patch+json":
                    patched = json_patch(current, patch)
                else:
                    if not isinstance(patch, dict):
                        raise PatchError("apply patch must be a JSON object")
                    patched = strategic_merge_patch(current, patch)
            except PatchError as e:
                raise ApiError(422, "Invalid", str(e), {}) if ctype == \
                    "application/json-patch+json" else bad_request(str(e))
            obj = rt.normalize(patched, warnings, strict)
            meta = obj["metadata"]
            if meta.get("name", "") != info.name:
                raise bad_request("the name of the object (%s) does not match the name on the "
                                  "URL (%s)" % (meta.get("name", ""), info.name))
            if meta.get("namespace") and meta["namespace"] != info.namespace:
                raise bad_request("the namespace of the provided object does not match the "
                                  "namespace sent on the request")
            result = self.write_locked(rt, key, old, obj, dry_run)
        return self.send_obj(200, result, self.warning_headers(warnings))

    def delete(self, rt, info, body, dry_run):
        app = self.app
        options = {}
        if body and body.strip():
            try:
                options = json.loads(body.decode("utf-8"))
            except (ValueError, UnicodeDecodeError) as e:
                raise bad_request("couldn't get version/kind; json parse error: %s" % e)
            if not isinstance(options, dict):
                raise bad_request("DeleteOptions must be a JSON object")
        dry_run = dry_run or "All" in (options.get("dryRun") or [])
        pre = options.get("preconditions") or {}
        key = (rt.plural, info.namespace, info.name)
        with app.lock:
            old = app.objects.get(key)
            if old is None:
                raise not_found(rt, info.name)
            meta = old["metadata"]
            if pre.get("uid") and pre["uid"] != meta.get("uid"):
                raise conflict(rt, info.name, "Precondition failed: UID in precondition: %s, UID "
                               "in object meta: %s" % (pre["uid"], meta.get("uid")))
            if pre.get("resourceVersion") and pre["resourceVersion"] != meta["resourceVersion"]:
                raise conflict(rt, info.name, "Precondition failed: ResourceVersion in "
                               "precondition: %s, ResourceVersion in object meta: %s"
                               % (pre["resourceVersion"], meta["resourceVersion"]))
            if meta.get("finalizers"):
                # Graceful: the object stays until its finalizers are removed.
                if meta.get("deletionTimestamp") or dry_run:
                    return self.send_obj(202, copy.deepcopy(old))
                new = copy.deepcopy(old)
                new["metadata"]["deletionTimestamp"] = now_rfc3339()
                new["metadata"]["deletionGracePeriodSeconds"] = 0
                new["metadata"]["resourceVersion"] = str(app._next_rv())
                new = rt.canonical(new)
                app.objects[key] = new
                app._record("MODIFIED", rt.plural, old, new)
                return self.send_obj(202, copy.deepcopy(new))
            if not dry_run:
                gone = copy.deepcopy(old)
                gone["metadata"]["resourceVersion"] = str(app._next_rv())
                del app.objects[key]
                app._record("DELETED", rt.plural, old, gone)
        return self.send_obj(200, make_status(0, "", "", make_details(
            name=info.name, group=rt.group, kind=rt.plural, uid=meta.get("uid")),
            status="Success"))

    # -- watch --------------------------------------------------------------------------------

    def watch(self, rt, info, q, user, entry):
        app = self.app
        flt = self.make_filter(rt, info, q)
        rv_param = q.get("resourceVersion", [""])[0]
        try:
            timeout = float(q.get("timeoutSeconds", [str(DEFAULT_WATCH_TIMEOUT)])[0]
                            or DEFAULT_WATCH_TIMEOUT)
        except ValueError:
            raise bad_request("invalid timeoutSeconds")
        bookmarks = query_bool(q, "allowWatchBookmarks")
        initial = []
        with app.lock:
            if rv_param in ("", "0"):
                pos = app.rv
                for (plural, _, _), o in sorted(app.objects.items()):
                    if plural == rt.plural and flt.matches(o):
                        initial.append(("ADDED", copy.deepcopy(o)))
            else:
                try:
                    start = int(rv_param)
                    if start < 0:
                        raise ValueError()
                except ValueError:
                    raise bad_request("invalid resource version: strconv.ParseUint: parsing %s: "
                                      "invalid syntax" % json.dumps(rv_param))
                deadline = time.monotonic() + TOO_LARGE_RV_WAIT_SECONDS
                while start > app.rv and time.monotonic() < deadline:
                    app.cond.wait(deadline - time.monotonic())
                if start > app.rv:
                    raise ApiError(504, "Timeout", "Too large resource version: %d, current: %d"
                                   % (start, app.rv),
                                   make_details(causes=[{"reason": "ResourceVersionTooLarge",
                                                         "message": "Too large resource version"}],
                                                retry_after=1), {"Retry-After": "1"})
                if app.expire or start < app.history_start:
                    oldest = app.rv if app.expire else app.history_start
                    expired = make_status(410, "Expired", "too old resource version: %d (%d)"
                                          % (start, oldest))
                    pos = None
                else:
                    pos = start
            w = Watch(user.name, info.path, urlsplit(self.path).query, rt.plural,
                      info.namespace, pos)
            if pos is not None:
                app.watches.add(w)
        try:
            self.send_response(200)
            self.send_header("Audit-Id", str(uuid.uuid4()))
            self.send_header("Cache-Control", "no-cache, private")
            self.send_header("Content-Type", "application/json")
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            entry["status"] = 200
            if pos is None:
                self.write_chunk(dumps({"type": "ERROR", "object": expired}))
                self.write_chunk(b"")
                return 200
            self.stream(rt, flt, w, pos, initial, timeout, bookmarks)
        finally:
            with app.lock:
                app.watches.discard(w)
        return 200

    def write_chunk(self, data):
        if data:
            self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
        else:
            self.wfile.write(b"0\r\n\r\n")

    def stream(self, rt, flt, w, pos, initial, timeout, bookmarks):
        app = self.app
        for etype, obj in initial:
            self.write_chunk(dumps({"type": etype, "object": obj}))
        deadline = time.monotonic() + timeout
        last_bookmark = time.monotonic()
        while True:
            out = []
            finished = False
            with app.lock:
                while True:
                    if w.dropped:
                        raise Dropped()
                    if app.rv > pos:
                        if pos < app.history_start:
                            # Fell out of the history window: the real watch cache closes the
                            # stream; the client re-watches and gets 410.
                            finished = True
                            break
                        for ev in app.events:
                            if ev.rv <= pos or ev.resource != rt.plural:
                                continue
                            line = self.event_for(ev, flt)
                            if line is not None:
                                out.append(line)
                        pos = app.rv
                        break
                    now = time.monotonic()
                    if now >= deadline:
                        finished = True
                        break
                    wake = deadline
                    if bookmarks:
                        next_bookmark = last_bookmark + app.bookmark_interval
                        if now >= next_bookmark:
                            out.append({"type": "BOOKMARK", "object": {
                                "kind": rt.kind, "apiVersion": rt.api_version,
                                "metadata": {"resourceVersion": str(pos),
                                             "creationTimestamp": None}}})
                            last_bookmark = now
                            break
                        wake = min(wake, next_bookmark)
                    app.cond.wait(max(0.0, wake - now))
            for ev in out:
                self.write_chunk(dumps(ev))
            if finished:
                self.write_chunk(b"")
                return

    def event_for(self, ev, flt):
        old_match, new_match = flt.matches(ev.old), flt.matches(ev.new)
        if ev.type == "ADDED":
            return {"type": "ADDED", "object": copy.deepcopy(ev.new)} if new_match else None
        if ev.type == "DELETED":
            return {"type": "DELETED", "object": copy.deepcopy(ev.new)} if old_match else None
        if old_match and new_match:
            return {"type": "MODIFIED", "object": copy.deepcopy(ev.new)}
        if new_match:
            return {"type": "ADDED", "object": copy.deepcopy(ev.new)}
        if old_match:
            return {"type": "DELETED", "object": copy.deepcopy(ev.new)}
        return None

    # -- TokenReview --------------------------------------------------------------------------

    def token_review(self, body):
        app = self.app
        raw = self.decode_json(body, None)
        if not isinstance(raw, dict):
            raise bad_request("TokenReview in version \"v1\" cannot be handled as a TokenReview")
        if raw.get("kind") not in (None, "", "TokenReview"):
            raise bad_request('TokenReview in version "v1" cannot be handled as a TokenReview: no '
                              'kind "%s" is registered for version "authentication.k8s.io/v1"'
                              % raw.get("kind"))
        spec = raw.get("spec") or {}
        token = spec.get("token") or ""
        if not token:
            raise bad_request("token is required for TokenReview in authentication")
        wanted = list(spec.get("audiences") or [])
        target = wanted or app.api_audiences
        status = {}
        entry = app.reviewable.get(token)
        if entry is None and token in app.tokens and not app.tokens[token].admin:
            u = app.tokens[token]
            entry = {"username": u.name, "groups": u.groups, "audiences": app.api_audiences}
        if entry is None:
            status = {"user": {}, "error": "[invalid bearer token, token lookup failed]"}
        elif entry.get("expired"):
            status = {"user": {}, "error": "[invalid bearer token, service account token has "
                                           "expired]"}
        else:
            token_auds = list(entry.get("audiences") or app.api_audiences)
            common = [a for a in target if a in token_auds]
            if not common:
                status = {"user": {}, "error": "[invalid bearer token, token audiences %s is "
                          "invalid for the target audiences %s]"
                          % (json.dumps(token_auds), json.dumps(target))}
            else:
                name = entry["username"]
                user = {"username": name}
                if entry.get("uid"):
                    user["uid"] = entry["uid"]
                user["groups"] = list(entry.get("groups") or default_groups(name))
                if entry.get("extra"):
                    user["extra"] = entry["extra"]
                status = {"authenticated": True, "user": user, "audiences": common}
        echo_spec = {"token": token}
        if wanted:
            echo_spec["audiences"] = wanted
        return self.send_obj(201, {"kind": "TokenReview", "apiVersion": "authentication.k8s.io/v1",
                                   "metadata": {"creationTimestamp": None},
                                   "spec": echo_spec, "status": status})

    # -- control API --------------------------------------------------------------------------

    def control(self, path, q, body):
        app = self.app
        try:
            data = json.loads(body.decode("utf-8")) if body and body.strip() else {}
        except (ValueError, UnicodeDecodeError) as e:
            self.send_obj(400, {"error": "bad JSON: %s" % e})
            return
        if not isinstance(data, dict):
            self.send_obj(400, {"error": "body must be a JSON object"})
            return
        name, method = path[len("/_control/"):], self.command
        try:
            result = self.control_op(app, name, method, q, data)
        except (KeyError, ValueError, TypeError) as e:
            self.send_obj(400, {"error": "bad control request: %s" % e})
            return
        if result is None:
            self.send_obj(404, {"error": "unknown control endpoint %s %s" % (method, path),
                                "help": CONTROL_HELP})
            return
        self.send_obj(200, result)

    def control_op(self, app, name, method, q, data):
        if name == "fail":
            with app.lock:
                if method == "POST":
                    rule = FailRule(data, app.next_rule_id)
                    app.next_rule_id += 1
                    app.fail_rules.append(rule)
                    return {"ok": True, "id": rule.id}
                if method == "DELETE":
                    app.fail_rules = []
                    return {"ok": True}
                if method == "GET":
                    return [r.describe() for r in app.fail_rules if r.count != 0]
        elif name == "conflict":
            with app.lock:
                if method == "POST":
                    app.conflicts.append({"count": int(data.get("count", 1)),
                                          "path_prefix": data.get("path_prefix"),
                                          "bump": bool(data.get("bump", False))})
                    return {"ok": True}
                if method == "DELETE":
                    app.conflicts = []
                    return {"ok": True}
        elif name == "drop_watches" and method == "POST":
            with app.lock:
                return {"ok": True, "dropped": app.drop_watches_locked()}
        elif name == "watches" and method == "GET":
            with app.lock:
                return [{"user": w.user, "path": w.path, "query": w.query,
                         "resource": w.resource, "namespace": w.namespace,
                         "resourceVersion": str(w.start_rv)}
                        for w in app.watches if not w.dropped]
        elif name == "expire" and method == "POST":
            with app.lock:
                app.expire = bool(data.get("on", True))
            return {"ok": True, "on": app.expire}
        elif name == "compact" and method == "POST":
            with app.lock:
                app.events.clear()
                app.history_start = app.rv
            return {"ok": True, "resourceVersion": str(app.rv)}
        elif name == "bookmark_interval" and method == "POST":
            seconds = float(data["seconds"])
            if seconds <= 0:
                raise ValueError("seconds must be positive")
            with app.lock:
                app.bookmark_interval = seconds
                app.cond.notify_all()
            return {"ok": True, "seconds": seconds}
        elif name == "requests":
            with app.log_lock:
                if method == "GET":
                    return list(app.requests)
                if method == "DELETE":
                    app.requests = []
                    return {"ok": True}
        elif name == "objects" and method == "GET":
            resource = q.get("resource", [""])[0]
            namespace = q.get("namespace", [""])[0]
            with app.lock:
                return [copy.deepcopy(o) for (plural, ns, _), o in sorted(app.objects.items())
                        if (not resource or plural == resource) and
                        (not namespace or ns == namespace)]
        elif name == "down" and method == "POST":
            with app.lock:
                app.down = bool(data.get("on", True))
                if app.down:
                    app.drop_watches_locked()
            return {"ok": True, "on": app.down}
        elif name == "state" and method == "GET":
            with app.lock:
                return {"resourceVersion": str(app.rv), "historyStart": str(app.history_start),
                        "events": len(app.events), "watches": len(app.watches),
                        "expire": app.expire, "down": app.down,
                        "bookmarkInterval": app.bookmark_interval}
        return None


VERSION_INFO = {"major": "1", "minor": "32", "gitVersion": "v1.32.0-fake",
                "gitCommit": "0000000000000000000000000000000000000000", "gitTreeState": "clean",
                "buildDate": "2024-12-11T00:00:00Z", "goVersion": "go1.23.3",
                "compiler": "gc", "platform": "linux/amd64"}


class Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 64

    def __init__(self, address, app, ssl_context, verbose=False):
        self.app, self.ssl_context, self.verbose = app, ssl_context, verbose
        super().__init__(address, Handler)

    def server_bind(self):
        socketserver.TCPServer.server_bind(self)  # skip HTTPServer's reverse DNS lookup
        host, port = self.server_address[:2]
        self.server_name, self.server_port = host, port
        self.socket = self.ssl_context.wrap_socket(self.socket, server_side=True,
                                                   do_handshake_on_connect=False)

    def handle_error(self, request, client_address):
        if self.verbose:
            super().handle_error(request, client_address)


def make_ssl_context(cert, key):
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.load_cert_chain(cert, key)
    ctx.set_alpn_protocols(["http/1.1"])
    return ctx


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     epilog=CONTROL_HELP,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cert", required=True)
    parser.add_argument("--key", required=True)
    parser.add_argument("--config", required=True)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--initial-resource-version", type=int, default=None,
                        help="first resourceVersion (default: derived from the clock, so that "
                             "a restarted server never goes back in time)")
    parser.add_argument("--data-file", default=None,
                        help="keep the objects and the resourceVersion counter in FILE, so that "
                             "a restarted server has them (the watch history starts afresh)")
    parser.add_argument("--verbose", action="store_true", help="log requests to stderr")
    args = parser.parse_args(argv)

    with open(args.config, encoding="utf-8") as f:
        config = json.load(f)
    app = App(config, args.initial_resource_version, args.data_file)
    server = Server((args.host, args.port), app, make_ssl_context(args.cert, args.key),
                    args.verbose)

    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.1},
                              daemon=True)
    thread.start()
    sys.stderr.write("listening on port %d\n" % server.server_address[1])
    sys.stderr.flush()
    while not stop.wait(0.5):
        pass
    server.shutdown()
    with app.lock:
        app.drop_watches_locked()
    server.server_close()
    sys.stderr.flush()
    os._exit(0)


if __name__ == "__main__":
    main()
