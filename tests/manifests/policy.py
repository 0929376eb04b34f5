"""Policy checks over rendered objects. Each returns the list of violations, so a test asserts
an empty list on the real manifests and a non-empty one on a deliberately broken copy."""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

from devloop.engine.llamacpp import settings as llamacpp_settings
from devloop.engine.settings import unknown_settings

Obj = dict[str, Any]
WORKLOAD_KINDS = {"Deployment", "StatefulSet", "DaemonSet"}
# The images the Tiltfile builds from image/Dockerfile: the engine's and the gateway's.
THIS_REPO_IMAGES = {"vllm-devloop", "vllm-devloop-gateway"}
GiB = 1024**3
UNITS = {"Ki": 1024, "Mi": 1024**2, "Gi": GiB, "Ti": 1024**4, "k": 1000, "M": 1000**2, "G": 1000**3}
# Workloads allowed to run as root, each with the reason; every other check still applies to them.
ROOT_ALLOWED = {
    "DaemonSet/fluent-bit": "reads the node's container log files, which runtimes write root-owned "
    "with mode 0640 (0600 on some); a non-root reader in group 0 would fail on the 0600 ones",
}
# Graceful rollouts (drain_violations). When a pod is deleted, Kubernetes takes it out of the
# Service's ready endpoints at once, but kube-proxy and ingress controllers act on that a moment
# later (the cluster refused requests for up to a second): a preStop sleep of at least
# this long keeps the process serving until then.
ENDPOINT_REMOVAL_SECONDS = 5
DECODE_SPEED_ANNOTATION = "vllm-devloop/decode-tokens-per-second"
# vLLM 0.32 after its drain: engine core and worker teardown, then the HTTP server. Measured
# 13.3 s on the 2-core VM (tests/integration/engine/test_engine_drain_vllm.py pins this bound).
ENGINE_TEARDOWN_SECONDS = 30
# The gateway after its in-flight wait: closing its Redis and upstream sessions.
GATEWAY_EXIT_SECONDS = 5
# llama.cpp's engine (components/llamacpp): llama-server exits within a second of SIGTERM and
# drains nothing itself (tools/server/server.cpp), so its preStop hook waits for the requests.
LLAMACPP = ("llm-llamacpp", "llama-server")
LLAMACPP_CONFIG = "llm-llamacpp-config"
LLAMACPP_EXIT_SECONDS = 10
# The wait in that hook: the llama-server gauges it polls, by name.
LLAMACPP_DRAIN_GAUGE = "llamacpp:requests_(processing|deferred)"
# Long-running containers that need no drain, each with the reason.
DRAIN_EXEMPT = {
    "Deployment/llm-redis container redis": "a cache, not in the request path's answer: the "
    "gateway keeps serving from its local tier while Redis restarts, and reconnects",
    "DaemonSet/fluent-bit container fluent-bit": "serves no requests; it flushes its buffer "
    "within Fluent Bit's 5 s Grace, inside the default 30 s grace period",
}
# Settings the guide used that vLLM does not have, or a rewrite that breaks the OpenAI paths.
FORBIDDEN_TEXT = ("--cpu-only", "VLLM_CPU_ONLY", "--disable-log-requests", "rewrite-target")


def name(obj: Obj) -> str:
    return obj["metadata"]["name"]


def of_kind(objects: list[Obj], kind: str) -> list[Obj]:
    return [obj for obj in objects if obj["kind"] == kind]


def workloads(objects: list[Obj]) -> list[Obj]:
    return [obj for obj in objects if obj["kind"] in WORKLOAD_KINDS]


def containers(workload: Obj) -> Iterator[Obj]:
    pod = workload["spec"]["template"]["spec"]
    yield from pod.get("initContainers", [])
    yield from pod["containers"]


def quantity_bytes(quantity: str) -> float:
    match = re.fullmatch(r"([0-9.]+)([A-Za-z]*)", str(quantity))
    assert match, f"not a quantity: {quantity}"
    return float(match.group(1)) * UNITS.get(match.group(2), 1)


def selects(selector: dict[str, str], labels: dict[str, str]) -> bool:
    return bool(selector) and all(labels.get(key) == value for key, value in selector.items())


def pod_labels(objects: list[Obj]) -> list[dict[str, str]]:
    return [w["spec"]["template"]["metadata"].get("labels", {}) for w in workloads(objects)]


def selector_violations(objects: list[Obj]) -> list[str]:
    """Services and PDBs select at least one pod template; HPAs target an existing workload."""
    problems = []
    templates = pod_labels(objects)
    for obj in of_kind(objects, "Service"):
        selector = obj["spec"].get("selector", {})
        if not any(selects(selector, labels) for labels in templates):
            problems.append(f"Service/{name(obj)} selects no pod: {selector}")
    for obj in of_kind(objects, "PodDisruptionBudget"):
        selector = obj["spec"]["selector"].get("matchLabels", {})
        if not any(selects(selector, labels) for labels in templates):
            problems.append(f"PodDisruptionBudget/{name(obj)} selects no pod: {selector}")
    for workload in workloads(objects):
        selector = workload["spec"]["selector"]["matchLabels"]
        if not selects(selector, workload["spec"]["template"]["metadata"]["labels"]):
            problems.append(f"{workload['kind']}/{name(workload)} selector misses its own pods")
    targets = {(w["kind"], name(w)) for w in workloads(objects)}
    for hpa in of_kind(objects, "HorizontalPodAutoscaler"):
        ref = hpa["spec"]["scaleTargetRef"]
        if (ref["kind"], ref["name"]) not in targets:
            problems.append(f"HorizontalPodAutoscaler/{name(hpa)} targets missing {ref['kind']}/{ref['name']}")
    return problems


def _label_selector_matches(selector: Obj, labels: dict[str, str]) -> bool:
    """A LabelSelector (matchLabels, and matchExpressions with In, NotIn, Exists,
    DoesNotExist) against an object's labels, as the API server reads it."""
    if not all(labels.get(key) == value for key, value in selector.get("matchLabels", {}).items()):
        return False
    for expression in selector.get("matchExpressions", []):
        key, operator, values = expression["key"], expression["operator"], expression.get("values", [])
        present = key in labels
        if not {"In": present and labels.get(key) in values,
                "NotIn": not present or labels.get(key) not in values,
                "Exists": present, "DoesNotExist": not present}[operator]:
            return False
    return True


def monitor_violations(objects: list[Obj]) -> list[str]:
    """No ServiceMonitor selects two Services over the same pods (an engine's Service and its
    headless -replicas twin): every pod would be scraped twice and every sum over the engine's
    metrics would double."""
    problems = []
    services = of_kind(objects, "Service")
    templates = pod_labels(objects)
    for monitor in of_kind(objects, "ServiceMonitor"):
        chosen = [svc for svc in services
                  if _label_selector_matches(monitor["spec"]["selector"], svc["metadata"].get("labels", {}))]
        for labels in templates:
            over = [name(svc) for svc in chosen if selects(svc["spec"].get("selector", {}), labels)]
            if len(over) > 1:
                problems.append(f"ServiceMonitor/{name(monitor)} scrapes the same pods through "
                                f"{', '.join(over)}")
    return problems


def ingress_violations(objects: list[Obj]) -> list[str]:
    services = {name(svc): svc for svc in of_kind(objects, "Service")}
    problems = []
    for ingress in of_kind(objects, "Ingress"):
        for rule in ingress["spec"].get("rules", []):
            for path in rule.get("http", {}).get("paths", []):
                backend = path["backend"]["service"]
                service = services.get(backend["name"])
                if service is None:
                    problems.append(f"Ingress/{name(ingress)} routes to missing Service/{backend['name']}")
                    continue
                wanted = backend["port"]
                ports = service["spec"]["ports"]
                if not any(port.get("name") == wanted.get("name") or port["port"] == wanted.get("number")
                           for port in ports):
                    problems.append(f"Ingress/{name(ingress)} routes to a port Service/{backend['name']} lacks: {wanted}")
    return problems


def reference_violations(objects: list[Obj]) -> list[str]:
    """Every ConfigMap, Secret, PVC and ServiceAccount a pod needs exists (optional refs excepted)."""
    existing = {(obj["kind"], name(obj)) for obj in objects}
    problems = []

    def need(kind: str, ref_name: str, optional: bool, where: str) -> None:
        if not optional and (kind, ref_name) not in existing:
            problems.append(f"{where} needs missing {kind}/{ref_name}")

    for workload in workloads(objects):
        where = f"{workload['kind']}/{name(workload)}"
        pod = workload["spec"]["template"]["spec"]
        if "serviceAccountName" in pod:
            need("ServiceAccount", pod["serviceAccountName"], False, where)
        for volume in pod.get("volumes", []):
            if "configMap" in volume:
                need("ConfigMap", volume["configMap"]["name"], volume["configMap"].get("optional", False), where)
            if "secret" in volume:
                need("Secret", volume["secret"]["secretName"], volume["secret"].get("optional", False), where)
            if "persistentVolumeClaim" in volume:
                need("PersistentVolumeClaim", volume["persistentVolumeClaim"]["claimName"], False, where)
        for container in containers(workload):
            for source in container.get("envFrom", []):
                for key, kind in (("configMapRef", "ConfigMap"), ("secretRef", "Secret")):
                    if key in source:
                        need(kind, source[key]["name"], source[key].get("optional", False), where)
            for env in container.get("env", []):
                value_from = env.get("valueFrom", {})
                for key, kind in (("configMapKeyRef", "ConfigMap"), ("secretKeyRef", "Secret")):
                    if key in value_from:
                        need(kind, value_from[key]["name"], value_from[key].get("optional", False), where)
    return problems


def container_violations(objects: list[Obj]) -> list[str]:
    """Requests, limits, probes and a restricted security context on every container."""
    problems = []
    for workload in workloads(objects):
        pod = workload["spec"]["template"]["spec"]
        pod_security = pod.get("securityContext", {})
        for container in containers(workload):
            where = f"{workload['kind']}/{name(workload)} container {container['name']}"
            resources = container.get("resources", {})
            for section in ("requests", "limits"):
                for resource in ("cpu", "memory"):
                    if resource not in resources.get(section, {}):
                        problems.append(f"{where}: no {resource} {section[:-1]}")
            # Kubernetes rejects probes on an init container that is not a sidecar
            # (restartPolicy: Always): it runs to completion before any probe could act.
            run_to_completion = container in pod.get("initContainers", []) and (
                container.get("restartPolicy") != "Always")
            for probe in ("readinessProbe", "livenessProbe"):
                if probe not in container and not run_to_completion:
                    problems.append(f"{where}: no {probe}")
            security = container.get("securityContext", {})
            if security.get("allowPrivilegeEscalation") is not False:
                problems.append(f"{where}: allowPrivilegeEscalation is not false")
            if security.get("capabilities", {}).get("drop") != ["ALL"]:
                problems.append(f"{where}: capabilities do not drop ALL")
            if security.get("capabilities", {}).get("add"):
                problems.append(f"{where}: adds capabilities {security['capabilities']['add']}")
            runs_as_non_root = security.get("runAsNonRoot") or pod_security.get("runAsNonRoot")
            if not runs_as_non_root and f"{workload['kind']}/{name(workload)}" not in ROOT_ALLOWED:
                problems.append(f"{where}: runAsNonRoot is not set")
            if security.get("privileged"):
                problems.append(f"{where}: privileged")
            seccomp = security.get("seccompProfile") or pod_security.get("seccompProfile") or {}
            if seccomp.get("type") != "RuntimeDefault":
                problems.append(f"{where}: seccomp profile is not RuntimeDefault")
    return problems


def engine_violations(objects: list[Obj]) -> list[str]:
    """The vLLM engine: a startup probe that outlasts a slow model load, and a memory limit that
    holds the KV cache and /dev/shm with room for weights and runtime."""
    problems = []
    engine = next((w for w in workloads(objects) if name(w) == "llm-engine"), None)
    if engine is None:  # an overlay of llama.cpp only (llamacpp_violations)
        return problems
    config = next(obj for obj in of_kind(objects, "ConfigMap") if name(obj).startswith("llm-engine-config"))
    container = next(c for c in containers(engine) if c["name"] == "vllm")
    startup = container.get("startupProbe")
    if not startup:
        problems.append("llm-engine has no startupProbe: liveness would kill a pod still loading its model")
    else:
        budget = startup.get("periodSeconds", 10) * startup.get("failureThreshold", 3)
        if budget < 600:
            problems.append(f"llm-engine startupProbe allows only {budget}s for the model load (< 600s)")
    for probe in ("readinessProbe", "livenessProbe"):
        if container.get(probe, {}).get("httpGet", {}).get("path") != "/health":
            problems.append(f"llm-engine {probe} does not check /health")
    volumes = {volume["name"]: volume for volume in engine["spec"]["template"]["spec"]["volumes"]}
    shm_mounts = [m for m in container.get("volumeMounts", []) if m["mountPath"] == "/dev/shm"]
    shm = volumes.get(shm_mounts[0]["name"], {}).get("emptyDir", {}) if shm_mounts else {}
    if shm.get("medium") != "Memory":
        problems.append("llm-engine has no memory-backed /dev/shm")
    kv_cache = float(config["data"]["VLLM_CPU_KVCACHE_SPACE"]) * GiB
    limit = quantity_bytes(container["resources"]["limits"]["memory"])
    shm_size = quantity_bytes(shm.get("sizeLimit", "0"))
    # At least 1 GiB beyond cache and shm: the smallest model plus the Python/torch runtime.
    if limit < kv_cache + shm_size + GiB:
        problems.append(f"llm-engine memory limit {limit / GiB:.1f} GiB does not cover KV cache "
                        f"{kv_cache / GiB:.1f} GiB + /dev/shm {shm_size / GiB:.1f} GiB + weights")
    return problems


def llamacpp_violations(objects: list[Obj]) -> list[str]:
    """The llama.cpp engine: settings llama-server reads and devloop accepts (it ignores unknown
    keys silently), probes on /health with a startup budget for a download, metrics on."""
    engine = next((w for w in workloads(objects) if name(w) == LLAMACPP[0]), None)
    if engine is None:
        return []
    container = next(c for c in containers(engine) if c["name"] == LLAMACPP[1])
    problems = []
    try:
        llamacpp_settings.check(effective_env(objects, container))
    except llamacpp_settings.ConfigError as error:
        problems.append(f"{LLAMACPP[0]}: {error}")
    startup = container.get("startupProbe", {})
    budget = startup.get("periodSeconds", 10) * startup.get("failureThreshold", 3)
    if budget < 600:
        problems.append(f"{LLAMACPP[0]} startupProbe allows {budget}s to download and load (< 600s)")
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        if container.get(probe, {}).get("httpGet", {}).get("path") != "/health":
            problems.append(f"{LLAMACPP[0]} {probe} does not check /health")
    return problems


def network_policy_violations(objects: list[Obj]) -> list[str]:
    """A policy that allows any egress must allow DNS on UDP and TCP 53, or every lookup fails."""
    problems = []
    for policy in of_kind(objects, "NetworkPolicy"):
        egress = policy["spec"].get("egress")
        if "Egress" not in policy["spec"].get("policyTypes", []) or not egress:
            continue
        dns = set()
        for rule in egress:
            if rule.get("to"):  # DNS servers live in kube-system: a rule limited to peers misses them
                continue
            for port in rule.get("ports", []):
                if port.get("port") == 53:
                    dns.add(port.get("protocol", "TCP"))
        if dns != {"UDP", "TCP"}:
            problems.append(f"NetworkPolicy/{name(policy)} lets egress out but not DNS on UDP and TCP 53")
    return problems


def service_env_violations(objects: list[Obj]) -> list[str]:
    """Kubernetes injects <SERVICE>_PORT=tcp://... into pods with service links on; vLLM reads VLLM_*."""
    problems = []
    for service in of_kind(objects, "Service"):
        prefix = name(service).upper().replace("-", "_") + "_"
        if prefix.startswith("VLLM_"):
            problems.append(f"Service/{name(service)} makes Kubernetes inject {prefix}PORT into pods")
    for workload in workloads(objects):
        if workload["spec"]["template"]["spec"].get("enableServiceLinks") is not False:
            problems.append(f"{workload['kind']}/{name(workload)} leaves service links on")
    return problems


def image_violations(objects: list[Obj]) -> list[str]:
    """Images are this repo's (built by Tilt) or pinned to a version: never `latest` or untagged."""
    problems = []
    for workload in workloads(objects):
        for container in containers(workload):
            image = container["image"]
            repository, _, tag = image.rpartition(":") if ":" in image.split("/")[-1] else (image, "", "")
            if repository in THIS_REPO_IMAGES:
                if container.get("imagePullPolicy") != "IfNotPresent":
                    problems.append(f"{image}: a locally built image needs imagePullPolicy IfNotPresent")
            elif not tag or tag == "latest":
                problems.append(f"{name(workload)}: image {image} is not pinned to a version")
    return problems


def forbidden_text_violations(rendered_text: str) -> list[str]:
    return [f"rendered manifests contain {text!r}" for text in FORBIDDEN_TEXT if text in rendered_text]


def engine_setting_violations(objects: list[Obj]) -> list[str]:
    """Every key of the engine ConfigMap (base engine.env plus each overlay's configMapGenerator
    literals) is one the entrypoint or vLLM reads: a typo would otherwise be ignored silently."""
    problems = []
    for configmap in of_kind(objects, "ConfigMap"):
        if name(configmap).startswith("llm-engine-config"):
            problems += [f"{name(configmap)}: unknown engine setting {key}"
                         for key in unknown_settings(configmap.get("data") or {})]
        if name(configmap).startswith(LLAMACPP_CONFIG):
            problems += [f"{name(configmap)}: unknown llama-server setting {key}"
                         for key in llamacpp_settings.unknown_keys(configmap.get("data") or {})]
    return problems


def effective_env(objects: list[Obj], container: Obj) -> dict[str, str]:
    """The container's environment as the kubelet builds it: envFrom ConfigMaps, then `env`."""
    configmaps = {name(obj): obj.get("data", {}) for obj in of_kind(objects, "ConfigMap")}
    env: dict[str, str] = {}
    for source in container.get("envFrom", []):
        if "configMapRef" in source:
            env.update(configmaps.get(source["configMapRef"]["name"], {}))
    env.update({item["name"]: item["value"] for item in container.get("env", []) if "value" in item})
    return env


# The engines whose Deployment records its decode speed, with the container and the setting
# that bounds the longest answer in tokens.
ENGINE_STREAMS = {
    "llm-engine": ("vllm", "MAX_MODEL_LEN"),
    LLAMACPP[0]: (LLAMACPP[1], "LLAMA_ARG_CTX_SIZE"),
}


def engine_stream_seconds(objects: list[Obj]) -> dict[str, float | None]:
    """Each engine's longest answer in seconds: its context in tokens (a one-token prompt, the
    rest output) at the per-stream decode speed of a full batch, which the Deployment records
    in an annotation; None for an engine that does not say."""
    found: dict[str, float | None] = {}
    for workload in workloads(objects):
        if name(workload) not in ENGINE_STREAMS:
            continue
        container_name, setting = ENGINE_STREAMS[name(workload)]
        speed = workload["metadata"].get("annotations", {}).get(DECODE_SPEED_ANNOTATION)
        container = next(c for c in containers(workload) if c["name"] == container_name)
        tokens = int(effective_env(objects, container)[setting])
        found[name(workload)] = None if speed is None else tokens / float(speed)
    return found


def longest_stream_seconds(objects: list[Obj]) -> float | None:
    """The longest answer of any engine in the objects (what the gateway must let through);
    None when an engine does not record its speed."""
    streams = engine_stream_seconds(objects)
    if not streams or None in streams.values():
        return None
    return max(streams.values())


def _int_setting(env: dict[str, str], key: str, default: int) -> int:
    return int(env.get(key, default))


def _process_drain(workload: Obj, container: Obj, objects: list[Obj]) -> tuple[int, int, str] | None:
    """(seconds the process may take after SIGTERM, seconds an in-flight stream may run on, the
    setting that bounds the latter) for the processes whose SIGTERM behaviour we know."""
    env = effective_env(objects, container)
    if (name(workload), container["name"]) == ("llm-engine", "vllm"):
        # vLLM --shutdown-timeout: in-flight requests finish, new ones get HTTP 500.
        streams = _int_setting(env, "SHUTDOWN_TIMEOUT", 0)
        return streams + ENGINE_TEARDOWN_SECONDS, streams, "SHUTDOWN_TIMEOUT"
    if (name(workload), container["name"]) == LLAMACPP:
        # No drain of its own: the preStop hook serves on while requests are in flight.
        streams = _prestop_sleep(container) - ENDPOINT_REMOVAL_SECONDS
        if _llamacpp_drains(container):
            streams = int(workload["spec"]["template"]["spec"].get(
                "terminationGracePeriodSeconds", 30)) - LLAMACPP_EXIT_SECONDS - ENDPOINT_REMOVAL_SECONDS
        return LLAMACPP_EXIT_SECONDS, streams, "the preStop drain (terminationGracePeriodSeconds)"
    if (name(workload), container["name"]) == ("llm-gateway", "gateway"):
        # Serves for GATEWAY_DRAIN_SECONDS (503 on /ready), then waits for in-flight requests.
        serving = _int_setting(env, "GATEWAY_DRAIN_SECONDS", 5)
        streams = _int_setting(env, "GATEWAY_SHUTDOWN_TIMEOUT", 30)
        return serving + streams + GATEWAY_EXIT_SECONDS, streams, "GATEWAY_SHUTDOWN_TIMEOUT"
    return None


def _prestop_sleep(container: Obj) -> int:
    """Seconds of the preStop hook's sleep action (or an exec of sleep N, or of a shell script
    that starts with `sleep N;`); 0 without one."""
    pre_stop = container.get("lifecycle", {}).get("preStop", {})
    if "sleep" in pre_stop:
        return int(pre_stop["sleep"]["seconds"])
    command = pre_stop.get("exec", {}).get("command", [])
    if len(command) == 2 and command[0].rsplit("/", 1)[-1] == "sleep":
        return int(command[1])
    script = re.match(r"sleep (\d+);", command[-1]) if command[-2:-1] == ["-c"] else None
    return int(script.group(1)) if script else 0


def _llamacpp_drains(container: Obj) -> bool:
    """The preStop hook waits while llama-server's own gauges count requests in flight."""
    command = container.get("lifecycle", {}).get("preStop", {}).get("exec", {}).get("command", [])
    return bool(command) and LLAMACPP_DRAIN_GAUGE in command[-1] and "while" in command[-1]


def _longest_through(workload: Obj, container: Obj, objects: list[Obj],
                     by_engine: dict[str, float | None], overall: float | None) -> float | None:
    """The longest stream a container must let finish: an engine's own; the gateway's, that of
    the engine Services its UPSTREAM_URLS (or UPSTREAM_URL) name; anything else, the longest of all."""
    if name(workload) in by_engine:
        return by_engine[name(workload)]
    env = effective_env(objects, container)
    # UPSTREAM_URLS (the gateway's engines) wins over the one-engine UPSTREAM_URL, as in
    # devloop.gateway.config.
    upstreams = re.split(r"[,\s]+", env.get("UPSTREAM_URLS", "").strip()) or []
    upstreams = [url for url in upstreams if url] or [env.get("UPSTREAM_URL", "")]
    hosts = [re.sub(r"^https?://", "", url).split(":")[0].split("/")[0].split(".")[0]
             for url in upstreams]
    engines = [engine for host in hosts for engine in _engines_behind(host, objects, by_engine)]
    if not engines:
        return overall
    known = [by_engine[engine] for engine in engines if by_engine[engine] is not None]
    return max(known) if known else None


def _engines_behind(service: str, objects: list[Obj], by_engine: dict[str, float | None]) -> list[str]:
    """The engine Deployments whose pods the Service `service` selects (llm-engine-replicas, the
    headless one, selects llm-engine's); [] for a Service that is not in the objects or selects
    no engine, whose streams are then taken to be the longest of all."""
    selector = next((obj["spec"].get("selector", {}) for obj in objects
                     if obj["kind"] == "Service" and name(obj) == service), None)
    if not selector:
        return []
    return [name(workload) for workload in workloads(objects) if name(workload) in by_engine
            and selector.items() <= workload["spec"]["template"]["metadata"].get("labels", {}).items()]


def longest_through_service(service: str, objects: list[Obj]) -> float | None:
    """The longest stream a request to `service` may become: that of the engines it selects, or
    for the caching gateway's Service, of the engines its UPSTREAM_URLS name; the longest of all
    when that cannot be told."""
    overall = longest_stream_seconds(objects)
    by_engine = engine_stream_seconds(objects)
    engines = _engines_behind(service, objects, by_engine)
    if engines:
        known = [by_engine[engine] for engine in engines if by_engine[engine] is not None]
        return max(known) if known else None
    selector = next((obj["spec"].get("selector", {}) for obj in objects
                     if obj["kind"] == "Service" and name(obj) == service), None) or {}
    for workload in workloads(objects):
        if selector and selector.items() <= workload["spec"]["template"]["metadata"].get(
                "labels", {}).items():
            for container in containers(workload):
                if _process_drain(workload, container, objects) is not None:
                    return _longest_through(workload, container, objects, by_engine, overall)
    return overall


def drain_violations(objects: list[Obj]) -> list[str]:
    """Rollouts lose no request: every long-running container sleeps in preStop until its
    endpoint is gone, its process may finish the longest stream after SIGTERM, and the grace
    period covers both (the kubelet SIGKILLs whatever still runs after it)."""
    problems = []
    overall = longest_stream_seconds(objects)
    by_engine = engine_stream_seconds(objects)
    for engine, seconds in by_engine.items():
        if seconds is None:
            problems.append(f"Deployment/{engine} has no {DECODE_SPEED_ANNOTATION} annotation: "
                            "the drain cannot be checked against the longest stream")
    for workload in workloads(objects):
        pod = workload["spec"]["template"]["spec"]
        grace = int(pod.get("terminationGracePeriodSeconds", 30))
        for container in pod["containers"]:
            where = f"{workload['kind']}/{name(workload)} container {container['name']}"
            if where in DRAIN_EXEMPT:
                continue
            drain = _process_drain(workload, container, objects)
            if drain is None:
                problems.append(f"{where}: no known drain; describe its SIGTERM behaviour in "
                                "tests/manifests/policy.py or exempt it with the reason")
                continue
            process, streams, setting = drain
            sleep = _prestop_sleep(container)
            if sleep < ENDPOINT_REMOVAL_SECONDS:
                problems.append(f"{where}: preStop sleeps {sleep} s (< {ENDPOINT_REMOVAL_SECONDS} s): "
                                "it would stop serving before its endpoint is removed")
            if grace < sleep + process:
                problems.append(f"{where}: terminationGracePeriodSeconds {grace} < preStop "
                                f"{sleep} s + drain {process} s: the kubelet kills it mid-drain")
            longest = _longest_through(workload, container, objects, by_engine, overall)
            if longest is not None and streams < longest:
                problems.append(f"{where}: {setting}={streams} s is shorter than the longest "
                                f"stream ({longest:.0f} s): it would be cut off")
    return problems


ALL_CHECKS = (
    engine_setting_violations,
    llamacpp_violations,
    selector_violations,
    monitor_violations,
    ingress_violations,
    reference_violations,
    container_violations,
    network_policy_violations,
    service_env_violations,
    image_violations,
    drain_violations,
)
