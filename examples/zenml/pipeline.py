"""train → evaluate → label a sample → approval gate → deploy, on a ZenML stack with the
Gatehouse alerter and annotator (README.md here says how to set it up in five minutes).

The model is a toy on purpose (a threshold on review length) so the example runs anywhere with
nothing but ZenML installed; the human parts are real:

- `evaluate` posts the metrics as an event (Gatehouse routes it to chat);
- `label_sample` queues 5 reviews on the annotator's dataset and waits until people labelled
  them (at /annotate/churn-reviews), then scores the model against their labels;
- `approve` asks on an approval gate keyed by run and step, showing the human accuracy, and
  blocks until someone decides — from a chat button, the web page, the CLI or the API;
- every step reports a failure (with its traceback) through `failure_hook`.

    python examples/zenml/pipeline.py            # waits for labels and a decision
"""
from __future__ import annotations

import os
from typing import Dict, List

from zenml import pipeline, step
from zenml.client import Client as ZenMLClient

from gatehouse.zenml import GatehouseAlerterParameters, failure_hook

REVIEWS = [
    ("r1", "Great product, works exactly as described and arrived early."),
    ("r2", "Broke."),
    ("r3", "Does the job, nothing special but fine for the price I paid."),
    ("r4", "Awful."),
    ("r5", "I love it, bought a second one for my parents."),
]
DATASET = os.environ.get("EXAMPLE_DATASET", "churn-reviews")
#: Seconds the approval gate stays open before it is rejected (ZenML step setting).
GATE_TIMEOUT = int(os.environ.get("EXAMPLE_GATE_TIMEOUT", "3600"))


@step(on_failure=failure_hook)
def train() -> int:
    """A 'model': reviews longer than this many characters are positive."""
    return 20


@step(on_failure=failure_hook)
def evaluate(threshold: int) -> float:
    predictions = [len(text) > threshold for _, text in REVIEWS]
    accuracy = sum(predictions) / len(predictions)  # against "all positive", a stand-in
    ZenMLClient().active_stack.alerter.post(
        f"model trained: threshold {threshold}, offline accuracy {accuracy:.2f}",
        GatehouseAlerterParameters(type="model.evaluated", attributes={"threshold": threshold, "accuracy": accuracy}))
    return accuracy


@step(on_failure=failure_hook)
def label_sample(threshold: int) -> float:
    """People label a sample; the model is scored against them."""
    annotator = ZenMLClient().active_stack.annotator
    annotator.add_dataset(dataset_name=DATASET, labels=["pos", "neg"],
                          instructions="Is the review positive or negative?")
    with annotator.client() as gh:
        gh.add_items(DATASET, [{"id": rid, "data": {"text": text}} for rid, text in REVIEWS])
        print(f"label at {annotator.get_url_for_dataset(DATASET)}", flush=True)
        gh.wait_dataset(DATASET)  # all items, however long people take
    labelled: List[Dict] = annotator.get_labeled_data(dataset_name=DATASET)
    truth = {item["id"]: item["label"] == "pos" for item in labelled}
    right = sum((len(text) > threshold) == truth[rid] for rid, text in REVIEWS if rid in truth)
    return right / max(1, len(truth))


@step(on_failure=failure_hook, settings={"alerter": {"timeout": GATE_TIMEOUT, "on_timeout": "reject"}})
def approve(offline: float, human: float) -> bool:
    question = f"Deploy the review model? Offline accuracy {offline:.2f}, against people's labels {human:.2f}."
    return ZenMLClient().active_stack.alerter.ask(question)


@step(on_failure=failure_hook)
def deploy(approved: bool) -> str:
    if not approved:
        raise RuntimeError("deployment was not approved")
    ZenMLClient().active_stack.alerter.post("review model deployed", GatehouseAlerterParameters(type="model.deployed"))
    print("DEPLOYED", flush=True)
    return "deployed"


@pipeline(enable_cache=False)
def review_model() -> None:
    threshold = train()
    offline = evaluate(threshold)
    human = label_sample(threshold)
    deploy(approve(offline, human))


if __name__ == "__main__":
    review_model()
