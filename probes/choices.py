"""Option values the command line needs without importing torch."""

LAYOUTS = ("auto", "folder", "csv", "esc50", "speechcommands", "hear", "shards")
PRECISIONS = ("auto", "fp32", "bf16", "fp16")  # fine-tuning autocast
JOINS = ("auto", "key", "input")  # how --labels rows name precomputed embeddings
