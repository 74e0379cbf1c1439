"""The studio: record your own prompts and tune on them in the browser (``python -m lora.studio``; the review of what
changed is not built yet, issue 38). Above the stage packages: it plans and saves recordings as the ``folder:``
corpus the training job reads, and runs the job as the CLI does."""
