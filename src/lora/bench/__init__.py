"""python -m lora.bench (see __main__.py): our loops against what a user would otherwise run."""
