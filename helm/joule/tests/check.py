#!/usr/bin/env python3
"""The chart's checks, offline: lint, render with the default and every example values file,
validate every rendered manifest against the Kubernetes 1.30 schemas (strict), refuse bad
values with a message naming them, and assert what the manifests must say (the scheduler's
peers, PVCs, probes and PDB; the NetworkPolicy that leaves only the gateway's client ports
open; the security context of every pod; GPU pools; secrets; TLS; the apply Job).

Run by deploy/check-deploy.sh (which fetches helm and kubernetes-validate first). Each check
prints one line; the first failure stops with the reason and exit status 1.
"""

import json
import os
import subprocess
import sys
import tempfile

import yaml

CHART = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
EXAMPLES = os.path.join(CHART, "examples")
HELM = os.environ.get("HELM", "helm")
KV = os.environ.get("KUBERNETES_VALIDATE", "kubernetes-validate")
KUBE = "1.30.0"
NS = "ai"
REL = "rel"
# Custom resources the Kubernetes schemas do not carry: checked field by field below.
CRDS = {("cert-manager.io/v1", "Certificate"), ("monitoring.coreos.com/v1", "ServiceMonitor")}

passed = 0


def ok(what):
    global passed
    passed += 1
    print(f"ok   {what}")


def fail(what):
    print(f"FAIL {what}", file=sys.stderr)
    sys.exit(1)


def check(cond, what):
    if not cond:
        fail(what)


def helm(*args):
    return subprocess.run([HELM, *args], capture_output=True, text=True)


def render(values=None, text=None, sets=()):
    """Renders the chart; returns (documents, error text)."""
    args = ["template", REL, CHART, "--namespace", NS]
    tmp = None
    if text is not None:
        tmp = tempfile.NamedTemporaryFile("w", suffix=".yaml", delete=False)
        tmp.write(text)
        tmp.close()
        args += ["-f", tmp.name]
    if values:
        args += ["-f", values]
    for s in sets:
        args += ["--set", s]
    r = helm(*args)
    if tmp:
        os.unlink(tmp.name)
    if r.returncode != 0:
        return None, r.stderr
    return [d for d in yaml.safe_load_all(r.stdout) if d], r.stdout


def find(docs, kind, name=None):
    out = [d for d in docs if d["kind"] == kind and (name is None or d["metadata"]["name"] == name)]
    return out


def one(docs, kind, name):
    got = find(docs, kind, name)
    check(len(got) == 1, f"exactly one {kind} {name} (found {len(got)})")
    return got[0]


def env_of(container):
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in container.get("env", [])}


def pod_specs(docs):
    for d in docs:
        if d["kind"] in ("Deployment", "StatefulSet", "DaemonSet", "Job"):
            yield d, d["spec"]["template"]["spec"]


def refused(text, must_name, why):
    docs, err = render(text=text)
    check(docs is None, f"{why}: values were accepted:\n{text}")
    check(must_name in err, f"{why}: the error does not name {must_name!r}: {err}")
    line = next((l for l in err.splitlines() if "fail" in l or " - " in l), err.strip().splitlines()[0])
    ok(f"refused: {why} ({line.strip()[:120]})")


# ------------------------------------------------------------------ lint, render, validate
examples = sorted(os.path.join(EXAMPLES, f) for f in os.listdir(EXAMPLES) if f.endswith(".yaml"))
check(len(examples) >= 3, "at least three example values files")
for values in [None, *examples]:
    label = os.path.basename(values) if values else "default values"
    r = helm("lint", "--strict", CHART, *(["-f", values] if values else []))
    check(r.returncode == 0, f"helm lint --strict ({label}):\n{r.stdout}{r.stderr}")
    docs, out = render(values)
    check(docs is not None, f"helm template ({label}): {out}")
    with tempfile.NamedTemporaryFile("w", suffix=".yaml", delete=False) as f:
        f.write(out)
    r = subprocess.run([KV, "--strict", "-k", KUBE, f.name], capture_output=True, text=True)
    os.unlink(f.name)
    lines = [l for l in (r.stdout + r.stderr).splitlines() if l.strip()]
    bad = [l for l in lines if not l.startswith("INFO")
           and not any(f"kind {k} with api version {a}" in l for a, k in CRDS)]
    check(not bad, f"kubernetes-validate --strict ({label}):\n" + "\n".join(bad))
    passed_n = sum(1 for l in lines if l.startswith("INFO") and "passed" in l)
    crds = [d for d in docs if (d["apiVersion"], d["kind"]) in CRDS]
    check(passed_n + len(crds) == len(docs),
          f"every manifest validated ({label}): {passed_n} passed + {len(crds)} custom of {len(docs)}")
    ok(f"lint, template and kubernetes-validate --strict -k {KUBE}: {label} ({len(docs)} manifests)")

default, _ = render()

# ------------------------------------------------------------------ the schema refuses
refused("schedular: {replicas: 3}\n", "schedular", "an unknown top-level key")
refused("scheduler: {replica: 3}\n", "replica", "an unknown nested key")
refused("gpuPools: [{name: p40, resourceName: nvidia.com/gpu, nodeSelector: {a: b}, gpu: 1}]\n",
        "gpu", "an unknown key in a GPU pool")
refused("scheduler: {replicas: \"3\"}\n", "scheduler.replicas", "a string where an integer goes")
refused("gateway: {httpPort: 70000}\n", "gateway.httpPort", "a port out of range")
refused("cpuWorkers: {enabled: \"yes\"}\n", "cpuWorkers.enabled", "a string where a boolean goes")
refused("models: [{name: m, source: s, sha256: nothex}]\n", "sha256", "a malformed sha256")
refused("gateway: {routing: fastest}\n", "gateway.routing", "an unknown routing policy")

# ------------------------------------------------------------------ values that cannot work
refused("scheduler: {replicas: 2}\n", "scheduler.replicas", "2 scheduler replicas")
docs, err = render(sets=["scheduler.replicas=4"])
check(docs is None and "scheduler.replicas" in err, f"4 replicas refused: {err}")
ok("refused: 4 scheduler replicas")
refused("gpuPools: [{name: p40, nodeSelector: {gpu: p40}}]\n", "resourceName",
        "a GPU pool with no resource name")
refused("gpuPools: [{name: p40, resourceName: nvidia.com/gpu}]\n", "nodeSelector",
        "a GPU pool with no nodeSelector")
refused("tls: {enabled: true}\n", "tls", "TLS with no certificate source")
refused("tls: {enabled: true, certManager: {enabled: true}}\n", "issuerRef.name",
        "cert-manager with no issuer")
refused("cpuWorkers: {enabled: false}\n", "cpuWorkers", "no workers at all")
refused("models: []\ndeployments: [{name: d, model: nope}]\n", "nope",
        "a deployment of an undeclared model")
refused("gateway: {ingress: {enabled: true}}\n", "gateway.ingress.hosts", "an Ingress with no host")
refused("serviceMonitor: {enabled: true}\n", "networkPolicy.metricsFrom",
        "a ServiceMonitor the NetworkPolicy would keep out")
refused("gpuPools: [{name: p40, resourceName: nvidia.com/gpu, nodeSelector: {a: b}, gpus: 2}]\n",
        "gpus", "two GPUs for one worker")

# ------------------------------------------------------------------ the scheduler StatefulSet
def scheduler_checks(docs, n, label):
    sts = one(docs, "StatefulSet", f"{REL}-joule-scheduler")
    spec = sts["spec"]
    check(spec["replicas"] == n, f"{label}: {n} replicas")
    check(spec["podManagementPolicy"] == "Parallel", f"{label}: replicas start together")
    headless = one(docs, "Service", f"{REL}-joule-scheduler-headless")
    check(spec["serviceName"] == headless["metadata"]["name"], f"{label}: serviceName is the headless Service")
    check(headless["spec"]["clusterIP"] == "None" and headless["spec"]["publishNotReadyAddresses"],
          f"{label}: the headless Service publishes replicas before they are ready")
    cm = one(docs, "ConfigMap", f"{REL}-joule-scheduler")["data"]
    want = ",".join(f"{i + 1}={REL}-joule-scheduler-{i}.{REL}-joule-scheduler-headless.{NS}.svc.cluster.local:7000"
                    for i in range(n))
    check(cm["JOULE_PEERS"] == want, f"{label}: peers {cm['JOULE_PEERS']!r} != {want!r}")
    check(cm["JOULE_DATA_DIR"] == "/data", f"{label}: the data dir is the PVC")
    c = spec["template"]["spec"]["containers"][0]
    script = c["command"][-1]
    check('--id "$((i + 1))"' in script and "JOULE_POD_INDEX" in script, f"{label}: id = ordinal + 1")
    for index, want in (("0", "--id 1"), ("4", "--id 5"), ("", "--id 3"), ("x", None)):
        # The script itself, run by sh with `joule-scheduler` echoing its flags; an empty index
        # falls back to the host name's suffix (here -2).
        r = subprocess.run(["sh", "-c", script.replace("exec joule-scheduler", "echo")],
                           env={"JOULE_POD_INDEX": index, "HOSTNAME": f"{REL}-joule-scheduler-2"} if index != "x"
                           else {"JOULE_POD_INDEX": "", "HOSTNAME": "weird"}, capture_output=True, text=True)
        if want is None:
            check(r.returncode == 1 and "ordinal" in r.stderr, f"{label}: a pod with no ordinal stops: {r}")
        else:
            check(r.returncode == 0 and r.stdout.split() == want.split(), f"{label}: index {index!r} → {want}: {r}")
    check(env_of(c)["JOULE_POD_INDEX"] == {"fieldRef": {"fieldPath": "metadata.labels['apps.kubernetes.io/pod-index']"}},
          f"{label}: the ordinal comes from the pod-index label")
    for tok in ("JOULE_ADMIN_TOKEN", "JOULE_JOIN_TOKEN", "JOULE_PEER_TOKEN"):
        check("secretKeyRef" in env_of(c)[tok], f"{label}: {tok} from a Secret")
    vct = spec["volumeClaimTemplates"]
    check(len(vct) == 1 and vct[0]["metadata"]["name"] == "data", f"{label}: one PVC template named data")
    check("storage" in vct[0]["spec"]["resources"]["requests"], f"{label}: the PVC asks for storage")
    check({"name": "data", "mountPath": "/data"} in c["volumeMounts"], f"{label}: the PVC is mounted at /data")
    health = [p["containerPort"] for p in c["ports"] if p["name"] == "health"][0]
    check(c["startupProbe"]["grpc"]["port"] == health, f"{label}: gRPC startup probe on the health port")
    check(c["readinessProbe"]["grpc"] == {"port": health, "service": "joule.v1.Admin"},
          f"{label}: readiness = a leader is known (grpc.health.v1 joule.v1.Admin)")
    check(c["livenessProbe"]["grpc"] == {"port": health, "service": "@liveness"},
          f"{label}: gRPC liveness probe on the health port (the always-SERVING liveness service)")
    check(cm["JOULE_HEALTH_LISTEN"].endswith(f":{health}"), f"{label}: the daemon serves health there")
    pdbs = find(docs, "PodDisruptionBudget", f"{REL}-joule-scheduler")
    if n == 1:
        check(not pdbs, f"{label}: no PDB for a single replica (it would block every drain)")
    else:
        check(len(pdbs) == 1 and pdbs[0]["spec"]["minAvailable"] == n // 2 + 1,
              f"{label}: the PDB keeps a majority ({n // 2 + 1} of {n})")
    aff = spec["template"]["spec"].get("affinity", {}).get("podAntiAffinity")
    check(aff is not None, f"{label}: pod anti-affinity")
    ok(f"scheduler StatefulSet ({label}): {n} replicas, peers, PVC, probes, PDB, anti-affinity")


scheduler_checks(default, 3, "default")
scheduler_checks(render(os.path.join(EXAMPLES, "external-secrets-tls.yaml"))[0], 5, "5 replicas")
scheduler_checks(render(os.path.join(EXAMPLES, "cert-manager.yaml"))[0], 1, "1 replica")

# ------------------------------------------------------------------ NetworkPolicy
def policy_checks(docs, label, clients_restricted=False):
    pols = find(docs, "NetworkPolicy")
    check(len(pols) == 3, f"{label}: three NetworkPolicies")
    roles = {p["spec"]["podSelector"]["matchLabels"]["joule.dev/role"]: p for p in pols}
    check(set(roles) == {"gateway", "scheduler", "worker"}, f"{label}: one per role: {set(roles)}")
    gw_ports = {8080, 50051}
    open_ports = set()
    for role, p in roles.items():
        check(p["spec"]["policyTypes"] == ["Ingress"], f"{label}: {role} policy isolates ingress")
        for rule in p["spec"]["ingress"]:
            ports = {x["port"] for x in rule["ports"]}
            if "from" not in rule:
                open_ports |= {(role, x) for x in ports}
            else:
                for peer in rule["from"]:
                    sel = peer.get("podSelector", {})
                    exprs = {e["key"]: e["values"] for e in sel.get("matchExpressions", [])}
                    if role != "gateway" and ports & {7000, 50061}:
                        check(exprs.get("app.kubernetes.io/instance") == [REL]
                              and "joule.dev/role" in exprs and "namespaceSelector" not in peer,
                              f"{label}: {role} port {ports} admits only this release's pods: {peer}")
    if clients_restricted:
        check(not open_ports, f"{label}: nothing open to everyone: {open_ports}")
    else:
        check(open_ports == {("gateway", p) for p in gw_ports},
              f"{label}: only the gateway's client ports are open to clients: {open_ports}")
    # Every Joule pod is selected by a policy.
    for d, spec in pod_specs(docs):
        role = d["spec"]["template"]["metadata"]["labels"].get("joule.dev/role")
        check(role in ("gateway", "scheduler", "worker", "admin"), f"{label}: {d['metadata']['name']} has a role")
    sched = roles["scheduler"]["spec"]["ingress"]
    check([x["port"] for r in sched for x in r["ports"]] == [7000], f"{label}: the scheduler admits its gRPC port only")
    ok(f"NetworkPolicy ({label}): only the gateway's client ports face clients")


policy_checks(default, "default")
policy_checks(render(os.path.join(EXAMPLES, "external-secrets-tls.yaml"))[0], "clientsFrom", clients_restricted=True)

# ------------------------------------------------------------------ every pod
for values in [None, *examples]:
    label = os.path.basename(values) if values else "default values"
    docs = render(values)[0]
    for d, spec in pod_specs(docs):
        name = d["metadata"]["name"]
        check(spec.get("automountServiceAccountToken") is False, f"{label}: {name} mounts no API token")
        check(spec["securityContext"]["runAsNonRoot"] is True, f"{label}: {name} runs as non-root")
        for c in spec["containers"]:
            sc = c["securityContext"]
            check(sc["readOnlyRootFilesystem"] and sc["allowPrivilegeEscalation"] is False
                  and sc["capabilities"]["drop"] == ["ALL"], f"{label}: {name}/{c['name']} is locked down")
            check("limits" in c["resources"] and "requests" in c["resources"], f"{label}: {name} has requests and limits")
            if d["kind"] != "Job":
                check("startupProbe" in c and "readinessProbe" in c and "livenessProbe" in c,
                      f"{label}: {name} has startup, readiness and liveness probes")
    ok(f"pods ({label}): non-root, read-only root, no escalation, resources, probes")

# ------------------------------------------------------------------ GPU pools
mixed = render(os.path.join(EXAMPLES, "mixed-p40-t4.yaml"))[0]
for pool, product in (("p40", "Tesla-P40"), ("t4", "Tesla-T4")):
    ds = one(mixed, "DaemonSet", f"{REL}-joule-worker-{pool}")
    spec = ds["spec"]["template"]["spec"]
    c = spec["containers"][0]
    check(c["resources"]["limits"]["nvidia.com/gpu"] == 1, f"{pool}: asks for one nvidia.com/gpu")
    check(spec["nodeSelector"] == {"nvidia.com/gpu.product": product}, f"{pool}: its nodes only")
    check(any(t["key"] == "nvidia.com/gpu" for t in spec["tolerations"]), f"{pool}: tolerates the GPU taint")
    e = env_of(c)
    check(f"gpu={pool}" in e["JOULE_LABELS"] and f"gpu-pool={pool}" in e["JOULE_LABELS"], f"{pool}: worker labels {e['JOULE_LABELS']}")
    check(e["JOULE_DEVICE"] == "cuda:0", f"{pool}: serves on the GPU")
    check(e["JOULE_NODE_NAME"] == {"fieldRef": {"fieldPath": "spec.nodeName"}}, f"{pool}: named after its node")
    check(e["JOULE_ADVERTISE"] == "$(POD_IP):50061" and list(e).index("POD_IP") < list(e).index("JOULE_ADVERTISE"),
          f"{pool}: advertises its pod IP (POD_IP defined first, for $(POD_IP) to expand)")
    check(c["image"].startswith("ghcr.io/joule-llm/joule-cuda:"), f"{pool}: the CUDA image")
t4 = env_of(one(mixed, "DaemonSet", f"{REL}-joule-worker-t4")["spec"]["template"]["spec"]["containers"][0])
check(t4["JOULE_GPU_MEMORY_FRACTION"] == "0.85", "t4: the pool's own env")
one(mixed, "HorizontalPodAutoscaler", f"{REL}-joule-gateway")
gw = one(mixed, "Deployment", f"{REL}-joule-gateway")
check("replicas" not in gw["spec"], "with an HPA the gateway Deployment leaves replicas to it")
ing = one(mixed, "Ingress", f"{REL}-joule-gateway")
check(ing["spec"]["rules"][0]["host"] == "llm.example.com", "the Ingress serves the host")
sm = one(mixed, "ServiceMonitor", f"{REL}-joule")
check([e["port"] for e in sm["spec"]["endpoints"]] == ["metrics"], "ServiceMonitor scrapes the metrics ports")
sm_sel = sm["spec"]["selector"]["matchLabels"]
for role in ("gateway", "worker"):
    svc = one(mixed, "Service", f"{REL}-joule-{role}-metrics")
    check(all(svc["metadata"]["labels"].get(k) == v for k, v in sm_sel.items()), f"the ServiceMonitor selects the {role} metrics Service")
    check(svc["spec"]["ports"][0]["targetPort"] == "metrics", f"{role} metrics Service: the metrics port")
    pods = [d for d, _ in pod_specs(mixed) if all(d["spec"]["template"]["metadata"]["labels"].get(k) == v
                                                  for k, v in svc["spec"]["selector"].items())]
    check(pods and all(d["spec"]["template"]["metadata"]["labels"]["joule.dev/role"] == role for d in pods),
          f"the {role} metrics Service selects {role} pods only: {[d['metadata']['name'] for d in pods]}")
check(not [s for s in find(mixed, "Service") if s["metadata"]["labels"].get("joule.dev/metrics") == "true"
           and s["metadata"]["labels"]["app.kubernetes.io/component"] not in ("gateway", "worker")],
      "no other Service is scraped")
ok("GPU pools: a DaemonSet per pool with its resource, nodes, taints, labels and the CUDA image; HPA, Ingress, ServiceMonitor")

# ------------------------------------------------------------------ secrets and TLS
sec = one(default, "Secret", f"{REL}-joule-tokens")
check(set(sec["data"]) == {"admin-token", "join-token", "peer-token"}, "the tokens Secret holds three tokens")
check(sec["metadata"]["annotations"]["helm.sh/resource-policy"] == "keep", "the tokens survive an uninstall")
check(all(len(v) >= 48 for v in sec["data"].values()), "generated tokens are long")
ext = render(os.path.join(EXAMPLES, "external-secrets-tls.yaml"))[0]
check(not find(ext, "Secret"), "with existing Secrets the chart renders none")
for d, spec in pod_specs(ext):
    c = spec["containers"][0]
    e = env_of(c)
    refs = [v["secretKeyRef"]["name"] for v in e.values() if isinstance(v, dict) and "secretKeyRef" in v]
    check(refs and all(r == "joule-tokens" for r in refs), f"{d['metadata']['name']}: tokens from the existing Secret")
    check(e["JOULE_TLS_CERT"] == "/etc/joule/tls/tls.crt" and e["JOULE_TLS_CA"] == "/etc/joule/tls/ca.crt"
          and e["JOULE_TLS_SERVER_NAME"] == "joule.internal.example", f"{d['metadata']['name']}: TLS files and name")
    vols = {v["name"]: v for v in spec["volumes"]}
    check(vols["tls"]["secret"]["secretName"] == "joule-tls", f"{d['metadata']['name']}: certificates from the Secret")
check(not find(default, "Certificate"), "no Certificate without cert-manager")
cm = render(os.path.join(EXAMPLES, "cert-manager.yaml"))[0]
cert = one(cm, "Certificate", f"{REL}-joule")
check(cert["spec"]["secretName"] == f"{REL}-joule-tls" and "client auth" in cert["spec"]["usages"]
      and "server auth" in cert["spec"]["usages"], "cert-manager: one certificate for server and client auth")
check("joule-internal" in cert["spec"]["dnsNames"]
      and f"*.{REL}-joule-scheduler-headless.{NS}.svc.cluster.local" in cert["spec"]["dnsNames"],
      "cert-manager: the internal name and the schedulers' names")
check(cert["spec"]["issuerRef"]["name"] == "joule-ca", "cert-manager: the issuer from values")
check("llm.example.com" in cert["spec"]["dnsNames"] and cert["spec"].get("ipAddresses") == ["203.0.113.10"],
      "cert-manager: the LoadBalancer's name and address from values")
ok("tokens Secret generated or taken from an existing one; TLS from a Secret or cert-manager")

# ------------------------------------------------------------------ the apply Job
cpu = render(os.path.join(EXAMPLES, "cpu-only.yaml"))[0]
job = one(cpu, "Job", f"{REL}-joule-apply")
ann = job["metadata"]["annotations"]
check(ann["helm.sh/hook"] == "post-install,post-upgrade", "the apply Job runs after install and upgrade")
script = job["spec"]["template"]["spec"]["containers"][0]["command"][-1]
check("joulectl apply -f /etc/joule/objects/objects.yaml" in script, "it runs joulectl apply")
objs = [d for d in yaml.safe_load_all(one(cpu, "ConfigMap", f"{REL}-joule-objects")["data"]["objects.yaml"]) if d]
check([(o["kind"], o["metadata"]["name"]) for o in objs]
      == [("Model", "smollm2"), ("Deployment", "smollm2"), ("Tenant", "acme")], f"the objects: {objs}")
check(objs[1]["spec"] == {"model": "smollm2", "replicas": "auto", "minReplicas": 2, "maxReplicas": 4,
                          "nodeSelector": {"device": "cpu"}, "latency": {"itlP95Ms": 80}}, "the deployment's spec")
check(all(o["apiVersion"] == "joule/v1" for o in objs), "joule/v1 objects")
odd, _ = render(text="models: [{name: 'true', source: s, sha256: " + "a" * 64 + "}]\ndeployments: [{name: '1e3', model: 'true'}]\n")
odd_objs = [d for d in yaml.safe_load_all(one(odd, "ConfigMap", f"{REL}-joule-objects")["data"]["objects.yaml"]) if d]
check([o["metadata"]["name"] for o in odd_objs] == ["true", "1e3"], f"names stay strings in YAML: {odd_objs}")
check(not find(default, "Job"), "no Job when values declare nothing to apply")
joulectl = os.environ.get("JOULECTL")
if joulectl:
    # The real parser, against no cluster: a file it reads gets as far as the connection (exit
    # 4, Unavailable); a file it cannot read stops before (exit 1, naming the field).
    with tempfile.NamedTemporaryFile("w", suffix=".yaml", delete=False) as f:
        f.write(one(cpu, "ConfigMap", f"{REL}-joule-objects")["data"]["objects.yaml"])
    r = subprocess.run([joulectl, "--server", "127.0.0.1:9", "--token", "t", "apply", "-f", f.name],
                       capture_output=True, text=True, env={**os.environ, "JOULE_HOME": tempfile.gettempdir()})
    os.unlink(f.name)
    check(r.returncode == 4 and "Unavailable" in r.stderr,
          f"joulectl parses the objects the chart renders: exit {r.returncode}: {r.stderr}")
    ok("joulectl reads the objects the chart renders")
ok("apply Job: hook, joulectl apply, the objects from values")

print(f"{passed} chart checks passed")
