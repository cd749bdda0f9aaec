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
