"""The Gatehouse annotator through ZenML's own stack: `create` makes the dataset, `read` prints
what every BaseAnnotator method answers, as JSON, for the test to check."""
import json
import sys

from zenml.client import Client as ZenMLClient

annotator = ZenMLClient().active_stack.annotator

if sys.argv[1] == "create":
    created = annotator.add_dataset(dataset_name="reviews", labels=["pos", "neg"], instructions="Tone?")
    print(json.dumps({"created": created["name"]}))
else:
    print(json.dumps({
        "url": annotator.get_url(),
        "dataset_url": annotator.get_url_for_dataset("reviews"),
        "names": annotator.get_dataset_names(),
        "datasets": annotator.get_datasets(),
        "stats": list(annotator.get_dataset_stats("reviews")),
        "dataset": annotator.get_dataset(dataset_name="reviews"),
        "labeled": annotator.get_labeled_data(dataset_name="reviews"),
        "unlabeled": annotator.get_unlabeled_data(dataset_name="reviews"),
        "launched": annotator.launch(dataset_name="reviews"),
    }))
    annotator.delete_dataset(dataset_name="reviews")
    print(json.dumps({"after_delete": annotator.get_dataset_names()}))
