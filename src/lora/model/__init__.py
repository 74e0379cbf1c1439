"""The model: loading, LoRA adapters, device and precision, the batched encoder, the offline import."""
