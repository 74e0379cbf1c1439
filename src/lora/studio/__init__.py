"""The studio: record your own prompts, tune on them, and see what changed (issue 38; the browser app is not built
yet). Beside the stage packages, above them: it plans and saves recordings as the ``folder:`` corpus the training
job reads, and runs the job as the CLI does."""
