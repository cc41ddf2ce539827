"""Compile a pipeline with a `configs/k8s` run config on the active (Kubernetes) stack and write,
as JSON, the Kubernetes objects ZenML would submit: one Job per step, built by the same functions
ZenML's orchestrator pod calls, the orchestrator Job, and the CronJob when the config has a
schedule. No cluster and no image build are involved.

    python tests/k8s/render_jobs.py jobs.json pipelines.training.detox_training configs/k8s/training.yaml \
        [PIPELINE CONFIG ...]

writes {config: objects} for each pair. Run in a subprocess by tests/k8s: compiling imports `steps`,
which binds the active stack's experiment tracker at import time, so it must not happen in the
shared test process; one process compiles several pipelines (each import of ZenML costs seconds).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO_ROOT))

IMAGE = "registry.example.com/mbad/pipeline:compiled"  # stands in for the image ZenML would build


def render(pipeline_source: str, config_path: str) -> dict:
    from kubernetes.client import ApiClient
    from zenml.client import Client
    from zenml.entrypoints import StepEntrypointConfiguration
    from zenml.integrations.kubernetes import kube_utils
    from zenml.integrations.kubernetes.manifest_utils import (
        build_cron_job_manifest,
        build_job_manifest,
        build_pod_manifest,
        job_template_manifest_from_job,
        pod_template_manifest_from_pod,
    )
    from zenml.utils import source_utils

    source_utils.set_custom_source_root(str(REPO_ROOT))
    pipeline = source_utils.load(pipeline_source)
    pipeline.prepare()
    snapshot, schedule, _ = pipeline._compile(config_path=config_path)
    orchestrator = Client().active_stack.orchestrator
    serialize = ApiClient().sanitize_for_serialization

    step_jobs = {}
    for name, step in snapshot.step_configurations.items():
        settings = orchestrator.get_settings(step)
        pod = build_pod_manifest(
            pod_name=None, image_name=IMAGE, command=StepEntrypointConfiguration.get_entrypoint_command(),
            args=["--step_name", name], privileged=settings.privileged,
            pod_settings=kube_utils.apply_default_resource_requests(memory="400Mi", pod_settings=settings.pod_settings),
            service_account_name=settings.step_pod_service_account_name or settings.service_account_name,
            termination_grace_period_seconds=settings.pod_stop_grace_period, labels={"step_name": name},
        )
        job = build_job_manifest(job_name=f"mbad-{name}".replace("_", "-"), pod_template=pod_template_manifest_from_pod(pod),
                                 ttl_seconds_after_finished=settings.ttl_seconds_after_finished)
        step_jobs[name] = serialize(job)

    settings = orchestrator.get_settings(snapshot)
    orchestrator_job = orchestrator._prepare_job_manifest(
        name=f"mbad-{pipeline.name}".replace("_", "-"), command=["python"], args=["-m", "zenml"], image=IMAGE,
        environment={}, labels={"pipeline": pipeline.name}, annotations={}, settings=settings,
        pod_settings=settings.orchestrator_pod_settings,
    )
    cron_job = None
    if schedule:
        cron_job = serialize(build_cron_job_manifest(
            cron_expression=schedule.cron_expression, job_template=job_template_manifest_from_job(orchestrator_job),
            successful_jobs_history_limit=settings.successful_jobs_history_limit,
            failed_jobs_history_limit=settings.failed_jobs_history_limit,
            concurrency_policy=settings.concurrency_policy, starting_deadline_seconds=settings.starting_deadline_seconds,
        ))
    return {"steps": step_jobs, "orchestrator": serialize(orchestrator_job), "cron_job": cron_job,
            "step_functions": {name: step.spec.source.attribute for name, step in snapshot.step_configurations.items()}}


if __name__ == "__main__":
    out, pairs = sys.argv[1], sys.argv[2:]
    if not pairs or len(pairs) % 2:
        raise SystemExit(__doc__)
    rendered = {config: render(source, config) for source, config in zip(pairs[::2], pairs[1::2], strict=True)}
    # A file, not stdout: ZenML and Great Expectations log to stdout.
    Path(out).write_text(json.dumps(rendered, default=str))
