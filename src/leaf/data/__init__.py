"""Sample schema, JSONL reading and atomic writes, resumable output and the row driver
(:mod:`leaf.data.rowjob`), chat templates and character offsets."""
