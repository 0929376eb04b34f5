"""Resources as Tilt assembles them from a recording (tilt_api.py): a resource per workload,
Services attached to the workload their selector matches, objects claimed by
`k8s_resource(objects=...)`, the rest "uncategorized"; and the cross-references Tilt checks at load
time."""

from __future__ import annotations

from .tilt_records import (
    LABEL_RE,
    UNCATEGORIZED,
    WORKLOAD_KINDS,
    Recording,
    Resource,
    TiltfileError,
    _namespace,
    image_name,
    pod_containers,
    pod_labels,
    selector_matches,
)


def _workload_resources(rec: Recording, claimed: set[int]) -> dict[str, Resource]:
    """A resource per workload, with the Services whose selector matches its pods."""
    resources: dict[str, Resource] = {}
    image_refs = {build.ref for build in rec.docker_builds}
    for index, obj in enumerate(rec.objects):
        if obj["kind"] in WORKLOAD_KINDS:
            name = obj["metadata"]["name"]
            if name in resources:
                raise TiltfileError(f"two workloads named {name}: Tilt would rename them")
            images = sorted({image_name(c.get("image", "")) for c in pod_containers(obj)} & image_refs)
            resources[name] = Resource(name, "k8s", [obj], workload=obj, images=images)
            claimed.add(index)
    for index, obj in enumerate(rec.objects):
        if obj["kind"] == "Service" and index not in claimed:
            selector = obj.get("spec", {}).get("selector") or {}
            for resource in resources.values():
                labels = pod_labels(resource.workload)
                same_ns = _namespace(obj) == _namespace(resource.workload)
                if selector and same_ns and selector.items() <= labels.items():
                    resource.objects.append(obj)
                    claimed.add(index)
                    break
    return resources


def _apply_k8s_resource(rec: Recording, call: dict, resources: dict[str, Resource],
                        claimed: set[int]) -> None:
    """One k8s_resource() call: rename or create the resource, claim its objects, set the rest."""
    if call["workload"]:
        if call["workload"] not in resources:
            raise TiltfileError(
                f"k8s_resource: no resource named {call['workload']!r}; "
                f"resources: {sorted(resources)}"
            )
        resource = resources[call["workload"]]
        if call["new_name"]:
            del resources[resource.name]
            resource.name = call["new_name"]
            resources[resource.name] = resource
    else:
        if call["new_name"] in resources:
            raise TiltfileError(f"k8s_resource: resource {call['new_name']!r} exists")
        resource = Resource(call["new_name"], "k8s")
        resources[resource.name] = resource
    for selector in call["objects"]:
        matches = [i for i, obj in enumerate(rec.objects) if selector_matches(selector, obj)]
        if len(matches) != 1:
            raise TiltfileError(f"object selector {selector!r} matches {len(matches)} objects")
        if matches[0] in claimed:
            raise TiltfileError(f"object selector {selector!r}: object already in a resource")
        claimed.add(matches[0])
        resource.objects.append(rec.objects[matches[0]])
    resource.port_forwards += call["port_forwards"]
    resource.links += call["links"]
    resource.labels += call["labels"]
    resource.resource_deps += call["resource_deps"]
    resource.trigger_mode = call["trigger_mode"]
    resource.auto_init = call["auto_init"]
    resource.pod_readiness = call["pod_readiness"]


def assemble(rec: Recording) -> dict[str, Resource]:
    """Resources as Tilt builds them from the recording; raises TiltfileError where Tilt
    would refuse the Tiltfile."""
    claimed: set[int] = set()
    resources = _workload_resources(rec, claimed)
    for call in rec.k8s_resource_calls:
        _apply_k8s_resource(rec, call, resources, claimed)
    leftover = [obj for i, obj in enumerate(rec.objects) if i not in claimed]
    if leftover:
        resources[UNCATEGORIZED] = Resource(UNCATEGORIZED, "k8s", leftover)
    for call in rec.local_resources:
        if call["name"] in resources:
            raise TiltfileError(f"local_resource: resource {call['name']!r} exists")
        resources[call["name"]] = Resource(
            call["name"], "local", labels=call["labels"], resource_deps=call["resource_deps"],
            trigger_mode=call["trigger_mode"], auto_init=call["auto_init"], cmd=call["cmd"],
            deps=call["deps"],
        )
    for resource in resources.values():
        for dep in resource.resource_deps:
            if dep not in resources:
                raise TiltfileError(f"resource {resource.name} depends on unknown {dep!r}")
        for label in resource.labels:
            if not LABEL_RE.match(label):
                raise TiltfileError(f"resource {resource.name}: invalid label {label!r}")
    return resources
