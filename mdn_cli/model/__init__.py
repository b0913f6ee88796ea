"""The network of a spec: building it (MDN placed by name), fine-tuning, the checkpoint format, the rows a loaded run scores, and what a task's output means."""
