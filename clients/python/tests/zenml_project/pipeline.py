"""A ZenML pipeline the test runs for real: a step that posts and asks through the Gatehouse
alerter (with per-step settings), then a step that fails into `failure_hook`."""
import time

from zenml import pipeline, step
from zenml.client import Client as ZenMLClient

from gatehouse.zenml import GatehouseAlerterParameters, failure_hook, success_hook


@step(on_success=success_hook, settings={"alerter": {"approvers": ["web:alice"], "timeout": 600}})
def approve_step() -> bool:
    alerter = ZenMLClient().active_stack.alerter
    assert alerter.post("training finished", GatehouseAlerterParameters(type="model.trained", labels={"team": "ml"}))
    # ZenML's own hooks post multi-line Markdown like this.
    assert alerter.post("*Step report*\n\nPipeline name: `gated_flow`\nAccuracy: 0.93")
    approved = alerter.ask("Deploy the model?")
    print(f"ASKED {approved} {time.time():.6f}", flush=True)
    # Another question in the same step is a gate of its own, not the first one's answer.
    promoted = alerter.ask("Also promote it to prod?\n\nThe canary ran for 24 hours.")
    print(f"PROMOTED {promoted}", flush=True)
    return approved


@step(on_failure=failure_hook)
def deploy_step(approved: bool) -> None:
    raise ValueError(f"deploy broke (approved={approved})")


@pipeline(enable_cache=False)
def gated_flow() -> None:
    deploy_step(approve_step())


if __name__ == "__main__":
    try:
        gated_flow()
    except Exception as error:  # the failing step is the point
        print(f"PIPELINE FAILED {type(error).__name__}", flush=True)
