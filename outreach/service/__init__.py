"""Use cases: ingest events, plan, dispatch, record outcomes."""
