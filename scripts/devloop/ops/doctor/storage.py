"""The model-cache check of `devloop doctor`: will the overlay's PersistentVolumeClaim bind?

A claim binds when its class can provision a volume, or when a matching PersistentVolume is
Available. A class whose provisioner is `kubernetes.io/no-provisioner` (static local volumes)
provisions nothing, and a volume left `Released` by a deleted claim (reclaim policy Retain: what
`tilt down` used to leave behind) binds no new claim until its claimRef is cleared. Pure, like
`devloop.ops.doctor.checks`: the facts were gathered beforehand.
"""

from __future__ import annotations

from devloop.ops.doctor.facts import GIB, Facts, Volume
from devloop.ops.doctor.result import FAIL, PASS, SKIP, WARN, CheckResult

NAME = "model-cache"
# Kubernetes' marker for classes of statically created volumes (no dynamic provisioning).
NO_PROVISIONER = "kubernetes.io/no-provisioner"
DEFAULT_CLASS_FIX = (
    "mark a StorageClass default: `kubectl patch storageclass NAME -p "
    "'{\"metadata\": {\"annotations\": {\"storageclass.kubernetes.io/is-default-class\": \"true\"}}}'` "
    "(kind and k3d ship `standard`/`local-path`)")


def claim_class(facts: Facts) -> str | None:
    """The class the claim binds through: its own storageClassName, else the default one."""
    if facts.pvc_storage_class is not None:
        return facts.pvc_storage_class
    defaults = [name for name, is_default in facts.storage_classes or () if is_default]
    return defaults[0] if defaults else None


def _fits(volume: Volume, storage_class: str, facts: Facts) -> bool:
    return volume.storage_class == storage_class and volume.capacity_bytes >= facts.pvc_request_bytes


def _released_fix(volume: Volume) -> str:
    return (f"the data on it is still there: make it Available again with `kubectl patch pv "
            f"{volume.name} --type json -p '[{{\"op\": \"remove\", \"path\": \"/spec/claimRef\"}}]'`"
            f" (or delete it with `kubectl delete pv {volume.name}` to start empty)")


def _static_class(facts: Facts, where: str, storage_class: str, unbound: str) -> CheckResult:
    """A class that provisions nothing: the claim needs an Available volume of its class."""
    if facts.volumes is None:
        return CheckResult(NAME, WARN, f"{where} {unbound}; class {storage_class} has no "
                           "provisioner and the cluster's volumes could not be listed",
                           "`kubectl get pv` must list an Available volume of class "
                           f"{storage_class} with at least {facts.pvc_request_bytes / GIB:g} GiB")
    fitting = [v for v in facts.volumes if _fits(v, storage_class, facts)]
    available = [v for v in fitting if v.phase == "Available"]
    if available:
        return CheckResult(NAME, PASS, f"{where} {unbound}; class {storage_class} has no "
                           f"provisioner, and volume {available[0].name} is Available for it")
    released = [v for v in fitting if v.phase == "Released"]
    if released:
        volume = released[0]
        return CheckResult(
            NAME, FAIL, f"{where} {unbound} and cannot bind: class {storage_class} has no "
            f"provisioner, and its volume {volume.name} is Released (still claimed by the "
            f"deleted {volume.claim or 'claim'}), so the engine stays Pending",
            _released_fix(volume))
    return CheckResult(
        NAME, FAIL, f"{where} {unbound} and cannot bind: class {storage_class} has no "
        f"provisioner ({NO_PROVISIONER}) and no Available volume of at least "
        f"{facts.pvc_request_bytes / GIB:g} GiB",
        f"create a PersistentVolume of class {storage_class} (a hostPath or local volume), or "
        "use a class with a provisioner (kind/k3d: `standard`/`local-path`)")


def check_model_cache(facts: Facts) -> CheckResult:
    where = f"PVC {facts.namespace}/{facts.pvc_name}"
    if facts.pvc_phase is None:
        return CheckResult(NAME, SKIP, "needs a reachable cluster")
    if facts.pvc_phase == "Bound":
        return CheckResult(NAME, PASS, f"{where} is Bound")
    if facts.pvc_phase not in ("", "Pending"):
        return CheckResult(NAME, FAIL, f"{where} is {facts.pvc_phase}",
                           f"`kubectl -n {facts.namespace} describe pvc {facts.pvc_name}`; delete and "
                           "recreate it (the model downloads again)")
    unbound = "not created yet" if facts.pvc_phase == "" else "is Pending"
    storage_class = claim_class(facts)
    if storage_class is None:
        if facts.storage_classes is None:  # unknown classes prove nothing
            return CheckResult(NAME, WARN, f"{where} {unbound}; the StorageClasses could not be "
                               "listed", "`kubectl get storageclass` shows them")
        return CheckResult(NAME, FAIL, f"{where} {unbound}, and the cluster has no default "
                           "StorageClass to bind it", DEFAULT_CLASS_FIX)
    provisioner = dict(facts.storage_provisioners).get(storage_class)
    if provisioner == NO_PROVISIONER:
        return _static_class(facts, where, storage_class, unbound)
    left = [v for v in facts.volumes or () if v.phase == "Released"
            and v.claim == f"{facts.namespace}/{facts.pvc_name}" and _fits(v, storage_class, facts)]
    if left:
        return CheckResult(
            NAME, WARN, f"{where} {unbound}; the model cache of a deleted claim of the same name "
            f"is on volume {left[0].name}, Released, and class {storage_class} would provision "
            "an empty one instead (the model downloads again)",
            "to reuse it, " + _released_fix(left[0]) + " before the engine starts")
    if facts.pvc_phase == "":
        return CheckResult(NAME, WARN, f"{where} not created yet (class {storage_class}"
                           f"{', provisioner ' + provisioner if provisioner else ''})",
                           f"deploy the overlay (`tilt up -- --overlay={facts.overlay}`); the class "
                           "provisions a volume when the engine starts")
    return CheckResult(NAME, WARN, f"{where} is Pending (normal until the engine pod is scheduled "
                       "on a WaitForFirstConsumer class)",
                       f"`kubectl -n {facts.namespace} describe pvc {facts.pvc_name}` shows why")
