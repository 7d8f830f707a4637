#!/usr/bin/env python3
"""Renders every kustomization under deploy/ and checks what certcast promises about it.

Usage: kustomize_test.py DEPLOY_DIR

Every directory under DEPLOY_DIR with a kustomization file (except `kind: Component`, which
cannot be built alone; components are covered by the overlays that use them) is rendered with
`kubectl kustomize`, and the objects of each render are checked:

  - every object has apiVersion, kind and metadata.name;
  - RBAC: no ClusterRole touches Secrets; ClusterRoleBindings bind only the server's
    ServiceAccount, to system:auth-delegator or to a ClusterRole of the render that only reads
    namespaces (get/list/watch); RoleBindings reference Roles of the same render and
    namespace; every Role is namespaced, grants no `*`, limits every verb but `create` by
    resourceNames (to Secrets the namespace's Deployments actually use, for Secrets), and
    grants `create` only without resourceNames;
  - every Deployment: images set; runAsNonRoot, readOnlyRootFilesystem,
    allowPrivilegeEscalation false, all capabilities dropped, seccomp RuntimeDefault for every
    container; no Secret or projected volume mounted with subPath (such mounts never update);
  - certcast containers: /healthz liveness and /readyz readiness on the --health-listen port,
    resource requests and limits, every file flag under a volume mount, state/output
    directories on writable mounts, the --ca ConfigMap present in the render;
  - certcast-server: with --store=kubernetes://NS/NAME, NS is its own namespace, its
    ServiceAccount may get/update/list/watch the Secrets NAME-CERTIFICATE and get/update the
    Lease NAME (and create both); with --store=etcd://..., --store-encryption-key-file is set
    (and, as every file flag, on a mount); with either store more than one replica has a
    PodDisruptionBudget; without a store, its --state-dir is a PVC that exists in the render (strategy Recreate when it is
    ReadWriteOnce); its ServiceAccount is bound to system:auth-delegator when it checks
    tokens, and may get/list/watch a Secret it reads through the API;
  - certcast-client: a projected ServiceAccount token with audience certcast behind
    --token-file; its ServiceAccount may do exactly what its flags need (Secret sink,
    --rollout-restart, --delete-on-revoke) and nothing on Secrets without a Secret sink; an API
    token is mounted when it uses the API;
  - the shared writer (certcast-client --shared-writer): in its own namespace only its Lease
    (get/update by name, create) and nothing on Secrets; in a tenant namespace a RoleBinding of
    its ServiceAccount to a Role that allows get/update/patch on exactly its --secret-name and
    create (the opt-in of components/shared-writer-tenant), nothing more; such a Role counts as
    using that Secret in the tenant namespace.

  - anywhere certcast runs: the recommended labels (app.kubernetes.io/name, instance, version,
    component, part-of, managed-by) on every certcast Deployment and its pod template; a
    NetworkPolicy selecting every certcast pod; the restricted Pod Security labels on the
    server's Namespace; the admin identity (--admin) is the certcast-operator ServiceAccount of
    the server's own namespace and exists; a client in the same render reaches the server by
    the Service in the server's namespace; a server outside certcast-system leaves no
    certcast-system behind (outside ConfigMap data); no render that holds a tenant client also
    holds that tenant's Namespace object (`kubectl delete -k` must not delete it).

Flags are read in their --flag=value form (dashes or underscores), after expanding $(VAR) from
the container's env as kubelet does (value, fieldRef metadata.namespace, configMapKeyRef into a
ConfigMap of the render); a reference kubelet could not expand is reported.

After the real tree passes, each rule is shown to fail: known violations are planted into a
copy of the rendered objects and each must be reported.

Without PyYAML (Debian: python3-yaml) or a kubectl with kustomize v5 the test prints SKIP and
exits 77, which ctest reports as skipped; with CI=true it fails instead.
"""

import copy
import json
import os
import posixpath
import re
import shutil
import subprocess
import sys

try:
    import yaml
except ImportError:  # pragma: no cover - depends on the machine
    yaml = None

DEBIAN_PYTHON = "/usr/bin/python3"
KUSTOMIZATION_FILES = ("kustomization.yaml", "kustomization.yml", "Kustomization")
AUTH_DELEGATOR = "system:auth-delegator"
TOKEN_AUDIENCE = "certcast"
# Flags whose value is a file or directory the container reads.
READ_PATH_FLAGS = ("ca", "tls_cert", "tls_key", "client_ca", "token_file", "policy", "pid_file",
                   "kube_token_file", "kube_ca_file", "store_ca", "store_cert", "store_key",
                   "store_encryption_key_file", "store_encryption_previous_key_file")
# The shared writer's ServiceAccount and Secret as deploy/ ships them (a tenant overlay that
# opts in is rendered without the writer).
SHARED_WRITER_ACCOUNT = "certcast-writer"
SHARED_WRITER_SECRET = "wildcard-tls"
# Flags whose value is a directory the container writes.
WRITE_PATH_FLAGS = ("state_dir", "output_dir")


# ---- helpers over rendered objects --------------------------------------------------------

def name_of(obj):
    return (obj.get("metadata") or {}).get("name", "")


def namespace_of(obj):
    return (obj.get("metadata") or {}).get("namespace", "")


def ident(obj):
    ns = namespace_of(obj)
    return f"{obj.get('kind')}/{(ns + '/') if ns else ''}{name_of(obj)}"


def as_list(value):
    return value if isinstance(value, list) else []


def pod_spec(deployment):
    return ((deployment.get("spec") or {}).get("template") or {}).get("spec") or {}


def all_containers(spec):
    return as_list(spec.get("initContainers")) + as_list(spec.get("containers"))


def parse_flags(container):
    """--flag=value arguments (dashes and underscores alike) as {flag: [values]}."""
    flags = {}
    for arg in as_list(container.get("command")) + as_list(container.get("args")):
        if not isinstance(arg, str) or not arg.startswith("--"):
            continue
        key, _, value = arg[2:].partition("=")
        flags.setdefault(key.replace("-", "_"), []).append(value)
    return flags


def certcast_role(container):
    """'server', 'client', 'other' (a certcast image, binary unknown) or None."""
    command = " ".join(str(c) for c in as_list(container.get("command")))
    if "certcast-server" in command:
        return "server"
    if "certcast-client" in command:
        return "client"
    image = str(container.get("image") or "")
    repository = image.rsplit("/", 1)[-1].split("@", 1)[0].split(":", 1)[0]
    if repository.startswith("certcast"):
        return "other"
    return None


def effective(spec, container, key):
    """A securityContext field, the container's overriding the pod's."""
    container_ctx = container.get("securityContext") or {}
    if key in container_ctx:
        return container_ctx[key]
    return (spec.get("securityContext") or {}).get(key)


def mount_for(container, path):
    """The volume mount holding `path` (longest mountPath prefix), or None."""
    best = None
    path = posixpath.normpath(path)
    for mount in as_list(container.get("volumeMounts")):
        mount_path = posixpath.normpath(str(mount.get("mountPath", "")))
        if path == mount_path or path.startswith(mount_path.rstrip("/") + "/"):
            if best is None or len(mount_path) > len(posixpath.normpath(best["mountPath"])):
                best = mount
    return best


def port_number(container, port):
    if isinstance(port, int):
        return port
    for declared in as_list(container.get("ports")):
        if declared.get("name") == port:
            return declared.get("containerPort")
    return None


def rule_touches(rule, group, resource):
    groups = as_list(rule.get("apiGroups"))
    resources = as_list(rule.get("resources"))
    return (group in groups or "*" in groups) and (resource in resources or "*" in resources)


class Render:
    """The objects of one `kubectl kustomize` output, indexed for the checks."""

    def __init__(self, label, objects):
        self.label = label
        self.objects = objects

    def of_kind(self, kind):
        return [o for o in self.objects if isinstance(o, dict) and o.get("kind") == kind]

    def find(self, kind, namespace, name):
        for obj in self.of_kind(kind):
            if name_of(obj) == name and namespace_of(obj) == namespace:
                return obj
        return None

    def rules_for_service_account(self, namespace, account, account_namespace=None):
        """Rules in `namespace` of every Role bound to ServiceAccount account_namespace/account
        (by default an account of `namespace` itself)."""
        account_namespace = account_namespace or namespace
        rules = []
        for binding in self.of_kind("RoleBinding"):
            if namespace_of(binding) != namespace:
                continue
            if not any(s.get("kind") == "ServiceAccount" and s.get("name") == account
                       and s.get("namespace", namespace) == account_namespace
                       for s in as_list(binding.get("subjects"))):
                continue
            ref = binding.get("roleRef") or {}
            role = self.find("Role", namespace, ref.get("name")) if ref.get("kind") == "Role" \
                else None
            if role is not None:
                rules.extend(as_list(role.get("rules")))
        return rules

    def secret_names_used(self, namespace):
        """Secrets that Deployments mount in `namespace` or name in certcast flags."""
        names = set()
        for deployment in self.of_kind("Deployment"):
            spec = pod_spec(deployment)
            local = namespace_of(deployment) == namespace
            for volume in as_list(spec.get("volumes")) if local else []:
                if "secret" in volume:
                    names.add((volume["secret"] or {}).get("secretName"))
                for source in as_list((volume.get("projected") or {}).get("sources")):
                    if "secret" in source:
                        names.add((source["secret"] or {}).get("name"))
            for container in all_containers(spec):
                flags = parse_flags(container)
                if local:
                    names.update(flags.get("secret_name", []))
                for value in flags.get("certificate", []):
                    certificate, _, source = value.partition("=")
                    if source.startswith("secret:"):
                        ns, _, secret = source[len("secret:"):].partition("/")
                        if ns == namespace:
                            names.add(secret)
                    store = kubernetes_store(container)
                    if store and store[0] == namespace:
                        names.add(f"{store[1]}-{certificate}")
        # A tenant's opt-in to the shared writer: its Role grants the writer's Secret here.
        for binding in self.of_kind("RoleBinding"):
            if namespace_of(binding) != namespace:
                continue
            for subject in as_list(binding.get("subjects")):
                if subject.get("kind") != "ServiceAccount" or \
                        subject.get("namespace", namespace) == namespace:
                    continue
                writers = self.shared_writers(subject.get("namespace"), subject.get("name"))
                if writers:
                    for container in writers:
                        names.update(parse_flags(container).get("secret_name", []))
                elif subject.get("name") == SHARED_WRITER_ACCOUNT:
                    # The writer lives in another render (a tenant overlay alone).
                    names.add(SHARED_WRITER_SECRET)
        names.discard(None)
        return names

    def shared_writers(self, namespace, account):
        """--shared-writer containers of Deployments in `namespace` running as `account`."""
        found = []
        for deployment in self.of_kind("Deployment"):
            if namespace_of(deployment) != namespace or \
                    (pod_spec(deployment).get("serviceAccountName") or "default") != account:
                continue
            found.extend(c for c in certcast_containers(deployment, "client")
                         if "shared_writer" in parse_flags(c))
        return found


def allows(rules, group, resource, verb, name=None):
    """Whether the rules allow verb on resource (named `name`, or unnamed for create)."""
    for rule in rules:
        if not rule_touches(rule, group, resource):
            continue
        verbs = as_list(rule.get("verbs"))
        if verb not in verbs and "*" not in verbs:
            continue
        names = as_list(rule.get("resourceNames"))
        if not names or (name is not None and name in names):
            return True
    return False


# ---- the checks ---------------------------------------------------------------------------

RECOMMENDED_LABELS = ("app.kubernetes.io/name", "app.kubernetes.io/instance",
                      "app.kubernetes.io/version", "app.kubernetes.io/component",
                      "app.kubernetes.io/part-of", "app.kubernetes.io/managed-by")
DEFAULT_NAMESPACE = "certcast-system"
ENV_REFERENCE = re.compile(r"\$\(([A-Za-z_][A-Za-z0-9_]*)\)")


def env_value(render, deployment, entry):
    """The value kubelet gives env entry `entry`, or None when it cannot be known or resolved."""
    if "value" in entry:
        return str(entry["value"])
    source = entry.get("valueFrom") or {}
    if (source.get("fieldRef") or {}).get("fieldPath") == "metadata.namespace":
        return namespace_of(deployment)
    ref = source.get("configMapKeyRef")
    if ref:
        config_map = render.find("ConfigMap", namespace_of(deployment), ref.get("name"))
        return None if config_map is None else (config_map.get("data") or {}).get(ref.get("key"))
    return None


def expand_env_references(render, error):
    """Expands $(VAR) in certcast containers' command and args in place, as kubelet does."""
    for deployment in render.of_kind("Deployment"):
        for container in all_containers(pod_spec(deployment)):
            if certcast_role(container) is None:
                continue
            env = {e.get("name"): env_value(render, deployment, e)
                   for e in as_list(container.get("env"))}
            for field in ("command", "args"):
                values = as_list(container.get(field))
                for i, arg in enumerate(values):
                    if not isinstance(arg, str):
                        continue
                    for name in ENV_REFERENCE.findall(arg):
                        if env.get(name) is None:
                            error(deployment, f"container {container.get('name')} uses $({name}) "
                                              "in its arguments, which its env does not define "
                                              "(kubelet would pass it literally)")
                    values[i] = ENV_REFERENCE.sub(
                        lambda m: env.get(m.group(1)) if env.get(m.group(1)) is not None
                        else m.group(0), arg)


def check_render(render):
    """All violations in one render, as human-readable strings."""
    errors = []

    def error(obj, message):
        errors.append(f"{render.label}: {ident(obj) if isinstance(obj, dict) else obj}: {message}")

    raw = render
    render = Render(render.label, copy.deepcopy(render.objects))
    expand_env_references(render, error)

    for obj in render.objects:
        if not isinstance(obj, dict):
            error("document", "is not a mapping")
            continue
        for field in ("apiVersion", "kind"):
            if not obj.get(field):
                error(obj, f"has no {field}")
        if not name_of(obj):
            error(obj, "has no metadata.name")

    check_rbac(render, error)
    for deployment in render.of_kind("Deployment"):
        check_deployment(render, deployment, error)
    check_shape(render, raw, error)
    return errors


def selects(selector, labels):
    return all((labels or {}).get(k) == v for k, v in ((selector or {}).get("matchLabels")
                                                      or {}).items())


def check_shape(render, raw, error):
    """Labels, NetworkPolicies, Pod Security, namespaces: what makes the manifests work as shipped
    in any namespace."""
    servers = [d for d in render.of_kind("Deployment") if certcast_containers(d, "server")]
    server_namespaces = {namespace_of(d) for d in servers}
    for deployment in render.of_kind("Deployment"):
        # certcast's own pods (a sidecar in an application's pod follows the application's).
        if not all(certcast_role(c) for c in all_containers(pod_spec(deployment))):
            continue
        template = (deployment.get("spec") or {}).get("template") or {}
        for where, labels in (("", (deployment.get("metadata") or {}).get("labels")),
                              ("pod template ", (template.get("metadata") or {}).get("labels"))):
            missing = [k for k in RECOMMENDED_LABELS if k not in (labels or {})]
            if missing:
                error(deployment, f"{where}lacks the recommended labels {missing}")
        pod_labels = (template.get("metadata") or {}).get("labels")
        if not any(namespace_of(p) == namespace_of(deployment)
                   and selects((p.get("spec") or {}).get("podSelector"), pod_labels)
                   for p in render.of_kind("NetworkPolicy")):
            error(deployment, "no NetworkPolicy of its namespace selects its pods")

    for deployment in render.of_kind("Deployment"):
        if not certcast_containers(deployment, "client") or deployment in servers:
            continue
        if is_shared_writer(deployment):
            continue  # runs in certcast's own namespace, next to the server
        namespace = namespace_of(deployment)
        if render.find("Namespace", "", namespace) is not None:
            error(deployment, f"the render holds the tenant's Namespace {namespace}: "
                              "`kubectl delete -k` would delete the tenant's namespace")
        for container in certcast_containers(deployment, "client"):
            for server in parse_flags(container).get("server", []):
                parts = server.rsplit(":", 1)[0].split(".")
                if server_namespaces and len(parts) >= 3 and parts[0] == "certcast" \
                        and parts[1] not in server_namespaces:
                    error(deployment, f"--server={server}: the server of this render runs in "
                                      f"{sorted(server_namespaces)}")

    for deployment in servers:
        namespace = namespace_of(deployment)
        ns_object = render.find("Namespace", "", namespace)
        if ns_object is not None:
            labels = (ns_object.get("metadata") or {}).get("labels") or {}
            if labels.get("pod-security.kubernetes.io/enforce") != "restricted":
                error(ns_object, "certcast's Namespace does not enforce the restricted Pod "
                                 "Security profile")
        for container in certcast_containers(deployment, "server"):
            for admin in parse_flags(container).get("admin", []):
                expected = f"system:serviceaccount:{namespace}:certcast-operator"
                if admin != expected:
                    error(deployment, f"--admin={admin} is not the certcast-operator "
                                      f"ServiceAccount of its own namespace ({expected})")
                elif render.find("ServiceAccount", namespace, "certcast-operator") is None:
                    error(deployment, f"--admin names ServiceAccount {namespace}/certcast-operator,"
                                      " which is not in the render")
        if namespace != DEFAULT_NAMESPACE:
            leftovers = [ident(o) for o in raw.objects if isinstance(o, dict)
                         and DEFAULT_NAMESPACE in json.dumps(
                             {k: v for k, v in o.items() if not (o.get("kind") == "ConfigMap"
                                                                 and k == "data")})]
            if leftovers:
                error(deployment, f"the server runs in {namespace} but {leftovers} still name "
                                  f"{DEFAULT_NAMESPACE}")


def reads_only_namespaces(role):
    """A ClusterRole whose every rule is get/list/watch on core namespaces."""
    rules = as_list((role or {}).get("rules"))
    return bool(rules) and all(
        as_list(r.get("apiGroups")) == [""] and as_list(r.get("resources")) == ["namespaces"]
        and set(as_list(r.get("verbs"))) <= {"get", "list", "watch"} for r in rules)


def check_rbac(render, error):
    for role in render.of_kind("ClusterRole"):
        for rule in as_list(role.get("rules")):
            if rule_touches(rule, "", "secrets"):
                error(role, "a ClusterRole grants access to secrets")

    for binding in render.of_kind("ClusterRoleBinding"):
        ref = binding.get("roleRef") or {}
        role = render.find("ClusterRole", "", ref.get("name")) \
            if ref.get("kind") == "ClusterRole" else None
        if ref.get("name") != AUTH_DELEGATOR and not reads_only_namespaces(role):
            error(binding, f"ClusterRoleBinding to {ref.get('kind')}/{ref.get('name')}: the only "
                           f"cluster-scoped grants allowed are {AUTH_DELEGATOR} and reading "
                           "namespaces")
        for subject in as_list(binding.get("subjects")):
            if subject.get("kind") != "ServiceAccount":
                error(binding, f"binds {subject.get('kind')} {subject.get('name')}, not a "
                               "ServiceAccount")

    for binding in render.of_kind("RoleBinding"):
        ref = binding.get("roleRef") or {}
        if ref.get("kind") != "Role":
            error(binding, f"references {ref.get('kind')}/{ref.get('name')}: RoleBindings must "
                           "reference a Role of their own namespace")
        elif render.find("Role", namespace_of(binding), ref.get("name")) is None:
            error(binding, f"references Role {ref.get('name')}, which is not in the render")

    for role in render.of_kind("Role"):
        namespace = namespace_of(role)
        if not namespace:
            error(role, "Role has no namespace")
        used_secrets = render.secret_names_used(namespace)
        for rule in as_list(role.get("rules")):
            verbs = as_list(rule.get("verbs"))
            names = as_list(rule.get("resourceNames"))
            for field in ("apiGroups", "resources", "verbs", "resourceNames"):
                if "*" in as_list(rule.get(field)):
                    error(role, f"grants '*' in {field}")
            if "create" in verbs and names:
                error(role, "grants create with resourceNames, which RBAC cannot enforce for "
                            "create (a silently useless grant): give create in a rule of its own")
            if [v for v in verbs if v != "create"] and not names:
                error(role, f"grants {verbs} on {as_list(rule.get('resources'))} without "
                            "resourceNames")
            if rule_touches(rule, "", "secrets"):
                for secret in names:
                    if secret not in used_secrets:
                        error(role, f"grants {verbs} on Secret {secret}, which no Deployment in "
                                    f"{namespace} uses (used: {sorted(used_secrets)})")


def check_deployment(render, deployment, error):
    spec = pod_spec(deployment)
    volumes = {v.get("name"): v for v in as_list(spec.get("volumes"))}
    containers = all_containers(spec)
    if not as_list(spec.get("containers")):
        error(deployment, "has no containers")

    seccomp = ((spec.get("securityContext") or {}).get("seccompProfile") or {}).get("type")
    for container in containers:
        where = f"container {container.get('name')}"
        if not container.get("image"):
            error(deployment, f"{where} has no image")
        if effective(spec, container, "runAsNonRoot") is not True:
            error(deployment, f"{where} is not runAsNonRoot")
        if effective(spec, container, "runAsUser") == 0:
            error(deployment, f"{where} runs as uid 0")
        ctx = container.get("securityContext") or {}
        if ctx.get("readOnlyRootFilesystem") is not True:
            error(deployment, f"{where} has no readOnlyRootFilesystem")
        if ctx.get("allowPrivilegeEscalation") is not False:
            error(deployment, f"{where} does not set allowPrivilegeEscalation: false")
        if ctx.get("privileged"):
            error(deployment, f"{where} is privileged")
        if "ALL" not in as_list((ctx.get("capabilities") or {}).get("drop")):
            error(deployment, f"{where} does not drop ALL capabilities")
        if (ctx.get("seccompProfile") or {}).get("type", seccomp) != "RuntimeDefault":
            error(deployment, f"{where} has no RuntimeDefault seccomp profile")

        for mount in as_list(container.get("volumeMounts")):
            volume = volumes.get(mount.get("name"))
            if volume is None:
                error(deployment, f"{where} mounts volume {mount.get('name')}, which the pod "
                                  "does not define")
                continue
            sources = as_list((volume.get("projected") or {}).get("sources"))
            carries_credentials = "secret" in volume or any(
                "secret" in s or "serviceAccountToken" in s for s in sources)
            if carries_credentials and (mount.get("subPath") or mount.get("subPathExpr")):
                error(deployment, f"{where} mounts Secret/token volume {mount.get('name')} with "
                                  "subPath: such a mount never sees an update")

        role = certcast_role(container)
        if role is not None:
            check_certcast_container(render, deployment, container, role, volumes, error)


def check_certcast_container(render, deployment, container, role, volumes, error):
    spec = pod_spec(deployment)
    namespace = namespace_of(deployment)
    where = f"certcast container {container.get('name')}"
    flags = parse_flags(container)

    health = (flags.get("health_listen") or [""])[-1]
    health_port = int(health.rsplit(":", 1)[-1]) if health.rsplit(":", 1)[-1].isdigit() else None
    if health_port is None:
        error(deployment, f"{where} has no --health-listen=HOST:PORT for its probes")
    for probe_name, path in (("livenessProbe", "/healthz"), ("readinessProbe", "/readyz")):
        get = (container.get(probe_name) or {}).get("httpGet") or {}
        if get.get("path") != path:
            error(deployment, f"{where} has no {probe_name} httpGet {path}")
        elif health_port is not None and port_number(container, get.get("port")) != health_port:
            error(deployment, f"{where} {probe_name} port {get.get('port')} is not the "
                              f"--health-listen port {health_port}")

    resources = container.get("resources") or {}
    for kind in ("requests", "limits"):
        if not (resources.get(kind) or {}).get("memory"):
            error(deployment, f"{where} has no memory {kind}")

    def mounted(path, flag, writable):
        flag = flag.replace("_", "-")
        mount = mount_for(container, path)
        if mount is None:
            error(deployment, f"{where} --{flag}={path} is on no volume (the root filesystem is "
                              "read-only and a file there cannot be provided)")
        elif writable and mount.get("readOnly"):
            error(deployment, f"{where} --{flag}={path} is on a read-only mount")
        return mount

    for flag in READ_PATH_FLAGS:
        for value in flags.get(flag, []):
            mounted(value, flag, writable=False)
    for flag in WRITE_PATH_FLAGS:
        for value in flags.get(flag, []):
            mounted(value, flag, writable=True)
    for ca in flags.get("ca", []):
        mount = mount_for(container, ca)
        volume = volumes.get((mount or {}).get("name")) or {}
        if "configMap" in volume:
            name = (volume["configMap"] or {}).get("name")
            if render.find("ConfigMap", namespace, name) is None:
                error(deployment, f"{where} --ca comes from ConfigMap {name}, which is not in the "
                                  "render")

    account = spec.get("serviceAccountName") or "default"
    rules = render.rules_for_service_account(namespace, account)

    store = kubernetes_store(container) if role == "server" else None
    if store is not None:
        store_namespace, store_name = store
        if store_namespace != namespace:
            error(deployment, f"{where} --store names namespace {store_namespace}, not its own "
                              f"({namespace})")
        store_rules = render.rules_for_service_account(store_namespace, account, namespace)
        for value in flags.get("certificate", []):
            secret = f"{store_name}-{value.partition('=')[0]}"
            for verb in ("get", "update", "list", "watch"):
                if not allows(store_rules, "", "secrets", verb, secret):
                    error(deployment, f"{where} keeps its versions in Secret {secret} but may not "
                                      f"{verb} it")
        if not allows(store_rules, "", "secrets", "create"):
            error(deployment, f"{where} keeps its versions in Secrets but may not create them")
        for verb in ("get", "update"):
            if not allows(store_rules, "coordination.k8s.io", "leases", verb, store_name):
                error(deployment, f"{where} elects its leader with Lease {store_name} but may not "
                                  f"{verb} it")
        if not allows(store_rules, "coordination.k8s.io", "leases", "create"):
            error(deployment, f"{where} elects its leader with a Lease but may not create it")
    etcd = role == "server" and any(v.startswith("etcd://") for v in flags.get("store", []))
    if etcd and not flags.get("store_encryption_key_file"):
        error(deployment, f"{where} keeps its versions in etcd without "
                          "--store-encryption-key-file (it would not start)")
    if store is not None or etcd:
        replicas = (deployment.get("spec") or {}).get("replicas", 1)
        if replicas > 1 and not any(
                namespace_of(b) == namespace
                and selects((b.get("spec") or {}).get("selector"),
                            ((deployment.get("spec") or {}).get("template") or {})
                            .get("metadata", {}).get("labels"))
                for b in render.of_kind("PodDisruptionBudget")):
            error(deployment, f"{where}: {replicas} replicas and no PodDisruptionBudget")
    if role == "server" and store is None and not etcd:
        state = (flags.get("state_dir") or [""])[-1]
        mount = mount_for(container, state) if state else None
        claim = ((volumes.get((mount or {}).get("name")) or {}).get("persistentVolumeClaim")
                 or {}).get("claimName")
        if not claim:
            error(deployment, f"{where} --state-dir={state or '(default)'} is not on a "
                              "PersistentVolumeClaim")
        elif render.find("PersistentVolumeClaim", namespace, claim) is None:
            error(deployment, f"{where} mounts PVC {claim}, which is not in the render")
        else:
            pvc = render.find("PersistentVolumeClaim", namespace, claim)
            single_node = {"ReadWriteOnce", "ReadWriteOncePod"} & set(
                as_list((pvc.get("spec") or {}).get("accessModes")))
            strategy = ((deployment.get("spec") or {}).get("strategy") or {}).get("type")
            if single_node and strategy != "Recreate":
                error(deployment, f"the server holds the ReadWriteOnce PVC {claim}: strategy "
                                  "must be Recreate, or the new pod never starts")
    if role == "server":
        for value in flags.get("certificate", []):
            _, _, source = value.partition("=")
            if source.startswith("secret:"):
                ns, _, secret = source[len("secret:"):].partition("/")
                source_rules = render.rules_for_service_account(ns, account, namespace)
                for verb in ("get", "list", "watch"):
                    if not allows(source_rules, "", "secrets", verb, secret):
                        error(deployment, f"{where} reads Secret {ns}/{secret} but its "
                                          f"ServiceAccount may not {verb} it")
            else:
                mounted(source, "certificate", writable=False)
        if "watch_namespaces" in flags and not any(
                reads_only_namespaces(render.find("ClusterRole", "", (b.get("roleRef") or {})
                                                  .get("name"))) and any(
                    s.get("kind") == "ServiceAccount" and s.get("name") == account
                    and s.get("namespace") == namespace for s in as_list(b.get("subjects")))
                for b in render.of_kind("ClusterRoleBinding")):
            error(deployment, f"{where} has --watch-namespaces but ServiceAccount {account} may "
                              "not read namespaces")
        if flags.get("token_audience"):
            bound = any(
                (b.get("roleRef") or {}).get("name") == AUTH_DELEGATOR and any(
                    s.get("kind") == "ServiceAccount" and s.get("name") == account
                    and s.get("namespace") == namespace for s in as_list(b.get("subjects")))
                for b in render.of_kind("ClusterRoleBinding"))
            if not bound:
                error(deployment, f"{where} checks tokens (--token-audience) but ServiceAccount "
                                  f"{account} is not bound to {AUTH_DELEGATOR}")

    if role == "client":
        check_client_identity(deployment, container, flags, volumes, error, where)
        if "shared_writer" in flags:
            check_shared_writer_permissions(render, deployment, flags, rules, error, where)
        else:
            check_client_permissions(deployment, flags, rules, error, where)
        uses_api = flags.get("secret_name") or flags.get("rollout_restart")
        if uses_api and spec.get("automountServiceAccountToken") is False \
                and not flags.get("kube_token_file"):
            error(deployment, f"{where} uses the Kubernetes API but the pod mounts no API token "
                              "(automountServiceAccountToken: false, no --kube-token-file)")


def kubernetes_store(container):
    """(namespace, name) of --store=kubernetes://NAMESPACE/NAME, or None."""
    for value in parse_flags(container).get("store", []):
        if value.startswith("kubernetes://"):
            namespace, _, name = value[len("kubernetes://"):].partition("/")
            return namespace, name
    return None


def check_client_identity(deployment, container, flags, volumes, error, where):
    token_files = flags.get("token_file", [])
    if not token_files:
        error(deployment, f"{where} has no --token-file (projected token, audience "
                          f"{TOKEN_AUDIENCE})")
        return
    token = token_files[-1]
    mount = mount_for(container, token)
    volume = volumes.get((mount or {}).get("name")) or {}
    relative = posixpath.relpath(token, posixpath.normpath((mount or {}).get("mountPath", "/")))
    sources = [s.get("serviceAccountToken") or {}
               for s in as_list((volume.get("projected") or {}).get("sources"))]
    if not any(s.get("audience") == TOKEN_AUDIENCE and s.get("path") == relative
               for s in sources):
        error(deployment, f"{where} --token-file={token} is not a projected ServiceAccount token "
                          f"with audience {TOKEN_AUDIENCE}")


def check_shared_writer_permissions(render, deployment, flags, rules, error, where):
    lease = (flags.get("writer_lease") or ["certcast-writer"])[-1]
    for verb in ("get", "update"):
        if not allows(rules, "coordination.k8s.io", "leases", verb, lease):
            error(deployment, f"{where} elects its writer with Lease {lease} but may not {verb} it")
    if not allows(rules, "coordination.k8s.io", "leases", "create"):
        error(deployment, f"{where} may not create its Lease {lease}")
    if any(rule_touches(r, "", "secrets") for r in rules):
        error(deployment, f"{where} is the shared writer but may touch Secrets in its own "
                          "namespace; it writes only tenants' Secrets, each granted by the tenant")
    namespace = namespace_of(deployment)
    account = pod_spec(deployment).get("serviceAccountName") or "default"
    secrets = flags.get("secret_name", [])
    for binding in render.of_kind("RoleBinding"):
        tenant = namespace_of(binding)
        if tenant == namespace or not any(
                s.get("kind") == "ServiceAccount" and s.get("name") == account
                and s.get("namespace") == namespace for s in as_list(binding.get("subjects"))):
            continue
        granted = render.rules_for_service_account(tenant, account, namespace)
        for secret in secrets:
            for verb in ("get", "update", "patch"):
                if not allows(granted, "", "secrets", verb, secret):
                    error(binding, f"{tenant} opts in to the shared writer but does not let it "
                                   f"{verb} Secret {secret}")
        if not allows(granted, "", "secrets", "create"):
            error(binding, f"{tenant} opts in to the shared writer but does not let it create "
                           "Secrets")
        for rule in granted:
            extra = set(as_list(rule.get("resourceNames"))) - set(secrets)
            if not rule_touches(rule, "", "secrets") or extra or \
                    set(as_list(rule.get("verbs"))) - {"get", "update", "patch", "create"}:
                error(binding, f"{tenant} grants the shared writer more than its Secret: {rule}")


def check_client_permissions(deployment, flags, rules, error, where):
    secrets = flags.get("secret_name", [])
    for secret in secrets:
        for verb in ("get", "update", "patch"):
            if not allows(rules, "", "secrets", verb, secret):
                error(deployment, f"{where} writes Secret {secret} but may not {verb} it")
        if not allows(rules, "", "secrets", "create"):
            error(deployment, f"{where} writes Secret {secret} but may not create Secrets")
    if not secrets:
        secret_rules = [r for r in rules if rule_touches(r, "", "secrets")]
        if secret_rules:
            error(deployment, f"{where} has no Secret sink but its ServiceAccount may "
                              f"{sorted({v for r in secret_rules for v in as_list(r.get('verbs'))})}"
                              " Secrets")
    deleting = "delete_on_revoke" in flags
    for secret in secrets:
        if deleting and not allows(rules, "", "secrets", "delete", secret):
            error(deployment, f"{where} has --delete-on-revoke but may not delete {secret}")
    if not deleting and any(rule_touches(r, "", "secrets") and "delete" in as_list(r.get("verbs"))
                            for r in rules):
        error(deployment, f"{where} may delete Secrets without --delete-on-revoke")
    restarted = set()
    for value in flags.get("rollout_restart", []):
        kind, _, name = value.partition("/")
        restarted.add(name)
        if kind != "deployment" or not allows(rules, "apps", "deployments", "patch", name):
            error(deployment, f"{where} has --rollout-restart={value} but may not patch "
                              f"deployment {name}")
    for rule in rules:
        if rule_touches(rule, "apps", "deployments"):
            extra = set(as_list(rule.get("resourceNames"))) - restarted
            if extra or not rule.get("resourceNames"):
                error(deployment, f"{where} may patch deployments {sorted(extra) or 'all'} that "
                                  "it does not --rollout-restart")


# ---- planted violations: every rule must be able to fail ----------------------------------

def first(objects, predicate):
    for obj in objects:
        if isinstance(obj, dict) and predicate(obj):
            return obj
    return None


def certcast_containers(obj, role):
    return [c for c in all_containers(pod_spec(obj)) if certcast_role(c) == role]


def is_server(obj):
    return obj.get("kind") == "Deployment" and bool(certcast_containers(obj, "server"))


def is_secret_client(obj):
    return obj.get("kind") == "Deployment" and any(
        "secret_name" in parse_flags(c) and "shared_writer" not in parse_flags(c)
        for c in certcast_containers(obj, "client"))


def is_file_client(obj):
    return obj.get("kind") == "Deployment" and any(
        "secret_name" not in parse_flags(c) for c in certcast_containers(obj, "client"))


def is_shared_writer(obj):
    return obj.get("kind") == "Deployment" and any(
        "shared_writer" in parse_flags(c) for c in certcast_containers(obj, "client"))


def is_writer_opt_in_role(obj):
    return obj.get("kind") == "Role" and name_of(obj) == SHARED_WRITER_ACCOUNT


def plant_writer_secret_grant(objects):
    d = first(objects, is_shared_writer)
    ns, account = namespace_of(d), pod_spec(d).get("serviceAccountName") or "default"
    objects.append({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role",
                    "metadata": {"name": "extra", "namespace": ns},
                    "rules": [{"apiGroups": [""], "resources": ["secrets"], "verbs": ["create"]}]})
    objects.append({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
                    "metadata": {"name": "extra", "namespace": ns},
                    "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role",
                                "name": "extra"},
                    "subjects": [{"kind": "ServiceAccount", "name": account, "namespace": ns}]})


def plant_writer_without_lease(objects):
    for obj in objects:
        if isinstance(obj, dict) and obj.get("kind") == "Role":
            for rule in as_list(obj.get("rules")):
                if rule_touches(rule, "coordination.k8s.io", "leases") and \
                        "certcast-writer" in as_list(rule.get("resourceNames")):
                    rule["verbs"] = ["get"]


def plant_writer_opt_in_too_wide(objects):
    role = first(objects, is_writer_opt_in_role)
    role["rules"].append({"apiGroups": [""], "resources": ["secrets"],
                          "resourceNames": ["wildcard-tls"], "verbs": ["delete"]})


def plant_writer_opt_in_without_update(objects):
    role = first(objects, is_writer_opt_in_role)
    for rule in role["rules"]:
        if "update" in rule.get("verbs", []):
            rule["verbs"].remove("update")


def is_secret_role(obj):
    return obj.get("kind") == "Role" and any(
        rule_touches(r, "", "secrets") and r.get("resourceNames") for r in as_list(obj.get("rules")))


def is_client_secret_role(obj):
    return obj.get("kind") == "Role" and any(
        rule_touches(r, "", "secrets") and "update" in as_list(r.get("verbs"))
        for r in as_list(obj.get("rules")))


def plant_subpath(objects):
    d = first(objects, is_server)
    volumes = {v["name"]: v for v in pod_spec(d)["volumes"]}
    for container in all_containers(pod_spec(d)):
        for mount in as_list(container.get("volumeMounts")):
            if "secret" in volumes[mount["name"]]:
                mount["subPath"] = "tls.crt"
                return


def plant_cluster_role_on_secrets(objects):
    objects.append({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
                    "metadata": {"name": "copier"},
                    "rules": [{"apiGroups": [""], "resources": ["secrets"], "verbs": ["get"]}]})


def plant_cluster_admin_binding(objects):
    binding = first(objects, lambda o: o.get("kind") == "ClusterRoleBinding")
    binding["roleRef"]["name"] = "cluster-admin"


def plant_no_namespace_reader(objects):
    objects[:] = [o for o in objects if not (o.get("kind") == "ClusterRoleBinding"
                                             and name_of(o) == "certcast-server-namespaces")]


def plant_namespace_writer(objects):
    role = first(objects, lambda o: o.get("kind") == "ClusterRole")
    role["rules"][0]["verbs"].append("update")


def plant_unnamed_secret_update(objects):
    role = first(objects, is_secret_role)
    for rule in role["rules"]:
        if rule.get("resourceNames"):
            del rule["resourceNames"]
            return


def plant_named_create(objects):
    role = first(objects, is_client_secret_role)
    for rule in role["rules"]:
        if "create" in rule.get("verbs", []):
            rule["resourceNames"] = ["wildcard-tls"]
            return
    role["rules"][0]["verbs"].append("create")


def plant_star(objects):
    first(objects, is_secret_role)["rules"][0]["verbs"] = ["*"]


def plant_cluster_scoped_role(objects):
    del first(objects, is_secret_role)["metadata"]["namespace"]


def plant_missing_readiness(objects):
    del certcast_containers(first(objects, is_server), "server")[0]["readinessProbe"]


def plant_missing_liveness(objects):
    del certcast_containers(first(objects, is_secret_client), "client")[0]["livenessProbe"]


def plant_root(objects):
    d = first(objects, is_secret_client)
    certcast_containers(d, "client")[0]["securityContext"]["runAsNonRoot"] = False


def plant_writable_root(objects):
    d = first(objects, is_server)
    certcast_containers(d, "server")[0]["securityContext"]["readOnlyRootFilesystem"] = False


def plant_escalation(objects):
    d = first(objects, is_secret_client)
    del certcast_containers(d, "client")[0]["securityContext"]["allowPrivilegeEscalation"]


def plant_no_image(objects):
    certcast_containers(first(objects, is_server), "server")[0]["image"] = ""


def plant_missing_pvc(objects):
    objects.remove(first(objects, lambda o: o.get("kind") == "PersistentVolumeClaim"))


def plant_wrong_audience(objects):
    d = first(objects, is_secret_client)
    for volume in pod_spec(d)["volumes"]:
        for source in as_list((volume.get("projected") or {}).get("sources")):
            if "serviceAccountToken" in source:
                source["serviceAccountToken"]["audience"] = "https://kubernetes.default.svc"


def plant_missing_secret_grant(objects):
    role = first(objects, is_client_secret_role)
    for rule in role["rules"]:
        if "update" in rule.get("verbs", []):
            rule["verbs"].remove("update")


def plant_secret_grant_for_files_client(objects):
    d = first(objects, is_file_client)
    ns, account = namespace_of(d), pod_spec(d).get("serviceAccountName") or "default"
    objects.append({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role",
                    "metadata": {"name": "extra", "namespace": ns},
                    "rules": [{"apiGroups": [""], "resources": ["secrets"], "verbs": ["create"]}]})
    objects.append({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
                    "metadata": {"name": "extra", "namespace": ns},
                    "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role",
                                "name": "extra"},
                    "subjects": [{"kind": "ServiceAccount", "name": account, "namespace": ns}]})


def plant_no_api_token(objects):
    pod_spec(first(objects, is_secret_client))["automountServiceAccountToken"] = False


def plant_rolling_update(objects):
    first(objects, is_server)["spec"]["strategy"] = {"type": "RollingUpdate"}


def plant_state_on_root(objects):
    container = certcast_containers(first(objects, is_secret_client), "client")[0]
    container["args"] = [a for a in container["args"] if not a.startswith("--state-dir")]
    container["args"].append("--state-dir=/var/lib/elsewhere")


def plant_missing_ca(objects):
    objects.remove(first(objects, lambda o: o.get("kind") == "ConfigMap"
                         and name_of(o) == "certcast-ca"))


def plant_unnamed_rollout(objects):
    role = first(objects, is_client_secret_role)
    role["rules"].append({"apiGroups": ["apps"], "resources": ["deployments"],
                          "resourceNames": ["someone-else"], "verbs": ["patch"]})


def plant_missing_version_label(objects):
    d = first(objects, is_server)
    del d["spec"]["template"]["metadata"]["labels"]["app.kubernetes.io/version"]


def plant_tenant_namespace(objects):
    d = first(objects, is_secret_client)
    objects.append({"apiVersion": "v1", "kind": "Namespace",
                    "metadata": {"name": namespace_of(d)}})


def plant_undefined_env(objects):
    d = first(objects, is_secret_client)
    for container in certcast_containers(d, "client"):
        container["env"] = [e for e in as_list(container.get("env"))
                            if e.get("name") != "CERTCAST_SERVER"]


def plant_no_network_policy(objects):
    objects[:] = [o for o in objects if o.get("kind") != "NetworkPolicy"]


def plant_privileged_namespace(objects):
    ns = first(objects, lambda o: o.get("kind") == "Namespace")
    ns["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] = "privileged"


def plant_foreign_admin(objects):
    for container in certcast_containers(first(objects, is_server), "server"):
        container["args"] = [a.replace("$(POD_NAMESPACE)", "elsewhere") for a in container["args"]]


def is_moved_server(obj):
    return is_server(obj) and namespace_of(obj) != DEFAULT_NAMESPACE


def plant_subject_left_behind(objects):
    binding = first(objects, lambda o: o.get("kind") == "RoleBinding"
                    and name_of(o) == "certcast-server-source")
    binding["subjects"][0]["namespace"] = DEFAULT_NAMESPACE


def plant_client_to_other_server(objects):
    for d in objects:
        if d.get("kind") == "Deployment" and not is_server(d):
            for container in certcast_containers(d, "client"):
                for entry in as_list(container.get("env")):
                    if entry.get("name") == "CERTCAST_SERVER":
                        entry["value"] = "certcast.elsewhere.svc:8443"


def is_pvc_server(obj):
    return is_server(obj) and any("persistentVolumeClaim" in v
                                  for v in as_list(pod_spec(obj).get("volumes")))


def plant_no_lease_grant(objects):
    role = first(objects, lambda o: o.get("kind") == "Role" and name_of(o) == "certcast-server-store")
    role["rules"] = [r for r in role["rules"] if "leases" not in as_list(r.get("resources"))]


def is_etcd_server(obj):
    return is_server(obj) and any(a.startswith("--store=etcd://")
                                  for c in certcast_containers(obj, "server")
                                  for a in as_list(c.get("args")))


def plant_no_encryption_key(objects):
    for container in certcast_containers(first(objects, is_etcd_server), "server"):
        container["args"] = [a for a in container["args"]
                             if not a.startswith("--store-encryption-key-file")]


def plant_unmounted_store_key(objects):
    container = certcast_containers(first(objects, is_etcd_server), "server")[0]
    container["volumeMounts"] = [m for m in container["volumeMounts"]
                                 if m.get("mountPath") != "/etc/certcast/store-encryption"]


def plant_no_pdb(objects):
    objects[:] = [o for o in objects if o.get("kind") != "PodDisruptionBudget"]


# (name, which render it needs (an object predicate, or a tuple that must all find an object),
#  planting function, text the report must contain)
PLANTS = [
    ("Secret mounted with subPath", is_server, plant_subpath, "subPath"),
    ("ClusterRole on secrets", is_server, plant_cluster_role_on_secrets,
     "ClusterRole grants access to secrets"),
    ("ClusterRoleBinding to cluster-admin", is_server, plant_cluster_admin_binding,
     "only cluster-scoped grants"),
    ("namespace reader that also writes", is_server, plant_namespace_writer,
     "only cluster-scoped grants"),
    ("--watch-namespaces without the namespace reader", is_server, plant_no_namespace_reader,
     "may not read namespaces"),
    ("Secret verbs without resourceNames", is_secret_client, plant_unnamed_secret_update,
     "without resourceNames"),
    ("create with resourceNames", is_secret_client, plant_named_create, "create with resourceNames"),
    ("'*' verb", is_secret_client, plant_star, "grants '*'"),
    ("Role without namespace", is_secret_client, plant_cluster_scoped_role, "has no namespace"),
    ("no readiness probe", is_server, plant_missing_readiness, "readinessProbe"),
    ("no liveness probe", is_secret_client, plant_missing_liveness, "livenessProbe"),
    ("runAsNonRoot false", is_secret_client, plant_root, "runAsNonRoot"),
    ("writable root filesystem", is_server, plant_writable_root, "readOnlyRootFilesystem"),
    ("privilege escalation allowed", is_secret_client, plant_escalation,
     "allowPrivilegeEscalation"),
    ("no image", is_server, plant_no_image, "has no image"),
    ("PVC missing", is_pvc_server, plant_missing_pvc, "not in the render"),
    ("Secret sink without an API token", is_secret_client, plant_no_api_token,
     "mounts no API token"),
    ("RollingUpdate with a RWO PVC", is_pvc_server, plant_rolling_update, "must be Recreate"),
    ("token audience not certcast", is_secret_client, plant_wrong_audience,
     f"audience {TOKEN_AUDIENCE}"),
    ("Secret sink without update", is_secret_client, plant_missing_secret_grant,
     "may not update"),
    ("files-only client may create Secrets", is_file_client, plant_secret_grant_for_files_client,
     "has no Secret sink"),
    ("state dir on the read-only root", is_secret_client, plant_state_on_root, "is on no volume"),
    ("CA ConfigMap missing", is_secret_client, plant_missing_ca, "--ca comes from ConfigMap"),
    ("patch on a Deployment it does not restart", is_secret_client, plant_unnamed_rollout,
     "that it does not --rollout-restart"),
    ("recommended label missing", is_server, plant_missing_version_label,
     "lacks the recommended labels"),
    ("tenant overlay holds the tenant's Namespace", is_secret_client, plant_tenant_namespace,
     "would delete the tenant's namespace"),
    ("$(VAR) without an env entry", is_secret_client, plant_undefined_env,
     "which its env does not define"),
    ("no NetworkPolicy", is_server, plant_no_network_policy, "no NetworkPolicy"),
    ("store without its Lease grant", is_server, plant_no_lease_grant,
     "elects its leader with Lease"),
    ("replicas without a PodDisruptionBudget", is_server, plant_no_pdb,
     "no PodDisruptionBudget"),
    ("etcd replicas without a PodDisruptionBudget", is_etcd_server, plant_no_pdb,
     "no PodDisruptionBudget"),
    ("etcd store without an encryption key", is_etcd_server, plant_no_encryption_key,
     "without --store-encryption-key-file"),
    ("etcd encryption key file not mounted", is_etcd_server, plant_unmounted_store_key,
     "--store-encryption-key-file=/etc/certcast/store-encryption/key is on no volume"),
    ("certcast's Namespace not restricted", is_server, plant_privileged_namespace,
     "restricted Pod Security"),
    ("--admin of another namespace", is_server, plant_foreign_admin,
     "not the certcast-operator ServiceAccount of its own namespace"),
    ("RBAC subject left in certcast-system", is_moved_server, plant_subject_left_behind,
     "still name certcast-system"),
    ("shared writer with a Secret grant at home", is_shared_writer, plant_writer_secret_grant,
     "may touch Secrets in its own namespace"),
    ("shared writer without its Lease", is_shared_writer, plant_writer_without_lease,
     "may not update it"),
    ("tenant grants the shared writer more", (is_shared_writer, is_writer_opt_in_role),
     plant_writer_opt_in_too_wide, "grants the shared writer more than its Secret"),
    ("tenant opt-in without update", (is_shared_writer, is_writer_opt_in_role),
     plant_writer_opt_in_without_update, "does not let it update"),
    ("client pointed at a server elsewhere", (is_server, is_secret_client),
     plant_client_to_other_server,
     "the server of this render runs in"),
]


def self_test(renders):
    """Plants each violation into a copy of a render that has the object; each must be caught."""
    failures = []
    for title, needs, plant, expected in PLANTS:
        predicates = needs if isinstance(needs, tuple) else (needs,)
        render = next((r for r in renders if all(first(r.objects, p) for p in predicates)), None)
        if render is None:
            failures.append(f"planted '{title}': no render has the object it needs")
            continue
        objects = copy.deepcopy(render.objects)
        plant(objects)
        errors = check_render(Render(render.label, objects))
        if not any(expected in e for e in errors):
            failures.append(f"planted '{title}' into {render.label}: not reported "
                            f"(expected '{expected}'; got {errors or 'no errors'})")
    return failures


# ---- main ---------------------------------------------------------------------------------

def kustomization_dirs(root):
    found = []
    for directory, subdirs, files in os.walk(root):
        subdirs.sort()
        for candidate in KUSTOMIZATION_FILES:
            if candidate in files:
                with open(os.path.join(directory, candidate), encoding="utf-8") as f:
                    try:
                        content = yaml.safe_load(f)
                    except yaml.YAMLError:
                        content = None  # kubectl kustomize reports it
                kind = content.get("kind") if isinstance(content, dict) else None
                if kind != "Component":
                    found.append(directory)
                break
    return found


# ctest reports a test that exits with this code as skipped (SKIP_RETURN_CODE in
# tests/CMakeLists.txt), not passed.
SKIP_EXIT = 77


def missing_tool(what):
    """A tool the test needs is missing: a skip ctest reports as such, a failure under CI=true."""
    if os.environ.get("CI", "").strip().lower() in ("true", "1", "yes"):
        print(f"FAIL: {what}; with CI=true a missing tool is a failure, not a skip")
        return 1
    print(f"SKIP: {what}")
    return SKIP_EXIT


def main(argv):
    if len(argv) != 2:
        print(f"usage: {argv[0]} DEPLOY_DIR", file=sys.stderr)
        return 2
    root = os.path.abspath(argv[1])
    if yaml is None and sys.executable != DEBIAN_PYTHON and os.access(DEBIAN_PYTHON, os.X_OK):
        # CMake may have found another interpreter (pyenv, a venv); python3-yaml serves Debian's.
        os.execv(DEBIAN_PYTHON, [DEBIAN_PYTHON] + argv)
    if yaml is None:
        return missing_tool("PyYAML is not installed (Debian: apt-get install python3-yaml)")
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        return missing_tool("kubectl is not on PATH (needs kubectl >= 1.27 with kustomize v5)")

    version = subprocess.run([kubectl, "version", "--client", "-o", "json"], capture_output=True,
                             text=True, check=False)
    try:
        kustomize = json.loads(version.stdout).get("kustomizeVersion", "")
    except ValueError:
        kustomize = ""
    major = kustomize.lstrip("v").split(".", 1)[0]
    if not major.isdigit() or int(major) < 5:
        return missing_tool(
            f"{kubectl} has kustomize {kustomize or 'of unknown version'}; components and "
            "`labels:` need kustomize v5 (kubectl >= 1.27; Debian's kubernetes-client is too old)")

    dirs = kustomization_dirs(root)
    if not dirs:
        print(f"FAIL: no kustomization under {root}")
        return 1

    renders, errors = [], []
    for directory in dirs:
        label = os.path.relpath(directory, root)
        result = subprocess.run([kubectl, "kustomize", directory], capture_output=True,
                                text=True, check=False)
        if result.returncode != 0:
            errors.append(f"{label}: kubectl kustomize failed: {result.stderr.strip()}")
            continue
        try:
            objects = [o for o in yaml.safe_load_all(result.stdout) if o is not None]
        except yaml.YAMLError as e:
            errors.append(f"{label}: output is not YAML: {e}")
            continue
        render = Render(label, objects)
        renders.append(render)
        found = check_render(render)
        errors.extend(found)
        print(f"{'ok  ' if not found else 'FAIL'} {label}: {len(objects)} objects")

    if not errors:
        errors.extend(self_test(renders))
        if not errors:
            print(f"planted violations: all {len(PLANTS)} reported")

    for e in errors:
        print(f"  {e}")
    print(f"{len(dirs)} kustomizations rendered, {len(errors)} problems")
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
