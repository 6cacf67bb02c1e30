"""trainyard: LLM fine-tuning experiment matrices as containerized batch jobs."""

__version__ = "0.1.0"
