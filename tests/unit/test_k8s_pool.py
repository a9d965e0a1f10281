"""The Kubernetes work pool for GPU nodes (`flows/k8s-gpu-pool.json`), held to Prefect's schema.

The base job template is what `prefect work-pool create gpu-k8s --type kubernetes
--base-job-template flows/k8s-gpu-pool.json` sends: Prefect's server refuses a template whose job
configuration uses a variable the variables schema does not declare, and the worker fills the
placeholders with `apply_values`. Both are Prefect's own code here.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest
from prefect.client.schemas.actions import WorkPoolCreate as ClientWorkPoolCreate
from prefect.server.schemas.actions import WorkPoolCreate
from prefect.utilities.templating import apply_values

TEMPLATE = Path(__file__).resolve().parents[2] / "flows" / "k8s-gpu-pool.json"


@pytest.fixture(scope="module")
def template() -> dict:
    return json.loads(TEMPLATE.read_text())


def defaults(template: dict) -> dict:
    properties = template["variables"]["properties"]
    return {name: spec["default"] for name, spec in properties.items() if "default" in spec}


def test_prefect_accepts_the_template_for_a_kubernetes_pool(template):
    for schema in (WorkPoolCreate, ClientWorkPoolCreate):
        pool = schema(name="gpu-k8s", type="kubernetes", base_job_template=template)
        assert pool.base_job_template == template


def test_prefect_refuses_a_template_that_uses_an_undeclared_variable(template):
    broken = copy.deepcopy(template)
    container = broken["job_configuration"]["job_manifest"]["spec"]["template"]["spec"]
    container["containers"][0]["resources"]["limits"]["nvidia.com/gpu"] = "{{ gpu_count }}"
    with pytest.raises(ValueError, match="gpu_count"):
        WorkPoolCreate(name="gpu-k8s", type="kubernetes", base_job_template=broken)


def test_each_run_is_one_pod_asking_for_one_gpu_with_the_remote_credentials(template):
    values = defaults(template) | {
        "image": "registry.example/atelier:gpu",
        "name": "nightly-retrain",
        "command": "python -m prefect.engine",
        "labels": {},
        "cluster_config": None,
        "job_watch_timeout_seconds": None,
    }
    job = apply_values(template["job_configuration"], values)
    pod = job["job_manifest"]["spec"]["template"]["spec"]
    [container] = pod["containers"]
    assert container["resources"]["limits"] == {"nvidia.com/gpu": 1}
    assert container["image"] == "registry.example/atelier:gpu"
    assert container["envFrom"] == [{"secretRef": {"name": "atelier-dvc-remote"}}]
    assert job["env"]["TF_FORCE_GPU_ALLOW_GROWTH"] == "true"  # the worker puts it in the pod
    assert pod["restartPolicy"] == "Never" and job["job_manifest"]["spec"]["backoffLimit"] == 0
    assert "image" not in defaults(template)  # the project's image must be named
