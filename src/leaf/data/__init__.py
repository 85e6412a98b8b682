"""Sample schema, JSONL I/O with resume, chat templates and character offsets."""
