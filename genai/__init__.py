"""genai: distributed training and serving of generative models on Ray."""

__version__ = "0.1.0"
