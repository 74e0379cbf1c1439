"""moonshine-lora: fine-tune Moonshine speech-to-text with LoRA adapters and prove it helped.

Importing this package is cheap: nothing here imports torch, so every CLI can answer
``--help`` instantly. Heavy modules (modeling, train, evaluate) import torch themselves.
"""

__version__ = "0.1.0"
