"""moonshine-lora: fine-tune Moonshine speech-to-text with LoRA adapters and prove it helped.

One folder per stage (``data``, ``model``, ``training``, ``evaluation``, ``export``, ``runtime``, ``bench``,
``storage``), CLIs in ``runners`` and ``scripts``; README's "Layout" says what each holds. Importing this package,
or any stage's ``__init__``, is cheap: nothing there imports torch, so every CLI can answer ``--help`` instantly.
"""

__version__ = "0.1.0"
