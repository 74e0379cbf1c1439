"""The studio: record your own prompts, tune on them and review what changed, in the browser (``python -m
lora.studio``; "try it" and the export page are not built yet, issue 38). Above the stage packages: it plans and
saves recordings as the ``folder:`` corpus the training job reads, and runs the job as the CLI does."""
