"""The tone model: the company's voice (style guide, examples), LoRA training, generation."""
