"""schemathesis hooks (loaded through SCHEMATHESIS_HOOKS by run_schemathesis.py).

Long polls (`GET …/wait`) may legitimately hold a request for up to 300 s; the run pins their
`timeout` to a second, so they are still exercised (parameter parsing, the answer's schema)
without spending the time budget waiting.
"""
import schemathesis


@schemathesis.hook
def map_query(context, query):
    operation = context.operation
    if operation is not None and operation.path.endswith("/wait") and query is not None:
        query = dict(query)
        query["timeout"] = "1s"
    return query


@schemathesis.hook
def before_call(context, case, kwargs):
    # map_query does not reach every phase (examples, coverage): pin the long polls here too,
    # an empty or missing `timeout` meaning the default 60 s.
    if case.operation.path.endswith("/wait"):
        query = dict(case.query or {})
        query["timeout"] = "1s"
        case.query = query


@schemathesis.serializer("application/x-ndjson")
def ndjson(ctx, value):
    """NDJSON bodies (events, dataset items) as generated: bytes as they are, anything else as
    its text, so malformed lines reach the server too."""
    if isinstance(value, bytes):
        return value
    if isinstance(value, (list, tuple)):
        import json
        return "\n".join(json.dumps(v) for v in value).encode("utf-8", "surrogatepass")
    return str(value).encode("utf-8", "surrogatepass")
